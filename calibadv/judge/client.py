"""Client of an OpenAI-compatible chat-completions endpoint that turns prompts into verdicts.

Works with any server speaking the chat-completions API through the official ``openai`` SDK:
DeepSeek's API, vLLM's OpenAI server, ``transformers serve``. What it adds to the SDK:

* **bounded concurrency** (``asyncio.Semaphore``; at most ``concurrency`` requests in flight),
* **its own retry policy** (the SDK's is switched off so the policy is exactly this one):
  429 waits for ``Retry-After`` (else exponential backoff), 5xx, timeouts, dropped connections
  and malformed bodies back off and retry; any other 4xx is not retried — 401/403/404 abort
  the whole batch (the endpoint, model or key is wrong, every request would fail), other 4xx
  fail only that prompt,
* **the strict verdict** (:func:`calibadv.judge.prompt.parse_verdict`) with one re-ask, then a
  recorded ``unparsable`` — never a silent default,
* **the cache** (:class:`calibadv.judge.cache.VerdictCache`) and **accounting** of requests,
  retries, tokens and cost.

The API key is read from the environment variable named by ``api_key_env``; it never appears
in a config, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from calibadv.errors import CalibAdvError, ConfigError
from calibadv.judge.cache import CachedVerdict, VerdictCache, cache_key
from calibadv.judge.prompt import TEMPLATE_VERSION, parse_verdict, reask

log = logging.getLogger(__name__)

#: Placeholder key for local servers that ignore it (the SDK refuses an empty one).
NO_KEY = "EMPTY"


@dataclass(frozen=True)
class JudgeSettings:
    """How to reach the judge and how hard to try (the config's ``judge`` keys)."""

    base_url: str
    model: str
    api_key_env: str | None = None  # name of the environment variable holding the key
    temperature: float = 0.0
    max_tokens: int = 32
    concurrency: int = 8
    max_retries: int = 6
    timeout_s: float = 120.0
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 600.0
    price_input_per_mtok: float = 0.0  # USD per million prompt tokens
    price_output_per_mtok: float = 0.0  # USD per million completion tokens
    logit_bias: dict[str, float] | None = None  # verdict tokens: answer with one of them

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ConfigError("judge.base_url: give the endpoint URL (e.g. https://api.deepseek.com/v1)")
        if not self.model:
            raise ConfigError("judge.model: give the model name the endpoint serves")
        if self.concurrency < 1:
            raise ConfigError(f"judge.concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ConfigError(f"judge.max_retries must be >= 0, got {self.max_retries}")
        if self.temperature != 0.0:
            log.warning("judge.temperature = %s: verdicts are not deterministic, and the cache "
                        "serves the first answer to every rerun", self.temperature)

    def api_key(self) -> str:
        if not self.api_key_env:
            return NO_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"judge.api_key_env names the environment variable {self.api_key_env!r}, which "
                "is not set: export it (the key itself never goes into the config)"
            )
        return key

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgeSettings:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown judge setting(s) {unknown}; allowed: {sorted(known)}")
        return cls(**data)


@dataclass
class Verdict:
    """The outcome for one prompt."""

    key: str
    verdict: float | None
    status: str  # ok | unparsable | failed
    answers: list[str] = field(default_factory=list)
    cached: bool = False
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Accounting:
    """What a batch of prompts cost (tokens only count calls that reached the server)."""

    prompts: int = 0
    duplicates: int = 0  # prompts identical to an earlier one of the batch: asked once
    cache_hits: int = 0
    requests: int = 0  # HTTP requests sent, retries and re-asks included
    retries: int = 0
    reasks: int = 0
    ok: int = 0
    unparsable: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0

    def add(self, other: Accounting) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JudgeAbort(CalibAdvError):
    """The endpoint refused in a way no retry can fix (bad key, unknown model or URL)."""


class _RequestFailed(Exception):
    """One prompt could not be answered (after the retries its error allows)."""


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class JudgeClient:
    """Judge prompts through one endpoint, with the cache; :meth:`judge` is the entry point."""

    def __init__(self, settings: JudgeSettings, cache: VerdictCache | None = None,
                 template_version: str = TEMPLATE_VERSION) -> None:
        self.settings = settings
        self.cache = cache
        self.template_version = template_version
        self.totals = Accounting()
        self._api_key = settings.api_key()  # fail early, before any request

    # -- public -------------------------------------------------------------------------
    def judge(self, prompts: Sequence[Sequence[dict[str, str]]],
              progress: Callable[[int], None] | None = None) -> tuple[list[Verdict], Accounting]:
        """Verdicts for ``prompts`` (lists of chat messages), in order, and what they cost.

        Runs its own event loop (in a helper thread when the caller already runs one).
        """
        coro_fn = lambda: self.judge_async(prompts, progress)  # noqa: E731
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro_fn())
        result: list[Any] = []

        def runner() -> None:
            try:
                result.append(asyncio.run(coro_fn()))
            except BaseException as err:  # re-raised in the caller's thread
                result.append(err)

        thread = threading.Thread(target=runner, name="judge-client")
        thread.start()
        thread.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    async def judge_async(self, prompts: Sequence[Sequence[dict[str, str]]],
                          progress: Callable[[int], None] | None = None
                          ) -> tuple[list[Verdict], Accounting]:
        import openai

        acct = Accounting(prompts=len(prompts))
        t0 = time.monotonic()
        sem = asyncio.Semaphore(self.settings.concurrency)
        client = openai.AsyncOpenAI(
            base_url=self.settings.base_url, api_key=self._api_key,
            timeout=self.settings.timeout_s, max_retries=0,
        )
        # identical prompts of one batch (G rollouts that took the same step) are asked once
        keys = [cache_key(self.settings.model, self.template_version, list(p)) for p in prompts]
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        acct.duplicates = len(prompts) - len(first)
        copies = {key: keys.count(key) for key in first} if acct.duplicates else {}
        try:
            async def one(key: str, messages: Sequence[dict[str, str]]) -> Verdict:
                verdict = await self._judge_one(client, sem, key, list(messages), acct)
                if progress is not None:
                    progress(copies.get(key, 1))
                return verdict

            tasks = [asyncio.ensure_future(one(k, prompts[i])) for k, i in first.items()]
            try:
                unique = dict(zip(first, await asyncio.gather(*tasks), strict=True))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            await client.close()
        verdicts = [unique[key] for key in keys]
        acct.wall_s = time.monotonic() - t0
        acct.cost_usd = (acct.prompt_tokens * self.settings.price_input_per_mtok
                         + acct.completion_tokens * self.settings.price_output_per_mtok) / 1e6
        self.totals.add(acct)
        return verdicts, acct

    # -- one prompt ---------------------------------------------------------------------
    async def _judge_one(self, client: Any, sem: asyncio.Semaphore, key: str,
                         messages: list[dict[str, str]], acct: Accounting) -> Verdict:
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                acct.cache_hits += 1
                setattr(acct, hit.status, getattr(acct, hit.status) + 1)
                return Verdict(key, hit.verdict, hit.status, hit.answers, cached=True)
        t0 = time.monotonic()
        answers: list[str] = []
        ptok = ctok = 0
        try:
            conversation = messages
            for attempt in range(2):  # the question, then one re-ask
                text, p, c = await self._request(client, sem, conversation, acct)
                answers.append(text)
                ptok, ctok = ptok + p, ctok + c
                value = parse_verdict(text)
                if value is not None:
                    status = "ok"
                    break
                if attempt == 0:
                    acct.reasks += 1
                    conversation = reask(messages, text)
            else:
                status, value = "unparsable", None
        except _RequestFailed as err:
            acct.failed += 1
            return Verdict(key, None, "failed", answers, error=str(err), prompt_tokens=ptok,
                           completion_tokens=ctok, seconds=time.monotonic() - t0)
        setattr(acct, status, getattr(acct, status) + 1)
        if self.cache is not None:
            self.cache.put(key, self.settings.model, self.template_version, messages,
                           CachedVerdict(value, status, answers, ptok, ctok))
        return Verdict(key, value, status, answers, prompt_tokens=ptok, completion_tokens=ctok,
                       seconds=time.monotonic() - t0)

    async def _request(self, client: Any, sem: asyncio.Semaphore,
                       messages: list[dict[str, str]], acct: Accounting) -> tuple[str, int, int]:
        """One chat completion with the retry policy; (text, prompt tokens, completion tokens)."""
        import openai

        s = self.settings
        last = "no attempt"
        for attempt in range(s.max_retries + 1):
            wait: float | None = None
            try:
                async with sem:
                    acct.requests += 1
                    extra: dict[str, Any] = (
                        {"logit_bias": s.logit_bias, "max_tokens": 1} if s.logit_bias
                        else {"max_tokens": s.max_tokens})
                    resp = await client.chat.completions.create(
                        model=s.model, messages=messages, temperature=s.temperature, **extra)
                text = resp.choices[0].message.content
                if not isinstance(text, str):
                    raise ValueError("the response has no message content")
                usage = getattr(resp, "usage", None)
                p = int(getattr(usage, "prompt_tokens", 0) or 0)
                c = int(getattr(usage, "completion_tokens", 0) or 0)
                acct.prompt_tokens += p
                acct.completion_tokens += c
                return text, p, c
            except openai.RateLimitError as err:
                last = f"429 rate limited: {_short(err)}"
                wait = retry_after_seconds(getattr(err.response, "headers", None))
                if wait is not None:
                    wait = min(wait, s.retry_after_max_s)
            except openai.APIStatusError as err:
                code = err.status_code
                if code < 500:
                    if code in (401, 403, 404):
                        raise JudgeAbort(
                            f"the judge endpoint {s.base_url} answered {code} for model "
                            f"{s.model!r}: check judge.base_url, judge.model and the key in "
                            f"${s.api_key_env or '(judge.api_key_env unset)'} ({_short(err)})"
                        ) from None
                    raise _RequestFailed(f"{code} (not retried): {_short(err)}") from None
                last = f"{code} server error: {_short(err)}"
            except openai.APITimeoutError:
                last = f"timed out after {s.timeout_s:g} s"
                _stop_if_server_died(s.base_url)
            except openai.APIConnectionError as err:
                last = f"connection error: {_short(err)}"
                _stop_if_server_died(s.base_url)
            except (openai.APIResponseValidationError, ValueError, TypeError, AttributeError,
                    IndexError, KeyError) as err:
                last = f"malformed response: {type(err).__name__}: {_short(err)}"
            if attempt == s.max_retries:
                break
            acct.retries += 1
            if wait is None:
                wait = min(s.backoff_max_s, s.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            log.info("judge request failed (%s); retry %d/%d in %.1f s", last, attempt + 1,
                     s.max_retries, wait)
            await asyncio.sleep(wait)
        raise _RequestFailed(f"gave up after {s.max_retries + 1} attempts; last: {last}")


def _stop_if_server_died(base_url: str) -> None:
    """Raise :class:`JudgeAbort` naming the log when the local server behind ``base_url`` has
    exited: no retry can reach a dead process, and each would wait out its backoff."""
    from calibadv.judge.server import dead_server

    message = dead_server(base_url)
    if message is not None:
        raise JudgeAbort(message)


def _short(err: BaseException, limit: int = 200) -> str:
    text = str(err).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"
