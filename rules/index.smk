# Dense index: sharded encode jobs merged into one FAISS index, or the prebuilt e5 index.


if CFG["index"]["source"] == "build":

    rule encode_shard:
        input:
            unpack(
                lambda wildcards: {
                    k: v for k, v in RETRIEVAL_DIRS.items() if k == "encoder"
                }
            ),
            corpus=L.corpus,
        output:
            L.index_shard("{shard}"),
        log:
            log_of("encode_shard", "{shard}"),
        benchmark:
            bench_of("encode_shard", "{shard}")
        conda:
            "../envs/retriever.yaml"
        threads: threads_of("encode")
        resources:
            runtime=res("encode", "runtime"),
            mem_mb=res("encode", "mem_mb"),
            cpus_per_task=res("encode", "cpus_per_task"),
            gpu=res("encode", "gpu"),
            gpu_model=res("encode", "gpu_model"),
            slurm_partition=res("encode", "slurm_partition"),
        params:
            encoder=retrieval_flags(with_reranker=False),
            num_shards=CFG["index"]["num_shards"],
            prefix=prefix_flag("--passage-prefix", CFG["retrieval"]["passage_prefix"]),
        shell:
            "calibadv index encode --corpus {input.corpus} {params.encoder} "
            "--shard {wildcards.shard} --num-shards {params.num_shards} {params.prefix} --out {output} "
            "> {log} 2>&1"

    rule merge_index:
        input:
            shards=[L.index_shard(i) for i in range(CFG["index"]["num_shards"])],
        output:
            L.index,
        log:
            log_of("merge_index"),
        benchmark:
            bench_of("merge_index")
        conda:
            "../envs/retriever.yaml"
        threads: threads_of("merge")
        resources:
            runtime=res("merge", "runtime"),
            mem_mb=res("merge", "mem_mb"),
            slurm_partition=res("merge", "slurm_partition"),
        params:
            kind=CFG["index"]["kind"],
        shell:
            "calibadv index merge --shards {input.shards} --out {output} "
            "--kind {params.kind} > {log} 2>&1"

else:

    if DOWNLOADS_LOCAL:

        localrules:
            download_index,

    rule download_index:
        output:
            L.index,
        log:
            download_log_of("download_index"),
        benchmark:
            download_bench_of("download_index")
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
            "{params.online}calibadv download-index --out {output} > {log} 2>&1"
