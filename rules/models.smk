# Models: hub downloads (policies, the retrieval encoder and reranker) into resources_dir, the
# tiny model built from the synthetic world into results, or a local directory (nothing to
# do); then the optional SFT warm start (with/without PreThink).


if DOWNLOADS_LOCAL:

    localrules:
        download_model,


rule download_model:
    output:
        directory(L.hub_model_dir("{repo}")),
    log:
        download_log_of("download_model", "{repo}"),
    benchmark:
        download_bench_of("download_model", "{repo}")
    wildcard_constraints:
        repo=one_of(HUB_MODELS),
    conda:
        "../envs/train.yaml"
    threads: threads_of("download")
    resources:
        downloads=1,
        runtime=res("download", "runtime"),
        mem_mb=res("download", "mem_mb"),
        slurm_partition=res("download", "slurm_partition"),
    params:
        online=ONLINE,
        repo_id=lambda wildcards: HUB_MODELS[wildcards.repo],
    shell:
        "{params.online}calibadv download-model --repo-id {params.repo_id} --out {output} "
        "> {log} 2>&1"


rule build_tiny_model:
    input:
        corpus=L.corpus,
        qa=list(train_qa_files().values()) + list(val_qa_files().values()),
    output:
        directory(L.model_dir("{model}", "base")),
    log:
        log_of("build_tiny_model", "{model}"),
    benchmark:
        bench_of("build_tiny_model", "{model}")
    wildcard_constraints:
        model=models_with_source("tiny"),
    conda:
        "../envs/train.yaml"
    threads: threads_of("model")
    resources:
        runtime=res("model", "runtime"),
        mem_mb=res("model", "mem_mb"),
        slurm_partition=res("model", "slurm_partition"),
    params:
        seed=lambda wildcards: CFG["models"][wildcards.model].get("seed", CFG["seed"]),
        options=build_flags,
    shell:
        "calibadv build-tiny-model --corpus {input.corpus} --qa {input.qa} "
        "--out {output} --seed {params.seed} {params.options} > {log} 2>&1"


rule sft:
    input:
        unpack(lambda wildcards: RETRIEVAL_DIRS),
        model=lambda wildcards: model_source_dir(CFG, wildcards.model),
        qa=list(train_qa_files().values())[0],
        dev=list(val_qa_files().values())[0],
        corpus=L.corpus,
        index=L.index,
    output:
        directory(L.model_dir("{model}", "{variant}")),
    log:
        log_of("sft", "{model}-{variant}"),
    benchmark:
        bench_of("sft", "{model}-{variant}")
    conda:
        "../envs/train.yaml"
    threads: threads_of("sft")
    resources:
        runtime=res("sft", "runtime"),
        mem_mb=res("sft", "mem_mb"),
        cpus_per_task=res("sft", "cpus_per_task"),
        gpu=res("sft", "gpu"),
        gpu_model=res("sft", "gpu_model"),
        slurm_partition=res("sft", "slurm_partition"),
    params:
        retrieval=retrieval_flags(),
        prethink=lambda wildcards: (
            "--prethink" if wildcards.variant == "sft-prethink" else ""
        ),
        options=sft_flags,
    shell:
        "calibadv sft --model {input.model} --qa {input.qa} --corpus {input.corpus} "
        "--index {input.index} {params.retrieval} --out {output} {params.prethink} "
        "--eval-qa {input.dev} "
        "{params.options} "
        "> {log} 2>&1"
