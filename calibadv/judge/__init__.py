"""The LLM judge (docs/judge.md): scores intermediate search steps 1 / 0.5 / 0.

* :mod:`calibadv.judge.prompt` — the versioned prompt template and the strict verdict parser
* :mod:`calibadv.judge.client` — async client of any OpenAI-compatible endpoint (retries,
  concurrency bound, accounting) with :mod:`calibadv.judge.cache` (SQLite)
* :mod:`calibadv.judge.server` — a local server for the job (``transformers serve`` / vLLM)
* :mod:`calibadv.judge.config` — the ``judge`` section and endpoints (the workflow fills it:
  :mod:`calibadv.workflow.judge`)
* :mod:`calibadv.judge.steps`, :mod:`~calibadv.judge.sheets`, :mod:`~calibadv.judge.validate`
  — proxy validation (paper Table 5) with human annotation sheets
* :mod:`calibadv.train.judge_scoring` — ``calibration.score: judge`` for both training backends
* :mod:`calibadv.judge.standin` — the embedded default's stand-in model (SmolLM2-135M)
"""
