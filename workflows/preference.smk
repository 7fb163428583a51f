# Preference track stages (lossbench/tasks/preference.py): per (track, protocol, seed)
#   synthpref: sft -> sample -> label(dataset) [-> reward_model(dataset)] [-> overopt(dataset): the overoptimization block]
#   hub:       reference (per protocol) -> sample -> label(dataset) [-> reward_model(dataset)]
# then train_run (train.smk) -> pref_sample_eval [+ pref_capability, hub] -> evaluate_run (evaluate.smk).
PROTOCOL_STAGE = "results/{profile}/stages/{track}/{protocol}"
STAGE = f"{PROTOCOL_STAGE}/seed{{seed}}"


def pref_protocol(wildcards):
    return TRACKS[wildcards.track]["protocols"][wildcards.protocol]


def pref_stage_params(*keys):
    """The protocol entries a stage depends on, as params: editing them reruns the stage."""
    return lambda wc: {k: pref_protocol(wc).get(k) for k in keys}


def pref_twin(wildcards):
    from lossbench.tasks import preference as pref

    return pref.retain_twin(TRACKS[wildcards.track], wildcards.protocol)


def pref_sft(wildcards):
    """π_ref of a seed's stages: SynthPref's sft.pt, or the hub testbed's reference.json."""
    from lossbench.tasks import preference as pref

    return pref.stage_files(STAGE.format(**wildcards), bed=pref.testbed_name(pref_protocol(wildcards)))["sft"]


rule pref_reference:
    output:
        f"{PROTOCOL_STAGE}/reference.json",
    params:
        cfg=pref_stage_params("policy", "judge"),
    log:
        "results/{profile}/logs/pref_reference/{track}/{protocol}.log",
    run:
        from lossbench.tasks import preference as pref

        run_job(pref.build_reference, pref_protocol(wildcards), output[0], log=log[0])


rule pref_ref_capability:
    input:
        sft=f"{PROTOCOL_STAGE}/reference.json",
    output:
        f"{PROTOCOL_STAGE}/capability.json",
    params:
        cfg=pref_stage_params("capability"),
    log:
        "results/{profile}/logs/pref_ref_capability/{track}/{protocol}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import preference as pref

        run_job(pref.build_capability, pref_protocol(wildcards), input.sft, None, output[0], device=config["device"], log=log[0])


rule pref_sft:
    output:
        sft=f"{STAGE}/sft.pt",
        forget=f"{STAGE}/forget.npz",
    params:
        cfg=pref_stage_params("model", "sft"),
        twin=lambda wc: pref_twin(wc),  # the retain-only twin, when an unlearning method runs here
    priority: 20  # a stage gates many runs: start it before independent runs
    log:
        "results/{profile}/logs/pref_sft/{track}/{protocol}/seed{seed}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import preference as pref

        run_job(pref.build_sft, wildcards.track, wildcards.protocol, pref_protocol(wildcards), int(wildcards.seed),
                os.path.dirname(output.sft), device=config["device"], twin=params.twin, log=log[0])


rule pref_sample:
    input:
        sft=pref_sft,
    output:
        f"{STAGE}/samples.npz",
    params:
        cfg=pref_stage_params("pairs", "eval"),
    priority: 20  # a stage gates many runs: start it before independent runs
    log:
        "results/{profile}/logs/pref_sample/{track}/{protocol}/seed{seed}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import preference as pref

        run_job(pref.build_samples, wildcards.track, wildcards.protocol, pref_protocol(wildcards), int(wildcards.seed),
                input.sft, output[0], device=config["device"], log=log[0])


rule pref_label:
    input:
        samples=f"{STAGE}/samples.npz",
    output:
        f"{STAGE}/labels_{{dataset}}.npz",
    params:
        cfg=pref_stage_params("pairs"),
        dataset=lambda wc: datasets.dataset_entry(wc.dataset),
    priority: 20  # a stage gates many runs: start it before independent runs
    log:
        "results/{profile}/logs/pref_label/{track}/{protocol}/seed{seed}/{dataset}.log",
    run:
        from lossbench.tasks import preference as pref  # numpy only: runs in the Snakemake process

        pref.build_labels(wildcards.track, wildcards.protocol, pref_protocol(wildcards), int(wildcards.seed),
                          wildcards.dataset, input.samples, output[0])


