# Corpus and QA splits: the synthetic world (results), or wiki-18 + FlashRAG benchmarks
# downloaded from the hub (resources_dir).


if WORLD == "synthetic":

    rule synth_world:
        output:
            corpus=L.corpus,
            train=L.qa("hotpotqa", "train"),
            dev=L.qa("hotpotqa", "dev"),
            tests=[L.qa(b, "test") for b in BENCHMARKS],
            stats=f"{L.world_dir}/world.json",
        log:
            log_of("synth_world"),
        benchmark:
            bench_of("synth_world")
        conda:
            "../envs/retriever.yaml"
        threads: threads_of("corpus")
        resources:
            runtime=res("corpus", "runtime"),
            mem_mb=res("corpus", "mem_mb"),
            slurm_partition=res("corpus", "slurm_partition"),
        params:
            out_dir=lambda wildcards, output: os.path.dirname(output.stats),
            seed=CFG["synthetic"]["seed"],
            size=CFG["synthetic"]["size"],
        shell:
            "calibadv synth --out-dir {params.out_dir} --seed {params.seed} "
            "--size {params.size} > {log} 2>&1"

else:

    if DOWNLOADS_LOCAL:

        localrules:
            download_corpus,
            download_qa,

    rule download_corpus:
        output:
            L.corpus,
        log:
            download_log_of("download_corpus"),
        benchmark:
            download_bench_of("download_corpus")
        conda:
            "../envs/retriever.yaml"
        threads: threads_of("download")
        resources:
            downloads=1,
            runtime=res("download", "runtime"),
            mem_mb=res("download", "mem_mb"),
            slurm_partition=res("download", "slurm_partition"),
        params:
            online=ONLINE,
        shell:
            "{params.online}calibadv download-corpus --out {output} > {log} 2>&1"

    rule download_qa:
        output:
            L.qa("{benchmark}", "{split}"),
        log:
            download_log_of("download_qa", "{benchmark}-{split}"),
        benchmark:
            download_bench_of("download_qa", "{benchmark}-{split}")
        wildcard_constraints:
            split="train|dev|test",
        conda:
            "../envs/retriever.yaml"
        threads: 1
        resources:
            downloads=1,
            runtime=res("download", "runtime"),
            mem_mb=res("download", "mem_mb"),
            slurm_partition=res("download", "slurm_partition"),
        params:
            online=ONLINE,
        shell:
            "{params.online}calibadv download-data --dataset {wildcards.benchmark} "
            "--split {wildcards.split} --out {output} > {log} 2>&1"
