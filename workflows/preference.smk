# Preference track stages (lossbench/tasks/preference.py): per (track, protocol, seed)
#   sft -> sample -> label(dataset) [-> reward_model(dataset)]
# then train_run (train.smk) -> pref_sample_eval -> evaluate_run (evaluate.smk).
STAGE = "results/{profile}/stages/{track}/{protocol}/seed{seed}"


def pref_protocol(wildcards):
    return TRACKS[wildcards.track]["protocols"][wildcards.protocol]


def pref_stage_params(*keys):
    """The protocol entries a stage depends on, as params: editing them reruns the stage."""
    return lambda wc: {k: pref_protocol(wc)[k] for k in keys}


rule pref_sft:
    output:
        sft=f"{STAGE}/sft.pt",
        forget=f"{STAGE}/forget.npz",
    params:
        cfg=pref_stage_params("model", "sft"),
    log:
        "results/{profile}/logs/pref_sft/{track}/{protocol}/seed{seed}.log",
    resources:
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import preference as pref

        run_job(pref.build_sft, wildcards.track, wildcards.protocol, pref_protocol(wildcards), int(wildcards.seed),
                os.path.dirname(output.sft), device=config["device"])


rule pref_sample:
    input:
        sft=f"{STAGE}/sft.pt",
    output:
        f"{STAGE}/samples.npz",
    params:
        cfg=pref_stage_params("pairs", "eval"),
    log:
        "results/{profile}/logs/pref_sample/{track}/{protocol}/seed{seed}.log",
    resources:
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import preference as pref

        run_job(pref.build_samples, wildcards.track, wildcards.protocol, pref_protocol(wildcards), int(wildcards.seed),
                input.sft, output[0], device=config["device"])


rule pref_label:
    input:
        samples=f"{STAGE}/samples.npz",
    output:
        f"{STAGE}/labels_{{dataset}}.npz",
    params:
        cfg=pref_stage_params("pairs"),
        dataset=lambda wc: datasets.dataset_entry(wc.dataset),
    log:
        "results/{profile}/logs/pref_label/{track}/{protocol}/seed{seed}/{dataset}.log",
    run:
        from lossbench.tasks import preference as pref  # numpy only: runs in the Snakemake process

        pref.build_labels(wildcards.track, wildcards.protocol, pref_protocol(wildcards), int(wildcards.seed),
                          wildcards.dataset, input.samples, output[0])


rule pref_reward_model:
    input:
        sft=f"{STAGE}/sft.pt",
        samples=f"{STAGE}/samples.npz",
        labels=f"{STAGE}/labels_{{dataset}}.npz",
    output:
        f"{STAGE}/reward_model_{{dataset}}.pt",
    params:
        cfg=pref_stage_params("model", "reward_model"),
    log:
        "results/{profile}/logs/pref_reward_model/{track}/{protocol}/seed{seed}/{dataset}.log",
    resources:
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import preference as pref

        run_job(pref.build_reward_model, wildcards.track, wildcards.protocol, pref_protocol(wildcards),
                int(wildcards.seed), wildcards.dataset, input.sft, input.samples, input.labels, output[0],
                device=config["device"])


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
    resources:
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench.tasks import preference as pref

        run_job(pref.sample_eval, resolved_run(wildcards), dict(input.items()), output[0], device=config["device"])
