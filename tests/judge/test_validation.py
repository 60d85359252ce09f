"""Proxy validation end to end: `calibadv judge validate` against the real server, the human
sheet round trip, and the summary numbers by hand."""

from __future__ import annotations

import csv
import json

import pytest
from dumps import rollout, write_dumps

from calibadv.cli import main
from calibadv.errors import CalibAdvError
from calibadv.io import read_jsonl
from calibadv.judge.client import Verdict
from calibadv.judge.sheets import read_labels, write_sheet
from calibadv.judge.steps import sample_cases
from calibadv.judge.validate import summarise


def _dumps():
    # the question's first word makes the test judge answer: yes → 1, no → 0, junk → unparsable
    gold = ["g1", "g2"]
    return {
        10: [rollout("yes who founded Keth?", [("Keth", ["g1"], 1.0), ("x", ["z"], 0.0)], gold=gold, qid="a"),
             rollout("no who founded Keth?", [("Keth", ["z"], 1.0)], gold=gold, qid="b")],
        50: [rollout("junk who founded Keth?", [("Keth", ["g2"], 1.0)], gold=gold, qid="c"),
             rollout("yes who founded Keth?", [("Keth", ["y"], 1.0), ("more", ["g2"], 1.0)], gold=gold, qid="d")],
    }