rule pref_reward_model:
    input:
        sft=pref_sft,
        samples=f"{STAGE}/samples.npz",
        labels=f"{STAGE}/labels_{{dataset}}.npz",
    output:
        f"{STAGE}/reward_model_{{dataset}}.pt",
    params:
        cfg=pref_stage_params("model", "reward_model"),
    priority: 20  # a stage gates many runs: start it before independent runs
    log:
        "results/{profile}/logs/pref_reward_model/{track}/{protocol}/seed{seed}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import preference as pref

        run_job(pref.build_reward_model, wildcards.track, wildcards.protocol, pref_protocol(wildcards),
                int(wildcards.seed), wildcards.dataset, input.sft, input.samples, input.labels, output[0],
                device=config["device"], log=log[0])


def pref_sample_eval_inputs(wildcards):
    from lossbench.tasks import preference as pref

    run = resolved_run(wildcards)
    return pref.sample_eval_inputs(run, RUN_DIR.format(**wildcards), stage_dir(wildcards, run))


rule pref_sample_eval:
    input:
        unpack(pref_sample_eval_inputs),
    output:
        f"{RUN_DIR}/eval.npz",
    priority: 5
    log:
        "results/{profile}/logs/pref_sample_eval/{track}/{dataset}/{method}/{variant}/seed{seed}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        import numpy as np

        from lossbench import io, runner
        from lossbench.tasks import preference as pref

        failed = lambda: io.write_npz(output[0], ok=np.array(False))  # noqa: E731  (read as "no samples")
        with runner.failing_stage(os.path.dirname(input.info), "pref_sample_eval", log[0], placeholder=failed):
            run_job(pref.sample_eval, resolved_run(wildcards), dict(input.items()), output[0], device=config["device"])


rule pref_capability:
    input:
        unpack(pref_sample_eval_inputs),
    output:
        f"{RUN_DIR}/capability.json",
    log:
        "results/{profile}/logs/pref_capability/{track}/{dataset}/{method}/{variant}/seed{seed}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import preference as pref

        from lossbench import io, runner

        run, run_dir = resolved_run(wildcards), os.path.dirname(input.info)
        with runner.failing_stage(run_dir, "pref_capability", log[0], placeholder=lambda: io.write_json(output[0], {})):
            run_job(pref.build_capability, run["protocol"], input.sft, os.path.join(run_dir, "policy.pt"), output[0],
                    device=config["device"])


rule pref_overopt:
    input:
        sft=pref_sft,
        samples=f"{STAGE}/samples.npz",
        labels=f"{STAGE}/labels_{{dataset}}.npz",
    output:
        f"{STAGE}/overopt_{{dataset}}.csv",
        f"{STAGE}/reward_ensemble_{{dataset}}.pt",  # the members, for the online methods' ensemble rewards
    params:
        cfg=pref_stage_params("model", "reward_model", "overoptimization"),
    log:
        "results/{profile}/logs/pref_overopt/{track}/{protocol}/seed{seed}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import preference as pref

        run_job(pref.build_overopt, wildcards.track, wildcards.protocol, pref_protocol(wildcards), int(wildcards.seed),
                wildcards.dataset, input.sft, input.samples, input.labels, output[0], device=config["device"],
                log=log[0])


def overopt_tables(profile):
    from lossbench.tasks import preference as pref

    return pref.overopt_targets(profile, TRACKS)


rule aggregate_overopt:
    input:
        lambda wc: overopt_tables(wc.profile),
    output:
        "results/{profile}/overopt.csv",
    log:
        "results/{profile}/logs/aggregate_overopt.log",
    run:
        import pandas as pd

        lbio.write_csv(output[0], pd.concat([lbio.read_csv(f) for f in input], ignore_index=True))
