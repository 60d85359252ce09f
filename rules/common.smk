# Helpers shared by every stage: the validated config, the output layout and resources.
# The logic lives in the calibadv.workflow package (tested library code); this file only
# adapts it.
import json
import os
import re
import shlex

from calibadv import offline
from calibadv.workflow.judge import (
    judge_runs,
    labels_path,
    run_judge_section,
    validate_on_submit_host,
    workflow_judge,
)
from calibadv.workflow.layout import Layout, repo_path
from calibadv.workflow.resources import snakemake_resources, stage_resources
from calibadv.workflow.run_specs import run_spec_dict
from calibadv.workflow.runs import (
    model_seeds,
    model_variant,
    proxy_runs,
    resolve_method,
    seed_runs,
    start_model,
    start_point_runs,
)
from calibadv.workflow.sources import (
    hub_downloads,
    localized_config,
    model_source_dir,
    retrieval_model,
    retrieval_model_dirs,
    start_point_checkpoint,
)
from calibadv.workflow.validation import validate_config

CFG = validate_config(config)
L = Layout.of(CFG)
WORLD = CFG["world"]
BENCHMARKS = CFG["benchmarks"]
RUNS = seed_runs(CFG)  # (model, method, seed): one training run each
PROXY_RUNS = proxy_runs(CFG)
MODELS = list(CFG["models"])
FIGURES = [
    "training_dynamics",
    "penalised_c1",
    "alpha_sweep",
    "c_distribution",
    "empty_silver",
    "softpen_share",
    "figure2_gold",
    "collapse_km",
]
TABLES = [
    "table1_main",
    "table2_ablation",
    "table3_proxy",
    "table4_uniform",
    "table5_judge",
    "table7_datasets",
    "table8_figure2_gold",
    "table9_stress",
    "table9_survival",
]


wildcard_constraints:
    model="|".join(re.escape(m) for m in MODELS),
    method="[A-Za-z0-9][A-Za-z0-9._-]*",
    benchmark="|".join(BENCHMARKS),
    shard=r"\d+",
    seed=r"\d+",
    variant="sft|sft-prethink",


# Every job runs offline: the Hugging Face libraries read local files only, so a compute node
# without internet never stalls on the network. Download rules alone start with ONLINE.
shell.prefix("set -euo pipefail; " + offline.shell_exports())
ONLINE = offline.shell_online()

# downloads.where: local = every download rule runs on the host running Snakemake (the submit
# host, online on most clusters); cluster = they are jobs (resources.download).
DOWNLOADS_LOCAL = CFG["downloads"]["where"] == "local"
# at most downloads.max_parallel downloads at a time (`--resources downloads=N` overrides)
if "downloads" not in workflow.global_resources:
    workflow.register_resource("downloads", CFG["downloads"]["max_parallel"])

# hub models (policies, encoder, reranker) the config downloads; the retrieval models as jobs
# see them (a bundled name, or the directory download_model writes)
HUB_MODELS = {offline.hub_dir_name(r): r for r in hub_downloads(CFG)}
ENCODER = retrieval_model(CFG, "encoder")
RETRIEVAL_DIRS = retrieval_model_dirs(CFG)


def retrieval_flags(with_reranker=True):
    """`--encoder X [--reranker Y]` of a job that serves or encodes retrieval."""
    flags = [f"--encoder {shlex.quote(ENCODER)}"]
    if with_reranker and "reranker" in RETRIEVAL_DIRS:
        flags.append(f"--reranker {shlex.quote(RETRIEVAL_DIRS['reranker'])}")
    return " ".join(flags)


def log_of(rule, name="all"):
    return L.log(rule, name)


def download_log_of(rule, name="all"):
    return L.download_log(rule, name)


def download_bench_of(rule, name="all"):
    return L.download_benchmark(rule, name)


def bench_of(rule, name="all"):
    return L.benchmark(rule, name)


def _model_of(wildcards):
    return getattr(wildcards, "model", None)


def res(stage, key):
    """A resource callable of one stage: per-model overrides, `attempt`-scaled time/memory."""

    def value(wildcards, attempt):
        r = snakemake_resources(
            stage_resources(CFG, stage, _model_of(wildcards)), attempt
        )
        return r.get(key, "" if key in ("gpu_model", "slurm_partition") else 0)

    return value


def threads_of(stage):
    return stage_resources(CFG, stage)["cpus"]


def model_dir_for_run(wildcards):
    return start_point_checkpoint(CFG, wildcards.model, wildcards.method)


# one training run: (model, method, seed); used in rule names, logs and benchmarks
RUN_JOB = "{model}-{method}-s{seed}"


def run_dir_of(name):
    """A file of one training run's folder, with the run's wildcards."""
    return f"{L.run_dir('{model}', '{method}', '{seed}')}/{name}"