def test_validate_writes_sheets_verdicts_and_summary_and_reruns_for_free(tmp_path, proxy, judge_server):
    rollouts = write_dumps(tmp_path / "rollouts", _dumps())
    judge = {"server": "external", "base_url": proxy.url, "model": judge_server[1],
             "label": "bigram test judge", "stand_in": True, "cache": str(tmp_path / "cache.sqlite")}
    args = ["judge", "validate", "--rollouts", str(rollouts), "--out-dir", str(tmp_path / "out"),
            "--judge-json", json.dumps(judge), "--per-checkpoint", "2", "--seed", "0"]
    assert main(args) == 0
    out = tmp_path / "out"
    rows = read_jsonl(out / "verdicts.jsonl")
    assert len(rows) == 4
    by_q = {r["question"].split()[0] + f"@{r['step']}-{r['turn']}": r for r in rows}
    assert by_q["yes@10-0"]["verdict"] == 1.0 and by_q["no@10-0"]["verdict"] == 0.0
    assert by_q["junk@50-0"]["status"] == "unparsable"
    s = json.loads((out / "summary.json").read_text())
    assert s["stand_in"] is True and s["judge_label"] == "bigram test judge"
    step10, step50 = s["per_step"]["10"], s["per_step"]["50"]
    assert step10["llm_helpful"] == 0.5 and step10["gold_hit"] == 0.5
    assert step10["llm_agree_advanced"] == 1.0  # yes↔g1 new, no↔no gold
    assert step50["n"] == 2 and step50["llm_judged"] == 1 and step50["llm_unparsable"] == 1
    # 3 verdicts + junk asked twice
    assert proxy.chat_requests == 5
    sheet = list(csv.DictReader(open(out / "sheet.csv", encoding="utf-8")))
    assert [r["case_id"] for r in sheet] == [r["case_id"] for r in rows]
    assert all(r["label"] == "" for r in sheet)
    page = (out / "sheet.html").read_text()
    assert "Doc 1(Title: g1) text of g1" in page and "yes who founded Keth?" in page

    # a rerun costs no request
    assert main(args) == 0
    assert proxy.chat_requests == 5
    acct = json.loads((out / "accounting.json").read_text())
    assert acct["requests"] == 0 and acct["cache_hits"] == 4

    # the annotator fills the sheet; merging it adds the human row
    for r in sheet:
        r["label"] = "1" if r["question"].startswith("yes") else "0"
    with open(tmp_path / "filled.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(sheet[0]))
        w.writeheader()
        w.writerows(sheet)
    assert main(args + ["--human-labels", str(tmp_path / "filled.csv")]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["overall"]["human_labelled"] == 4 and s["overall"]["human_helpful"] == 0.5
    assert [r["human"] for r in read_jsonl(out / "verdicts.jsonl")] == \
        [1.0 if r["question"].startswith("yes") else 0.0 for r in rows]
    assert proxy.chat_requests == 5


def test_a_bad_label_names_the_line_and_value(tmp_path):
    cases = sample_cases(_dumps(), 2, 0)
    write_sheet(cases, tmp_path / "s.csv", tmp_path / "s.html", "t")
    text = (tmp_path / "s.csv").read_text().splitlines()
    lines = list(csv.reader(text))
    lines[2][7] = "yes"
    with open(tmp_path / "s.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(lines)
    with pytest.raises(CalibAdvError, match=r"line 3 .*'yes' is not 1, 0.5 or 0"):
        read_labels(tmp_path / "s.csv", cases)


def _fill(path, label="1"):
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    for r in rows:
        r["label"] = label
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def test_labels_merge_by_case_id_and_a_file_of_another_sample_is_refused(tmp_path):
    cases = sample_cases(_dumps(), 2, 0)
    write_sheet(cases, tmp_path / "s.csv", tmp_path / "s.html", "t")
    _fill(tmp_path / "s.csv")
    # a smaller sample: its one case is merged, the other labels are counted, not used
    assert read_labels(tmp_path / "s.csv", cases[:1]) == ({cases[0].case_id: 1.0}, 3)
    assert read_labels(tmp_path / "s.csv", cases[::-1]) == ({c.case_id: 1.0 for c in cases}, 0)
    with pytest.raises(CalibAdvError, match="not in this run's sample"):
        read_labels(tmp_path / "s.csv", [])


def test_a_filled_sheet_is_byte_identical_after_a_rerun(tmp_path, proxy, judge_server):
    """Defect 1: the annotator filled the sheet in the output folder; a rerun writes the new
    blank sheet beside it and leaves every byte of the filled one."""
    rollouts = write_dumps(tmp_path / "rollouts", _dumps())
    judge = {"server": "external", "base_url": proxy.url, "model": judge_server[1],
             "cache": str(tmp_path / "cache.sqlite")}
    out = tmp_path / "out"
    args = ["judge", "validate", "--rollouts", str(rollouts), "--out-dir", str(out),
            "--judge-json", json.dumps(judge), "--per-checkpoint", "2"]
    assert main(args) == 0
    _fill(out / "sheet.csv")
    filled = (out / "sheet.csv").read_bytes()
    assert main(args) == 0
    assert (out / "sheet.csv").read_bytes() == filled
    assert all(r["label"] == "" for r in csv.DictReader(open(out / "sheet.new.csv", encoding="utf-8")))
    # pointing --human-labels at it is refused: a rerun under Snakemake would delete it
    assert main(args + ["--human-labels", str(out / "sheet.csv")]) == 2
    assert (out / "sheet.csv").read_bytes() == filled


def test_labels_inside_the_output_folder_are_refused_naming_them(tmp_path):
    from calibadv.commands.judge import _labels_outside
    from calibadv.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--human-labels .*sheet.csv lies inside the output folder"):
        _labels_outside(str(tmp_path / "out" / "sheet.csv"), str(tmp_path / "out"))
    _labels_outside(str(tmp_path / "labels" / "seed_0.csv"), str(tmp_path / "out"))


def test_an_unreachable_endpoint_exits_non_zero_and_writes_no_summary(tmp_path):
    from calibadv.judge.server import free_port

    rollouts = write_dumps(tmp_path / "rollouts", _dumps())
    judge = {"server": "external", "base_url": f"http://127.0.0.1:{free_port()}/v1",
             "model": "m", "max_retries": 0, "cache": str(tmp_path / "cache.sqlite")}
    out = tmp_path / "out"
    assert main(["judge", "validate", "--rollouts", str(rollouts), "--out-dir", str(out),
                 "--judge-json", json.dumps(judge), "--per-checkpoint", "2"]) == 1
    assert not (out / "summary.json").exists()
    assert [r["status"] for r in read_jsonl(out / "verdicts.jsonl")] == ["failed"] * 4


def test_a_failed_verdict_fails_the_job_and_the_rerun_asks_only_for_it(tmp_path, proxy, judge_server):
    rollouts = write_dumps(tmp_path / "rollouts", _dumps())
    judge = {"server": "external", "base_url": proxy.url, "model": judge_server[1],
             "max_retries": 0, "concurrency": 1, "cache": str(tmp_path / "cache.sqlite")}
    args = ["judge", "validate", "--rollouts", str(rollouts), "--out-dir", str(tmp_path / "out"),
            "--judge-json", json.dumps(judge), "--per-checkpoint", "2"]
    proxy.faults = [("status", 500)]
    assert main(args) == 1
    first = proxy.chat_requests  # 4 prompts, one re-ask of "junk", one 500
    assert main(args) == 0
    assert proxy.chat_requests - first in (1, 2)  # the failed prompt (and its re-ask) only
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["overall"]["llm_failed"] == 0


def test_a_dead_local_server_stops_the_judge_at_once_naming_its_log(tmp_path, judge_model):
    from calibadv.judge.client import JudgeAbort, JudgeClient, JudgeSettings
    from calibadv.judge.server import _RUNNING, LocalServer, serve_judge

    log = tmp_path / "server.log"
    server = LocalServer("transformers", str(judge_model), threads=1)
    with serve_judge(server, log) as url:
        _RUNNING[url][0].kill()
        _RUNNING[url][0].wait()
        client = JudgeClient(JudgeSettings(base_url=url, model=server.request_model,
                                           max_retries=6, backoff_s=30.0))
        with pytest.raises(JudgeAbort, match=f"died .*its log {log}"):
            client.judge([[{"role": "user", "content": "Question: yes q"}]])


def test_summary_by_hand():
    cases = sample_cases(_dumps(), 2, 0)
    ids = [c.case_id for c in cases]  # s10: yes(g1), no(z); s50: junk(g2), yes(y | g2)
    v = {ids[0]: Verdict("k", 1.0, "ok"), ids[1]: Verdict("k", 0.5, "ok"),
         ids[2]: Verdict("k", None, "failed"), ids[3]: Verdict("k", 0.0, "ok")}
    s = summarise(cases, v, {ids[0]: 1.0, ids[1]: 1.0}, helpful_min=0.5)
    o = s["overall"]
    assert o["llm_judged"] == 3 and o["llm_failed"] == 1 and o["llm_helpful"] == 2 / 3
    assert o["llm_verdicts"] == {"1": 1, "0.5": 1, "0": 1}
    assert o["human_helpful"] == 1.0 and o["human_labelled"] == 2
    gold_adv = [c.gold["advanced"] for c in cases]
    assert o["gold_advanced"] == sum(gold_adv) / 4 == o["proxy_agree_advanced"]
    agree = [(v[i].verdict >= 0.5) == c.gold["advanced"] for i, c in zip(ids, cases) if v[i].status == "ok"]
    assert o["llm_agree_advanced"] == sum(agree) / 3
    assert summarise(cases, v, {}, helpful_min=1.0)["overall"]["llm_helpful"] == 1 / 3


def test_proxy_agreement_counts_only_scored_steps_of_a_searched_sample():
    gold = ["g1"]
    rows = [rollout("yes q", [("a", ["g1"], None), ("b", ["z"], 0.0), ("c", ["g1"], 1.0)],
                    gold=gold, qid="a")]
    cases = sample_cases({1: rows}, 5, 0, pool="searched")  # advanced: True, False, False
    o = summarise(cases, {}, min_c=1.0)["overall"]
    # scored: step b (c = 0, not advanced: agree), step c (c = 1, not advanced: disagree)
    assert o["proxy_scored"] == 2 and o["proxy_agree_advanced"] == 0.5
    assert o["gold_advanced"] == 1 / 3
