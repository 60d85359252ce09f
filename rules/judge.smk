# The LLM judge (docs/judge.md): the embedded default's stand-in judge model, and proxy
# validation of sampled c = 1 steps of the runs in judge.methods (paper Table 5), with the
# human annotation sheets. The blank sheet.csv is written beside the outputs but is not one
# (Snakemake deletes outputs before a rerun): a person's labels live in judge.labels_dir.
# Judge-scored training (calibration.score: judge) reaches the same endpoint through its
# RunSpec's judge section (rules/train.smk, judge_train_inputs).
rule judge_stand_in:
    output:
        directory(L.judge_stand_in),
    log:
        log_of("judge_stand_in"),
    benchmark:
        bench_of("judge_stand_in")
    conda:
        "../envs/train.yaml"
    threads: threads_of("judge")
    resources:
        runtime=res("judge", "runtime"),
        mem_mb=res("judge", "mem_mb"),
        slurm_partition=res("judge", "slurm_partition"),
    shell:
        "calibadv judge stand-in --out {output} > {log} 2>&1"


if JUDGE_LOCAL:

    localrules:
        judge_validate,


rule judge_validate:
    input:
        unpack(judge_validate_inputs),
    output:
        summary=f"{L.judge_dir('{model}', '{method}', '{seed}')}/summary.json",
        verdicts=f"{L.judge_dir('{model}', '{method}', '{seed}')}/verdicts.jsonl",
        page=f"{L.judge_dir('{model}', '{method}', '{seed}')}/sheet.html",
    log:
        log_of("judge_validate", RUN_JOB),
    benchmark:
        bench_of("judge_validate", RUN_JOB)
    conda:
        "../envs/train.yaml"
    threads: threads_of("judge")
    resources:
        runtime=res("judge", "runtime"),
        mem_mb=res("judge", "mem_mb"),
        cpus_per_task=res("judge", "cpus_per_task"),
        gpu=res("judge", "gpu"),
        gpu_model=res("judge", "gpu_model"),
        slurm_partition=res("judge", "slurm_partition"),
    params:
        judge=json.dumps(JUDGE, sort_keys=True),
        sample=JUDGE_SAMPLE_FLAGS,
        flags=judge_validate_flags,
        rollouts=lambda wildcards, input: os.path.join(
            os.path.dirname(input.done), "rollouts"
        ),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
        title=lambda wildcards: (
            f"Step annotation sheet: {wildcards.model} / {wildcards.method} / seed {wildcards.seed}"
        ),
        server_log=lambda wildcards: log_of(
            "judge_server", f"{wildcards.model}-{wildcards.method}-s{wildcards.seed}"
        ),
    shell:
        "calibadv judge validate --rollouts {params.rollouts} --out-dir {params.out_dir} "
        "--judge-json {params.judge:q} {params.sample} {params.flags} --title {params.title:q} "
        "--server-log {params.server_log} > {log} 2>&1"
