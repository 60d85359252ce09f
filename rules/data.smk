# Datasets in verl's Parquet format: the training mix, a validation slice (collapse point)
# and one test table per benchmark.


rule prepare_train:
    input:
        list(train_qa_files().values()),
        gold_docs_corpus(),
    output:
        L.train_data,
    log:
        log_of("prepare_train"),
    conda:
        "../envs/retriever.yaml"
    threads: threads_of("data")
    resources:
        runtime=res("data", "runtime"),
        mem_mb=res("data", "mem_mb"),
        slurm_partition=res("data", "slurm_partition"),
    params:
        inputs=inputs_flag(train_qa_files()),
        limit=limit_flag(CFG["data"]["train_limit"]),
        corpus=" ".join(f"--corpus {c}" for c in gold_docs_corpus()),
    shell:
        "calibadv prepare-data --input {params.inputs} --out {output} --split train "
        "{params.limit} {params.corpus} > {log} 2>&1"


rule prepare_val:
    input:
        list(val_qa_files().values()),
    output:
        L.val_data,
    log:
        log_of("prepare_val"),
    conda:
        "../envs/retriever.yaml"
    threads: threads_of("data")
    resources:
        runtime=res("data", "runtime"),
        mem_mb=res("data", "mem_mb"),
        slurm_partition=res("data", "slurm_partition"),
    params:
        inputs=inputs_flag(val_qa_files()),
        limit=limit_flag(CFG["data"]["val_size"]),
    shell:
        "calibadv prepare-data --input {params.inputs} --out {output} --split dev "
        "{params.limit} > {log} 2>&1"


rule prepare_test:
    input:
        L.qa("{benchmark}", "test"),
    output:
        L.test_data("{benchmark}"),
    log:
        log_of("prepare_test", "{benchmark}"),
    conda:
        "../envs/retriever.yaml"
    threads: threads_of("data")
    resources:
        runtime=res("data", "runtime"),
        mem_mb=res("data", "mem_mb"),
        slurm_partition=res("data", "slurm_partition"),
    params:
        limit=limit_flag(CFG["data"]["eval_limit"]),
    shell:
        "calibadv prepare-data --input {wildcards.benchmark}={input} --out {output} "
        "--split test {params.limit} > {log} 2>&1"
