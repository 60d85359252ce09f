"""The judge client against a real ``transformers serve`` (through a fault-injecting proxy).

The served model is a bigram machine (tests/judge/bigram_model.py): the first word of the
question picks its reply, e.g. "yes" → "VERDICT: 1", "junk" → "maybe" (unparsable).
"""

from __future__ import annotations

import pytest

from calibadv.errors import ConfigError
from calibadv.judge import client as client_mod
from calibadv.judge.cache import VerdictCache
from calibadv.judge.client import JudgeAbort, JudgeClient, JudgeSettings, retry_after_seconds
from calibadv.judge.prompt import StepView, render


def ask(word: str, think: str = "think") -> list[dict[str, str]]:
    return render(StepView(f"{word} who founded Keth?", ["Ann"], think, "Keth founder",
                           "Doc 1(Title: Keth) Keth was founded by Ann."))


def make(proxy, judge_server, cache=None, **kw) -> JudgeClient:
    settings = {"base_url": proxy.url, "model": judge_server[1], "max_retries": 3,
                "backoff_s": 0.01, "timeout_s": 30.0, **kw}
    return JudgeClient(JudgeSettings(**settings), cache)


@pytest.fixture
def sleeps(monkeypatch):
    """Record the client's back-off waits instead of sleeping them."""
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(client_mod.asyncio, "sleep", fake_sleep)
    return waited


def test_verdicts_come_back_in_order_with_tokens_counted(proxy, judge_server):
    verdicts, acct = make(proxy, judge_server).judge([ask("yes"), ask("half"), ask("no")])
    assert [(v.verdict, v.status) for v in verdicts] == [(1.0, "ok"), (0.5, "ok"), (0.0, "ok")]
    assert acct.requests == 3 and acct.ok == 3 and acct.retries == 0
    assert acct.prompt_tokens > 0 and acct.completion_tokens == 3 * 2  # "VERDICT: x" + </s>
    body = proxy.bodies[0]
    assert body["temperature"] == 0 and body["model"] == judge_server[1]


def test_cost_is_tokens_times_the_configured_prices(proxy, judge_server):
    _, acct = make(proxy, judge_server, price_input_per_mtok=2.0,
                   price_output_per_mtok=10.0).judge([ask("yes")])
    assert acct.cost_usd == pytest.approx((acct.prompt_tokens * 2 + acct.completion_tokens * 10) / 1e6)


def test_an_unparsable_answer_is_asked_once_more_then_recorded(proxy, judge_server):
    verdicts, acct = make(proxy, judge_server).judge([ask("flaky"), ask("junk")])
    flaky, junk = verdicts
    assert flaky.status == "ok" and flaky.verdict == 0.5 and flaky.answers == ["perhaps", "VERDICT: 0.5"]
    assert junk.status == "unparsable" and junk.verdict is None and junk.answers == ["maybe", "maybe"]
    assert acct.reasks == 2 and acct.requests == 4 and acct.unparsable == 1
    reask = proxy.bodies[-1]["messages"]
    assert [m["role"] for m in reask] == ["system", "user", "assistant", "user"]


def test_the_cache_makes_a_rerun_cost_zero_requests(proxy, judge_server, tmp_path):
    prompts = [ask("yes"), ask("junk"), ask("no")]
    with VerdictCache(tmp_path / "cache.sqlite") as cache:
        first, acct1 = make(proxy, judge_server, cache).judge(prompts)
    sent = proxy.chat_requests
    assert sent == 4 and acct1.cache_hits == 0  # junk was re-asked
    with VerdictCache(tmp_path / "cache.sqlite") as cache:  # a new job, same file
        again, acct2 = make(proxy, judge_server, cache).judge(prompts)
    assert proxy.chat_requests == sent and acct2.requests == 0 and acct2.cache_hits == 3
    assert [(v.verdict, v.status) for v in again] == [(v.verdict, v.status) for v in first]
    assert all(v.cached for v in again) and acct2.unparsable == 1


def test_the_cache_key_includes_model_and_template_version(proxy, judge_server, tmp_path):
    with VerdictCache(tmp_path / "c.sqlite") as cache:
        make(proxy, judge_server, cache).judge([ask("yes")])
        JudgeClient(make(proxy, judge_server).settings, cache,
                    template_version="other-version").judge([ask("yes")])
    assert proxy.chat_requests == 2


def test_concurrency_never_exceeds_the_bound(proxy, judge_server):
    proxy.hold_s = 0.3
    verdicts, _ = make(proxy, judge_server, concurrency=2).judge(
        [ask("yes", f"think {i}") for i in range(6)])
    assert all(v.verdict == 1.0 for v in verdicts)
    assert proxy.max_in_flight == 2 and proxy.chat_requests == 6


def test_identical_prompts_of_a_batch_are_asked_once(proxy, judge_server):
    seen = []
    verdicts, acct = make(proxy, judge_server).judge([ask("yes"), ask("no"), ask("yes")],
                                                     progress=seen.append)
    assert [v.verdict for v in verdicts] == [1.0, 0.0, 1.0]
    assert proxy.chat_requests == 2 and acct.duplicates == 1 and sum(seen) == 3