def one_of(names):
    """Wildcard regex matching exactly ``names`` (never empty: no names match nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


def models_with_source(source):
    """Wildcard regex matching the models whose `source` is ``source``."""
    return one_of([m for m in MODELS if CFG["models"][m]["source"] == source])


def sft_variants():
    """(model, variant) pairs of every SFT warm start some run starts from."""
    pairs = {
        (start_model(CFG, m), model_variant(CFG, m, x))
        for m, x, _ in RUNS
        if CFG["models"][start_model(CFG, m)]["sft"]
    }
    return sorted(pairs)


def train_qa_files():
    benches = CFG["train_benchmarks"]
    if WORLD == "synthetic":
        return {"synthetic": L.qa(benches[0], "train")}
    return {b: L.qa(b, "train") for b in benches}


def val_qa_files():
    benches = CFG["train_benchmarks"]
    if WORLD == "synthetic":
        return {"synthetic": L.qa(benches[0], "dev")}
    return {b: L.qa(b, "dev") for b in benches}


def gold_docs_corpus():
    """The corpus whose hop documents become StepSearch's gold_docs: the synthetic world's
    (its questions list their hops); the real datasets have no hops, so none."""
    return [L.corpus] if WORLD == "synthetic" else []


def inputs_flag(files):
    return " ".join(f"{key}={path}" for key, path in files.items())


def prefix_flag(flag, value):
    return f"{flag} {shlex.quote(value)}" if value else ""


def sft_flags(wildcards):
    """`calibadv sft` flags from models.<m>.sft_options (+ the config's retrieval top-k)."""
    options = CFG["models"][wildcards.model]["sft_options"]
    flags = [
        f"--topk {CFG['retrieval']['topk']}",
        f"--server {CFG['retrieval']['server']}",
    ]
    flags += [f"--{k.replace('_', '-')} {v}" for k, v in sorted(options.items())]
    return " ".join(flags)


def build_flags(wildcards):
    """`calibadv build-tiny-model` flags from models.<m>.build_options."""
    options = CFG["models"][wildcards.model]["build_options"]
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(options.items()))


def limit_flag(value):
    return f"--limit {value}" if value else ""


def run_targets():
    return [f"{L.run_dir(m, x, s)}/done.json" for m, x, s in RUNS]


# evaluation.jobs: one evaluate job per (model, method, benchmark), or per (model, method)
# over every benchmark; the output files are the same either way.
EVAL_PER_RUN = CFG["evaluation"]["jobs"] == "per_run"
EVAL_BENCHMARKS = BENCHMARKS if EVAL_PER_RUN else ["{benchmark}"]
EVAL_JOB = RUN_JOB + ("" if EVAL_PER_RUN else "-{benchmark}")


def eval_outputs(name):
    """`metrics.json` or `predictions.jsonl` of every benchmark one evaluate job covers."""
    return [
        f"{L.eval_dir('{model}', '{method}', '{seed}', b)}/{name}"
        for b in EVAL_BENCHMARKS
    ]


def suite_flags(benches):
    """`--suite NAME=PARQUET` for each of ``benches``."""
    return " ".join(f"--suite {b}={L.test_data(b)}" for b in benches)


def eval_suite_flags(wildcards):
    """The evaluate job's suites: every benchmark under per_run, else its own."""
    return suite_flags(BENCHMARKS if EVAL_PER_RUN else [wildcards.benchmark])


def eval_root(wildcards):
    return L.eval_run_dir(wildcards.model, wildcards.method, wildcards.seed)


def eval_targets(name="metrics.json"):
    """`metrics.json` (or `predictions.jsonl`) of every evaluation: each run on each
    benchmark, then each start point's (what the tables and figures read)."""
    return [
        f"{L.eval_dir(m, x, s, b)}/{name}" for m, x, s in RUNS for b in BENCHMARKS
    ] + start_eval_targets(name)


# evaluation.start_point: start model -> (model, method, seed) of the run whose RunSpec and
# start checkpoint its no-RL evaluation uses (Table 1's "start point (no RL)" row)
START_POINTS = start_point_runs(CFG)


def start_eval_targets(name="metrics.json"):
    return [
        f"{L.start_eval_dir(m, b)}/{name}" for m in START_POINTS for b in BENCHMARKS
    ]


def start_eval_outputs(name):
    return [f"{L.start_eval_dir('{model}', b)}/{name}" for b in BENCHMARKS]


def start_point_spec(wildcards):
    return L.spec(*START_POINTS[wildcards.model])


def start_point_model_dir(wildcards):
    model, method, _ = START_POINTS[wildcards.model]
    return start_point_checkpoint(CFG, model, method)


def start_eval_root(wildcards):
    return L.start_eval_run_dir(wildcards.model)


def proxy_targets():
    return [L.proxy(m, x, s) for m, x, s in PROXY_RUNS]


def table_targets():
    fmts = CFG["report"]["formats"]
    return [f"{L.report_dir}/tables/{t}.{f}" for t in TABLES for f in fmts]


def figure_targets():
    return [f"{L.report_dir}/figures/{f}.png" for f in FIGURES]


def all_targets():
    return table_targets() + figure_targets() + counterfactual_targets()


