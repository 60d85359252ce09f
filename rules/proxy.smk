# Silver-proxy validation from the rollout dumps: empty silver sets, c distribution and, on
# the synthetic world, precision/recall of silver documents and of c against gold passages.


rule proxy_stats:
    input:
        done=f"{L.run_dir('{model}', '{method}')}/done.json",
    output:
        L.proxy("{model}", "{method}"),
    log:
        log_of("proxy_stats", "{model}-{method}"),
    benchmark:
        bench_of("proxy_stats", "{model}-{method}")
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
    shell:
        "calibadv proxy-stats --rollouts {params.rollouts} --out {output} > {log} 2>&1"
