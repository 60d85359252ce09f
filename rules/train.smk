# One RunSpec per (model, method, seed) from the validated config (the seed is the RunSpec's
# `seed`: the RL run's data order and sampling), then one training run each.
# Only done.json, selection.json and final/ are declared outputs: metrics.jsonl, rollouts/ and
# checkpoints/ stay in place when a killed job is retried, so the run resumes from them.


# Writing a spec takes a second: never queue it on a cluster.
localrules:
    spec,


rule spec:
    output:
        L.spec("{model}", "{method}", "{seed}"),
    log:
        log_of("spec", RUN_JOB),
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        runtime=5,
        mem_mb=1000,
    params:
        spec=lambda wildcards: json.dumps(
            run_spec_dict(CFG, wildcards.model, wildcards.method, int(wildcards.seed)),
            sort_keys=True,
        ),
    shell:
        "calibadv spec --json {params.spec:q} --out {output} > {log} 2>&1"


rule train:
    input:
        unpack(lambda wildcards: RETRIEVAL_DIRS),
        spec=L.spec("{model}", "{method}", "{seed}"),
        model=model_dir_for_run,
        train=L.train_data,
        val=L.val_data,
        corpus=L.corpus,
        index=L.index,
        judge=lambda wildcards: judge_train_inputs(wildcards),
    output:
        done=run_dir_of("done.json"),
        selection=run_dir_of("selection.json"),
        final=directory(run_dir_of("final")),
    log:
        log_of("train", RUN_JOB),
    benchmark:
        bench_of("train", RUN_JOB)
    # the longest jobs first: evaluations and the judge fill the cores at the end, not between
    # training waves (on 2 cores the tiny DAG's tail shrinks by the idle core of its last wave)
    priority: 1
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
        nodes=res("train", "nodes"),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.done),
    shell:
        "calibadv train --spec {input.spec} --out {params.out_dir} > {log} 2>&1"