def test_429_waits_for_retry_after_then_succeeds(proxy, judge_server, sleeps):
    proxy.faults = [("status", 429, {"Retry-After": "7"})]
    (v,), acct = make(proxy, judge_server).judge([ask("yes")])
    assert v.verdict == 1.0 and acct.retries == 1 and proxy.chat_requests == 2
    assert sleeps == [7.0]


@pytest.mark.parametrize("fault", [("status", 500), ("status", 503), ("drop",), ("malformed",)],
                         ids=["500", "503", "dropped-connection", "malformed-body"])
def test_server_errors_and_broken_responses_are_retried(proxy, judge_server, sleeps, fault):
    proxy.faults = [fault, fault]
    (v,), acct = make(proxy, judge_server).judge([ask("half")])
    assert v.verdict == 0.5 and v.status == "ok"
    assert acct.retries == 2 and proxy.chat_requests == 3 and len(sleeps) == 2
    # exponential back-off from backoff_s = 0.01, jittered into [50 %, 100 %] of each step
    assert 0.005 <= sleeps[0] <= 0.01 and 0.01 <= sleeps[1] <= 0.02


def test_a_timeout_is_retried(proxy, judge_server, sleeps):
    proxy.faults = [("delay", 3.0)]
    (v,), acct = make(proxy, judge_server, timeout_s=1.0).judge([ask("no")])
    assert v.verdict == 0.0 and acct.retries == 1


def test_other_4xx_fail_only_that_prompt_without_retry(proxy, judge_server, sleeps):
    proxy.faults = [("status", 400)]
    verdicts, acct = make(proxy, judge_server, concurrency=1).judge([ask("yes"), ask("no")])
    bad, good = verdicts
    assert bad.status == "failed" and bad.verdict is None and "400" in bad.error
    assert good.status == "ok" and good.verdict == 0.0
    assert sleeps == [] and proxy.chat_requests == 2 and acct.failed == 1


def test_a_failed_prompt_is_not_cached_so_a_rerun_asks_again(proxy, judge_server, tmp_path, sleeps):
    proxy.faults = [("status", 500)] * 4
    with VerdictCache(tmp_path / "c.sqlite") as cache:
        (v,), acct = make(proxy, judge_server, cache).judge([ask("yes")])
        assert v.status == "failed" and "gave up after 4 attempts" in v.error and acct.retries == 3
        (v,), _ = make(proxy, judge_server, cache).judge([ask("yes")])
    assert v.status == "ok" and proxy.chat_requests == 5


def test_401_aborts_naming_the_key_variable_but_never_the_key(proxy, judge_server, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-secret-123")
    proxy.faults = [("status", 401)]
    with pytest.raises(JudgeAbort) as err:
        make(proxy, judge_server, api_key_env="JUDGE_TEST_KEY").judge([ask("yes")])
    assert "JUDGE_TEST_KEY" in str(err.value) and "sk-secret" not in str(err.value)
    assert proxy.chat_requests == 1


def test_a_missing_key_variable_is_a_config_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_JUDGE_KEY"):
        JudgeClient(JudgeSettings(base_url="http://127.0.0.1:1/v1", model="m",
                                  api_key_env="NO_SUCH_JUDGE_KEY"))


def test_retry_after_reads_seconds_milliseconds_and_http_dates():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"},
                               now=1445412480.0) == pytest.approx(10.0)
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_verdict_tokens_make_a_rambling_model_answer_with_a_verdict(proxy, judge_server, judge_model):
    """The stand-in's fix: ``judge.verdict_tokens`` biases the one answer token onto the
    vocabulary's verdict tokens (logit_bias, max_tokens 1), so "junk" — which answers "maybe"
    when asked freely, and again after the re-ask — gets a verdict from the real server."""
    from calibadv.judge.config import JudgeConfig, open_client
    from calibadv.judge.prompt import StepView, render
    from calibadv.judge.standin import VERDICT_BIAS, verdict_logit_bias

    from bigram_model import build_bigram_judge  # noqa: F401  (the served model's vocabulary)

    bias = verdict_logit_bias(judge_model)
    assert len(bias) == 3 and set(bias.values()) == {VERDICT_BIAS}  # "VERDICT: 1/0.5/0" tokens
    cfg = JudgeConfig(base_url=proxy.url, model=judge_server[1], model_path=str(judge_model),
                      verdict_tokens=True)
    client = open_client(cfg, proxy.url, judge_server[1])
    prompts = [render(StepView(f"{w} who founded Keth?", ["g"], "", "Keth", "")) for w in ("junk", "half")]
    found, acct = client.judge(prompts)
    assert [v.status for v in found] == ["ok", "ok"], [v.error for v in found]
    assert found[1].verdict == 0.5
    assert acct.reasks == 0 and proxy.chat_requests == 2
    assert proxy.bodies[0]["max_tokens"] == 1 and proxy.bodies[0]["logit_bias"] == bias
    assert client.template_version.endswith("+verdict-tokens")  # cached apart from free answers
