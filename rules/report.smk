# The paper's tables (ours beside the paper's, with the difference) and figures, flagged for
# `snakemake --report` with the captions in workflow/report/.


rule tables:
    input:
        metrics=eval_targets(),
        # the per-question scores behind the bootstrap intervals (calibadv.report.questions)
        predictions=eval_targets("predictions.jsonl"),
        runs=run_targets(),
        proxy=proxy_targets(),
        judge=judge_targets(),
        train=L.train_data,
        tests=[L.test_data(b) for b in BENCHMARKS],
        paper=str(repo_path(CFG["report"]["paper_results"])),
    output:
        [
            report(
                path,
                caption=caption_of(path),
                category="Tables",
            )
            for path in table_targets()
        ],
    log:
        log_of("tables"),
    conda:
        "../envs/report.yaml"
    threads: threads_of("report")
    resources:
        runtime=res("report", "runtime"),
        mem_mb=res("report", "mem_mb"),
        slurm_partition=res("report", "slurm_partition"),
    params:
        config=config_json(),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "calibadv report tables --config-json {params.config:q} --out-dir {params.out_dir} "
        "> {log} 2>&1"


rule figures:
    input:
        runs=run_targets(),
        metrics=eval_targets(),
    output:
        [
            report(
                path,
                caption=caption_of(path),
                category="Figures",
            )
            for path in figure_targets()
        ],
    log:
        log_of("figures"),
    conda:
        "../envs/report.yaml"
    threads: threads_of("report")
    resources:
        runtime=res("report", "runtime"),
        mem_mb=res("report", "mem_mb"),
        slurm_partition=res("report", "slurm_partition"),
    params:
        config=config_json(),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "calibadv report figures --config-json {params.config:q} --out-dir {params.out_dir} "
        "> {log} 2>&1"