# --- the counterfactual update (rules/counterfactual.smk, docs/training.md)
CF = CFG["counterfactual"]
CF_MODEL = (CF["model"] or MODELS[0]) if CF["enabled"] else None
if CF_MODEL is not None and CF_MODEL not in MODELS:
    raise ValueError(
        f"counterfactual.model = {CF_MODEL!r} is not a models key ({', '.join(MODELS)})"
    )
CF_DIR = f"{L.root}/counterfactual/{CF_MODEL}"
CF_TRAIN = f"{L.root}/data/counterfactual_train.parquet"
CF_TABLES = [
    f"{L.report_dir}/tables/table10_counterfactual.{f}"
    for f in CFG["report"]["formats"]
]
CF_FIGURE = f"{L.report_dir}/figures/counterfactual_update.png"


def counterfactual_targets():
    return [*CF_TABLES, CF_FIGURE] if CF["enabled"] else []


def counterfactual_flags(wildcards, input):
    """`calibadv counterfactual` flags from the config's counterfactual section."""
    specs = " ".join(
        f"--spec {m}={path}" for m, path in zip(CF["methods"], input.specs)
    )
    keys = ("questions", "group_size", "mini_batches", "dev_questions", "dev_samples")
    flags = [f"--{k.replace('_', '-')} {CF[k]}" for k in keys]
    flags += [
        f"--updates {','.join(str(k) for k in CF['updates'])}",
        f"--seed {CF['seed']}",
        f"--reps {CF['reps']}",
        f"--reference {shlex.quote(CF['reference'])}",
        f"--sample-method {shlex.quote(CF['sample_method'])}",
    ]
    return " ".join([specs, *flags])


def counterfactual_labels():
    labels = CFG["report"].get("method_labels") or {}
    return " ".join(
        f"--label {shlex.quote(f'{m}={labels[m]}')}"
        for m in CF["methods"]
        if m in labels
    )


def config_json():
    """The validated config, for `calibadv report … --config-json` (keeps --config overrides),
    with hub ids replaced by their local directories: report jobs run offline too."""
    return json.dumps(localized_config(CFG))  # key order = row order of the tables


def caption_of(path):
    """The report caption of a table/figure file: workflow/report/<name>.rst."""
    name = os.path.basename(path).split(".")[0]
    return os.path.join("..", "workflow", "report", f"{name}.rst")


# --- the LLM judge (rules/judge.smk, docs/judge.md)
JUDGE = workflow_judge(CFG)
JUDGE_RUNS = judge_runs(CFG)
JUDGE_SAMPLE = CFG["judge"]["sample"]
# judge.where: local = proxy validation with an external judge runs on the host running
# Snakemake (online, like downloads; the one writer of the verdict cache); cluster = a job
JUDGE_LOCAL = validate_on_submit_host(CFG)
# the sample and threshold as one plain string param: Snakemake's params trigger compares
# only params that do not read input/output, so a changed judge.sample re-runs judge_validate
JUDGE_SAMPLE_FLAGS = (
    f"--per-checkpoint {JUDGE_SAMPLE['per_checkpoint']} --seed {JUDGE_SAMPLE['seed']} "
    f"--min-c {JUDGE_SAMPLE['min_c']} --steps {JUDGE_SAMPLE['steps']} "
    f"--helpful-min {CFG['judge']['helpful_min']}"
)


def judge_model_inputs():
    """The stand-in directory, when a job starts a local server that loads it."""
    if JUDGE["server"] == "local" and JUDGE["model_path"] == L.judge_stand_in:
        return [L.judge_stand_in]
    return []


def judge_train_inputs(wildcards):
    """Extra inputs of a training run whose method scores steps with the judge."""
    if run_judge_section(CFG, resolve_method(CFG, wildcards.method)):
        return judge_model_inputs()
    return []


def judge_targets():
    return [
        f"{L.judge_dir(m, x, s)}/summary.json"
        for m, x in JUDGE_RUNS
        for s in model_seeds(CFG, m)
    ]


def judge_validate_inputs(wildcards):
    inputs = {
        "done": f"{L.run_dir(wildcards.model, wildcards.method, wildcards.seed)}/done.json",
        "model": judge_model_inputs(),
    }
    if WORLD == "synthetic":
        inputs["qa"] = L.qa(CFG["train_benchmarks"][0], "train")
    # a person's labels (judge.labels_dir): an input when the file exists, never an output
    labels = labels_path(CFG, wildcards.model, wildcards.method, wildcards.seed)
    if labels and os.path.exists(labels):
        inputs["labels"] = labels
    return inputs


def judge_validate_flags(wildcards, input):
    """The input-derived flags (the sample's are JUDGE_SAMPLE_FLAGS, a tracked param)."""
    flags = []
    if "qa" in input.keys():
        flags.append(f"--qa {input.qa}")
    if "labels" in input.keys():
        flags.append(f"--human-labels {shlex.quote(input.labels)}")
    return " ".join(flags)
