# Benchmark evaluation of each run's chosen checkpoint (final/: last before collapse, else
# the last one). evaluation.jobs picks the job granularity, with the same output files:
#   per_benchmark - one job per (model, method, benchmark): GPU clusters, the paper config;
#   per_run       - one job per (model, method) over every benchmark: CPU runs, where loading
#                   torch, the model and the retrieval server costs more than the rollouts.


if CFG["evaluation"]["jobs"] == "per_benchmark":

    rule evaluate:
        input:
            spec=L.spec("{model}", "{method}"),
            checkpoint=f"{L.run_dir('{model}', '{method}')}/final",
            data=L.test_data("{benchmark}"),
            corpus=L.corpus,
            index=L.index,
        output:
            metrics=f"{L.eval_dir('{model}', '{method}', '{benchmark}')}/metrics.json",
            predictions=f"{L.eval_dir('{model}', '{method}', '{benchmark}')}/predictions.jsonl",
        log:
            log_of("evaluate", "{model}-{method}-{benchmark}"),
        benchmark:
            bench_of("evaluate", "{model}-{method}-{benchmark}")
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
            out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
        shell:
            "calibadv evaluate --spec {input.spec} --checkpoint {input.checkpoint} "
            "--data {input.data} --benchmark {wildcards.benchmark} --out-dir {params.out_dir} "
            "--generator {params.generator} --batch-size {params.batch_size} "
            "> {log} 2>&1"

else:

    rule evaluate:
        input:
            spec=L.spec("{model}", "{method}"),
            checkpoint=f"{L.run_dir('{model}', '{method}')}/final",
            data=[L.test_data(b) for b in BENCHMARKS],
            corpus=L.corpus,
            index=L.index,
        output:
            metrics=[
                f"{L.eval_dir('{model}', '{method}', b)}/metrics.json"
                for b in BENCHMARKS
            ],
            predictions=[
                f"{L.eval_dir('{model}', '{method}', b)}/predictions.jsonl"
                for b in BENCHMARKS
            ],
        log:
            log_of("evaluate", "{model}-{method}"),
        benchmark:
            bench_of("evaluate", "{model}-{method}")
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
            suites=" ".join(f"--suite {b}={L.test_data(b)}" for b in BENCHMARKS),
            out_dir=lambda wildcards: os.path.dirname(
                L.eval_dir(wildcards.model, wildcards.method, "x")
            ),
        shell:
            "calibadv evaluate --spec {input.spec} --checkpoint {input.checkpoint} "
            "{params.suites} --out-dir {params.out_dir} "
            "--generator {params.generator} --batch-size {params.batch_size} "
            "> {log} 2>&1"
