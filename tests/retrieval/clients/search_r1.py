"""Search-R1's retrieval client, reproduced for tests: what its trainer sends and how it reads
the answer, step for step.

Source: PeterGriffinJin/Search-R1 (commit a14dc3a4ffc6fe88c1e95038d9738e21ba3f7a06),
``search_r1/llm_agent/generation.py``, ``LLMGenerationManager.execute_predictions``,
``postprocess_predictions``, ``batch_search``, ``_batch_search`` and ``_passages2string``
(``infer.py``'s ``search`` sends the same payload for one query). The original methods live on a
class that needs torch, verl's ``DataProto`` and a tokenizer; only the parts that touch the
retrieval server are kept, with the same behaviour:

- every turn, the queries of all active rollouts whose action is ``search`` go out in ONE
  ``requests.post(search_url, json={"queries": [...], "topk": k, "return_scores": True})`` —
  also when no rollout searched (``"queries": []``) — and the answer is read as
  ``.json()["result"]`` without looking at the status code (a 4xx/5xx body has no ``"result"``
  and the trainer dies on a ``KeyError``);
- the query is the stripped text between ``<search>`` and ``</search>``, so an empty search is
  the empty string;
- the trainer asserts one result list per query and formats ``document.contents`` as
  ``Doc i(Title: <first line>) <rest>``.
"""

from __future__ import annotations

import re
from typing import Any

import requests

ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)


def postprocess_predictions(predictions: list[str]) -> tuple[list[str | None], list[str]]:
    """(action, content) per prediction: the first ``<search>``/``<answer>`` block, stripped."""
    actions: list[str | None] = []
    contents: list[str] = []
    for prediction in predictions:
        if not isinstance(prediction, str):
            raise ValueError(f"Invalid prediction type: {type(prediction)}")
        match = ACTION.search(prediction)
        actions.append(match.group(1) if match else None)
        contents.append(match.group(2).strip() if match else "")
    return actions, contents


def passages_to_string(retrieval_result: list[dict[str, Any]]) -> str:
    out = ""
    for idx, item in enumerate(retrieval_result):
        content = item["document"]["contents"]
        title = content.split("\n")[0]
        text = "\n".join(content.split("\n")[1:])
        out += f"Doc {idx + 1}(Title: {title}) {text}\n"
    return out


def raw_batch_search(search_url: str, queries: list[str], topk: int = 3) -> dict[str, Any]:
    payload = {"queries": queries, "topk": topk, "return_scores": True}
    return requests.post(search_url, json=payload).json()


def batch_search(search_url: str, queries: list[str], topk: int = 3) -> list[str]:
    results = raw_batch_search(search_url, queries, topk)["result"]
    return [passages_to_string(r) for r in results]


def execute_predictions(
    search_url: str, predictions: list[str], active_mask: list[bool], topk: int = 3
) -> tuple[list[str], list[int], list[int], list[int]]:
    """One environment step of a turn: (next_obs, dones, valid_action, is_search)."""
    actions, contents = postprocess_predictions(predictions)
    queries = [c for a, c in zip(actions, contents) if a == "search"]
    results = batch_search(search_url, queries, topk)
    assert len(results) == sum(1 for a in actions if a == "search")
    next_obs, dones, valid, is_search = [], [], [], []
    for action, active in zip(actions, active_mask):
        if not active:
            next_obs.append("")
            dones.append(1)
            valid.append(0)
            is_search.append(0)
        elif action == "answer":
            next_obs.append("")
            dones.append(1)
            valid.append(1)
            is_search.append(0)
        elif action == "search":
            next_obs.append(f"\n\n<information>{results.pop(0).strip()}</information>\n\n")
            dones.append(0)
            valid.append(1)
            is_search.append(1)
        else:
            next_obs.append(
                "\nMy previous action is invalid. If I want to search, I should put the query "
                "between <search> and </search>. If I want to give the final answer, I should "
                "put the answer between <answer> and </answer>. Let me try again.\n"
            )
            dones.append(0)
            valid.append(0)
            is_search.append(0)
    assert len(results) == 0
    return next_obs, dones, valid, is_search
