"""Where every file of the workflow lives, and which rule writes it.

One :class:`Layout` gives the Snakefile its rule outputs and the RunSpecs their paths, so a
job and the rule that feeds it always agree on a file name. :func:`producing_rule` maps a path
back to its rule, so a job missing an input can say what to run.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibadv.offline import hub_dir_name

#: The repository checkout: config paths that are neither absolute nor found from the working
#: directory are taken relative to it (``config/methods.yaml``, ``config/paper_results.yaml``).
REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_path(path: str | Path) -> Path:
    """``path`` as given when it is absolute or exists, else relative to :data:`REPO_ROOT`."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


@dataclass(frozen=True)
class Layout:
    """Where every file of the workflow lives (relative to the working directory).

    Two trees: ``resources`` (``resources_dir``) holds what is downloaded — the wiki-18 corpus,
    the prebuilt index, the QA splits, hub models — and ``root`` (``results_dir/world``) what
    the workflow computes, the synthetic world and the tiny model included. Deleting results
    never throws away a download, and one resources tree serves many results trees.
    """

    root: str
    world: str
    resources: str = "resources"
    index_source: str = "build"

    @classmethod
    def of(cls, config: dict[str, Any]) -> Layout:
        return cls(
            root=f"{config['results_dir']}/{config['world']}",
            world=config["world"],
            resources=config.get("resources_dir", "resources"),
            index_source=(config.get("index") or {}).get("source", "build"),
        )

    # corpus and QA
    @property
    def world_dir(self) -> str:
        return f"{self.root}/world"

    @property
    def corpus(self) -> str:
        if self.world == "synthetic":
            return f"{self.world_dir}/corpus.jsonl"
        return f"{self.resources}/corpus/wiki18.jsonl"

    def qa(self, benchmark: str, split: str) -> str:
        """QA JSONL of one benchmark split (the synthetic world writes one train/dev file)."""
        if self.world == "synthetic":
            if split == "test":
                return f"{self.world_dir}/test/{benchmark}.jsonl"
            return f"{self.world_dir}/{split}.jsonl"
        return f"{self.resources}/qa/{benchmark}/{split}.jsonl"

    # index
    def index_shard(self, shard: int | str) -> str:
        return f"{self.root}/index/shards/shard_{shard}.npy"

    @property
    def index(self) -> str:
        """The FAISS index: built from the corpus (results) or the downloaded e5 one."""
        if self.index_source == "prebuilt":
            return f"{self.resources}/index/wiki18-e5-flat.faiss"
        return f"{self.root}/index/index.faiss"

    # downloads
    def hub_model_dir(self, repo_id: str) -> str:
        """A hub model (policy, encoder or reranker), keyed by its repo id so that configs
        naming the same model differently share one download: ``models/ORG--NAME`` (the hub
        cache's spelling; no job's command line carries a hub id, not even inside a path)."""
        return f"{self.resources}/models/{hub_dir_name(repo_id)}"

    def download_log(self, rule: str, name: str) -> str:
        """Logs of download jobs live beside the downloads they describe."""
        return f"{self.resources}/logs/{rule}/{name}.log"

    def download_benchmark(self, rule: str, name: str) -> str:
        return f"{self.resources}/benchmarks/{rule}/{name}.tsv"

    # models
    def model_dir(self, model: str, variant: str) -> str:
        """``variant``: ``base`` (downloaded/built), ``sft`` or ``sft-prethink``."""
        return f"{self.root}/models/{model}/{variant}"

    # datasets
    @property
    def train_data(self) -> str:
        return f"{self.root}/data/train.parquet"

    @property
    def val_data(self) -> str:
        return f"{self.root}/data/val.parquet"

    def test_data(self, benchmark: str) -> str:
        return f"{self.root}/data/test/{benchmark}.parquet"

    # runs: one per (model, method, seed); ``seed`` may be a wildcard pattern such as "{seed}"
    def run_dir(self, model: str, method: str, seed: int | str) -> str:
        return f"{self.root}/runs/{model}/{method}/seed_{seed}"

    def spec(self, model: str, method: str, seed: int | str) -> str:
        return f"{self.run_dir(model, method, seed)}/spec.yaml"

    def eval_run_dir(self, model: str, method: str, seed: int | str) -> str:
        """One run's evaluations: a sub-folder per benchmark (``evaluate --suite`` writes here)."""
        return f"{self.root}/eval/{model}/{method}/seed_{seed}"

    def eval_dir(self, model: str, method: str, seed: int | str, benchmark: str) -> str:
        return f"{self.eval_run_dir(model, method, seed)}/{benchmark}"

    def start_eval_run_dir(self, model: str) -> str:
        """The start point's evaluation (``evaluation.start_point``): the model RL starts from,
        with no RL. ``_start_point`` cannot be a method name (those start with a letter or
        digit), so it never meets a run's folder."""
        return f"{self.root}/eval/{model}/_start_point"

    def start_eval_dir(self, model: str, benchmark: str) -> str:
        return f"{self.start_eval_run_dir(model)}/{benchmark}"

    def proxy(self, model: str, method: str, seed: int | str) -> str:
        return f"{self.root}/proxy/{model}/{method}/seed_{seed}.json"

    def judge_dir(self, model: str, method: str, seed: int | str) -> str:
        """Proxy validation with the LLM judge of one run (calibadv judge validate)."""
        return f"{self.root}/judge/{model}/{method}/seed_{seed}"

    @property
    def judge_cache(self) -> str:
        return f"{self.root}/judge/cache.sqlite"

    @property
    def judge_stand_in(self) -> str:
        return f"{self.root}/models/judge/smollm2-135m-instruct"

    @property
    def report_dir(self) -> str:
        return f"{self.root}/report"

    def log(self, rule: str, name: str) -> str:
        return f"{self.root}/logs/{rule}/{name}.log"

    def benchmark(self, rule: str, name: str) -> str:
        return f"{self.root}/benchmarks/{rule}/{name}.tsv"


#: Layout path shapes (last components; ``*`` = any) -> the rule writing them, first match wins.
_PRODUCERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("final",), "train"),
    (("models", "*", "sft"), "sft"),
    (("models", "*", "sft-prethink"), "sft"),
    (("models", "*", "base"), "build_tiny_model"),
    (("corpus", "wiki18.jsonl"), "download_corpus"),
    (("world", "corpus.jsonl"), "synth_world"),
    (("world", "*.jsonl"), "synth_world"),
    (("world", "test", "*.jsonl"), "synth_world"),
    (("index", "wiki18-e5-flat.faiss"), "download_index"),
    (("index", "index.faiss"), "merge_index"),
    (("qa", "*", "*.jsonl"), "download_qa"),
    (("data", "train.parquet"), "prepare_train"),
    (("data", "val.parquet"), "prepare_val"),
    (("data", "test", "*.parquet"), "prepare_test"),
    (("runs", "*", "*", "seed_*", "spec.yaml"), "spec"),
)


def producing_rule(path: str, default: str | None = "download_model") -> str | None:
    """The workflow rule that writes ``path`` (a layout file or model directory), for errors
    about a missing one; ``default`` for any other path (a model directory: a hub model)."""
    parts = Path(path).parts
    for shape, rule in _PRODUCERS:
        tail = parts[-len(shape):]
        if len(tail) == len(shape) and all(fnmatch.fnmatch(p, s) for p, s in zip(tail, shape, strict=True)):
            return rule
    return default
