# The classification track's per-seed stage: the teacher that the distillation runs (methods with
# teacher="stage": KD, DHKD, PLD) read, trained once per (track, protocol, dataset, seed) with
# plain CE on the students' data and cached (lossbench/tasks/classification.build_teacher).


def classification_protocol(wildcards):
    proto = TRACKS[wildcards.track]["protocols"][wildcards.protocol]
    return {k: v for k, v in proto.items() if k != "datasets"}


rule classification_teacher:
    input:
        data=lambda wc: f"resources/data/{datasets.source_of(wc.dataset)}/prepared.npz",
    output:
        "results/{profile}/stages/{track}/{protocol}/seed{seed}/teacher_{dataset}.pt",
    params:
        proto=classification_protocol,  # a protocol change reruns the stage
    priority: 20  # a stage gates many runs: start it before independent runs
    log:
        "results/{profile}/logs/classification_teacher/{track}/{protocol}/{dataset}/seed{seed}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import classification

        run_job(classification.build_teacher, wildcards.track, params.proto, int(wildcards.seed),
                wildcards.dataset, input.data, output[0], device=config["device"], log=log[0])
