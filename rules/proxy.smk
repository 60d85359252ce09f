# Silver-proxy validation from the rollout dumps: empty silver sets, c distribution and, on
# the synthetic world, precision/recall of silver documents and of c against gold passages, and
# the paper's Figure 2 against gold (calibadv.proxy.figure2_gold).


rule proxy_stats:
    input:
        done=run_dir_of("done.json"),
    output:
        L.proxy("{model}", "{method}", "{seed}"),
    log:
        log_of("proxy_stats", RUN_JOB),
    benchmark:
        bench_of("proxy_stats", RUN_JOB)
    conda:
        "../envs/report.yaml"
    threads: threads_of("proxy")
    resources:
        runtime=res("proxy", "runtime"),
        mem_mb=res("proxy", "mem_mb"),
        slurm_partition=res("proxy", "slurm_partition"),
    params:
        rollouts=lambda wildcards, input: os.path.join(
            os.path.dirname(input.done), "rollouts"
        ),
        metrics=lambda wildcards, input: os.path.join(
            os.path.dirname(input.done), "metrics.jsonl"
        ),
    shell:
        "calibadv proxy-stats --rollouts {params.rollouts} --metrics {params.metrics} "
        "--out {output} > {log} 2>&1"
