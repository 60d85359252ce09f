# Benchmark evaluation of each run's chosen checkpoint (final/: last before collapse, else
# the last one). evaluation.jobs picks the job granularity, with the same output files:
#   per_benchmark - one job per (model, method, benchmark): GPU clusters, the paper config;
#   per_run       - one job per (model, method) over every benchmark: CPU runs, where loading
#                   torch, the model and the retrieval server costs more than the rollouts.
# evaluation.start_point adds evaluate_start: the model RL starts from, with no RL, on every
# benchmark (one job per start model), the row every method's RL is measured from.


rule evaluate:
    input:
        unpack(lambda wildcards: RETRIEVAL_DIRS),
        spec=L.spec("{model}", "{method}", "{seed}"),
        checkpoint=run_dir_of("final"),
        data=[L.test_data(b) for b in EVAL_BENCHMARKS],
        corpus=L.corpus,
        index=L.index,
    output:
        metrics=eval_outputs("metrics.json"),
        predictions=eval_outputs("predictions.jsonl"),
    log:
        log_of("evaluate", EVAL_JOB),
    benchmark:
        bench_of("evaluate", EVAL_JOB)
    conda:
        "../envs/train.yaml"
    threads: threads_of("evaluate")
    resources:
        runtime=res("evaluate", "runtime"),
        mem_mb=res("evaluate", "mem_mb"),
        cpus_per_task=res("evaluate", "cpus_per_task"),
        gpu=res("evaluate", "gpu"),
        gpu_model=res("evaluate", "gpu_model"),
        slurm_partition=res("evaluate", "slurm_partition"),
    params:
        generator=CFG["evaluation"]["generator"],
        batch_size=CFG["evaluation"]["batch_size"],
        suites=eval_suite_flags,
        out_dir=eval_root,
    shell:
        "calibadv evaluate --spec {input.spec} --checkpoint {input.checkpoint} "
        "{params.suites} --out-dir {params.out_dir} "
        "--generator {params.generator} --batch-size {params.batch_size} "
        "> {log} 2>&1"


use rule evaluate as evaluate_start with:
    input:
        unpack(lambda wildcards: RETRIEVAL_DIRS),
        spec=start_point_spec,
        checkpoint=start_point_model_dir,
        data=[L.test_data(b) for b in BENCHMARKS],
        corpus=L.corpus,
        index=L.index,
    output:
        metrics=start_eval_outputs("metrics.json"),
        predictions=start_eval_outputs("predictions.jsonl"),
    log:
        log_of("evaluate_start", "{model}"),
    benchmark:
        bench_of("evaluate_start", "{model}")
    params:
        suites=suite_flags(BENCHMARKS),  # one job over every split, whatever evaluation.jobs
        out_dir=start_eval_root,
