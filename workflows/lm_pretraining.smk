# The LM-pretraining track's per-seed stage: the reference LM whose checkpoints and features the
# PRIOR, PreSelect and TAROT runs read (lossbench/lm_reference.py). Runs train via train_run.


def lm_protocol(wildcards):
    proto = TRACKS[wildcards.track]["protocols"][wildcards.protocol]
    return {k: v for k, v in proto.items() if k != "datasets"}


rule lm_reference:
    input:
        data=lambda wc: f"resources/data/{datasets.source_of(wc.dataset)}/prepared.npz",
    output:
        "results/{profile}/stages/{track}/{protocol}/seed{seed}/reference_{dataset}.npz",
    params:
        proto=lm_protocol,  # a protocol change reruns the stage
    priority: 20  # a stage gates many runs: start it before independent runs
    log:
        "results/{profile}/logs/lm_reference/{track}/{protocol}/{dataset}/seed{seed}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import lm_pretraining

        run_job(lm_pretraining.build_reference, wildcards.track, params.proto, int(wildcards.seed),
                wildcards.dataset, input.data, output[0], device=config["device"], log=log[0])
