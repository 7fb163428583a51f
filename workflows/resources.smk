# What each job asks its scheduler for, declared once in the rules so the same DAG schedules locally
# and on a cluster:
#   threads  -> local: cores out of --cores;  SLURM: --cpus-per-task
#   mem_mb   -> local: counts only against --resources mem_mb=N;  SLURM: --mem (MB)
#   runtime  -> local: ignored;  SLURM: -t (minutes)
#   gpu      -> local: slots out of --resources gpu=N;  SLURM: --gpus=N (0: no GPU asked for)
# Training jobs run torch on one thread (lossbench.workers), so they ask for one core.
# Cheap rules (numpy over finished artefacts, the tables and the report, downloads, which need the
# network compute nodes often lack) run on the host that runs Snakemake: no queue wait per job.

localrules:
    download_source,
    pref_reference,
    pref_label,
    evaluate_run,
    choose_trial,
    aggregate_results,
    aggregate_kernels,
    build_report,
    build_published_report,
    build_published_site,


# A job of a protocol not listed below: the smoke and CPU-sized protocols, whose jobs take seconds
# to minutes (published CPU runs: at most 5 min per run) and under 1 GB.
SMALL_JOB = {"mem_mb": 4000, "runtime": 60}
# The shipped protocols whose jobs are bigger, on one GPU (estimates from their budgets, to be
# replaced by measured times once a GPU run is published). Unlisted protocols get SMALL_JOB.
PROTOCOL_JOB = {
    # classification: CIFAR ResNet-32, 200 epochs (PGD-10 training for the adversarial methods)
    "resnet32_sgd": {"mem_mb": 16000, "runtime": 24 * 60},
    # grokking: 20k and 100k full-batch steps of a small MLP
    "grok_sc": {"mem_mb": 4000, "runtime": 4 * 60},
    "grok_parity": {"mem_mb": 4000, "runtime": 16 * 60},
    # LM pretraining: the card's T0 (CPU-sized) and T1 (GPT-2 124M, 328M tokens) sizes
    "t0_card": {"mem_mb": 8000, "runtime": 2 * 60},
    "t1_slimpajama": {"mem_mb": 32000, "runtime": 48 * 60},
    # preference: SynthPref at the card's size; SmolLM2-135M with a 0.6B judge and lm-eval
    "synthpref_card": {"mem_mb": 8000, "runtime": 8 * 60},
    "ultrafeedback_smollm2": {"mem_mb": 32000, "runtime": 12 * 60},
}


def _protocol(wildcards):
    """The protocol a job's numbers come from: its own wildcard (stages) or its run's dataset."""
    if "protocol" in wildcards.keys():
        return wildcards.protocol
    return lbconfig.protocol_name(TRACKS[wildcards.track], wildcards.dataset)


def job_mem_mb(wildcards, attempt):
    """Memory (MB) of a stage or run job, by its protocol; a retried job (--retries) asks for more."""
    return PROTOCOL_JOB.get(_protocol(wildcards), SMALL_JOB)["mem_mb"] * attempt


def job_runtime(wildcards, attempt):
    """Wall-time limit (minutes) of a stage or run job, by its protocol; doubled per retry."""
    return PROTOCOL_JOB.get(_protocol(wildcards), SMALL_JOB)["runtime"] * attempt


def all_cores(cluster_cores=8):
    """Every core Snakemake may use (--cores). A cluster run has no --cores: ask for
    `cluster_cores` (the SLURM profile makes such a job --exclusive, so no other job shares its node)."""
    cores = workflow.resource_settings.cores
    return cores if cores else cluster_cores


# prepare_source: a hub corpus is streamed and tokenized (the LM track's T1: 100M tokens);
# generated, packaged and downloaded (CIFAR) sources fit a small job.
HUB_SOURCE_JOB = {"mem_mb": 16000, "runtime": 4 * 60}


def _source_job(wildcards):
    return HUB_SOURCE_JOB if datasets.source_entry(wildcards.source)["kind"] == "hub" else SMALL_JOB


def source_mem_mb(wildcards, attempt):
    return _source_job(wildcards)["mem_mb"] * attempt


def source_runtime(wildcards, attempt):
    return _source_job(wildcards)["runtime"] * attempt
