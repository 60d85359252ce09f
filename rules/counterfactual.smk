# The counterfactual update (docs/training.md): from one start point, one batch, each method's
# update; Table 10 and its figure read how held-out intermediate steps' log-probs moved.
# Off unless counterfactual.enabled (the embedded default turns it on).


use rule prepare_train as prepare_counterfactual with:
    output:
        CF_TRAIN,
    log:
        log_of("prepare_counterfactual"),
    params:
        inputs=inputs_flag(train_qa_files()),
        limit=limit_flag(CF["questions"]),
        corpus=" ".join(f"--corpus {c}" for c in gold_docs_corpus()),


rule counterfactual:
    input:
        unpack(lambda wildcards: RETRIEVAL_DIRS),
        specs=[L.spec(CF_MODEL, m, CF["seed"]) for m in CF["methods"]],
        start=(
            start_point_checkpoint(CFG, CF_MODEL, CF["sample_method"])
            if CF_MODEL
            else []
        ),
        train=CF_TRAIN,
        dev=L.val_data,
        corpus=L.corpus,
        index=L.index,
    output:
        summary=f"{CF_DIR}/summary.json",
        steps=f"{CF_DIR}/steps.jsonl",
    log:
        log_of("counterfactual"),
    benchmark:
        bench_of("counterfactual")
    conda:
        "../envs/train.yaml"
    threads: threads_of("train")
    resources:
        runtime=res("train", "runtime"),
        mem_mb=res("train", "mem_mb"),
        cpus_per_task=res("train", "cpus_per_task"),
        gpu=res("train", "gpu"),
        gpu_model=res("train", "gpu_model"),
        slurm_partition=res("train", "slurm_partition"),
    params:
        flags=counterfactual_flags,
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "calibadv counterfactual {params.flags} --start {input.start} --train {input.train} "
        "--dev {input.dev} --out {params.out_dir} > {log} 2>&1"


rule counterfactual_report:
    input:
        summary=f"{CF_DIR}/summary.json",
    output:
        tables=[
            report(path, caption=caption_of(path), category="Tables")
            for path in CF_TABLES
        ],
        figure=report(CF_FIGURE, caption=caption_of(CF_FIGURE), category="Figures"),
    log:
        log_of("counterfactual_report"),
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        runtime=res("report", "runtime"),
        mem_mb=res("report", "mem_mb"),
        slurm_partition=res("report", "slurm_partition"),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.tables[0]),
        formats=" ".join(CFG["report"]["formats"]),
        labels=counterfactual_labels(),
    shell:
        "calibadv report counterfactual --summary {input.summary} --out-dir {params.out_dir} "
        "--figure {output.figure} --formats {params.formats} {params.labels} > {log} 2>&1"
