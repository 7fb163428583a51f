# Config validation and the helpers every rule uses. Rules only wire things together; the logic
# lives in lossbench/, methods/ and data/.
import os
import sys

from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)

import data as datasets  # noqa: E402  (the repository's dataset recipes)
from lossbench import config as lbconfig  # noqa: E402

try:  # lossbench's checks first: same schema, plus valid keys and close names in the message
    lbconfig.validate_schema(config, "config", "config")
    TRACKS = lbconfig.load_tracks(config)
    BENCHES = lbconfig.load_benchmarks(config)
except lbconfig.ConfigError as _e:
    raise WorkflowError(f"config error: {_e}")
validate(config, os.path.join(workflow.basedir, "config/schema/config.schema.yaml"))
for _track in TRACKS.values():  # (benchmark tracks were validated by load_benchmarks)
    validate(_track, os.path.join(workflow.basedir, "config/schema/track.schema.yaml"))
PROFILE = config["profile"]
RUNS = lbconfig.runs(TRACKS, config.get("datasets"))


wildcard_constraints:
    profile="[a-z0-9_]+",
    track="[a-z0-9_]+",
    dataset="[a-z0-9_]+",
    method="[a-z0-9_]+",
    variant=r"[a-z0-9_.\-+]+",
    protocol="[a-z0-9_]+",
    source="[a-z0-9_]+",
    seed=r"\d+",
    bench="[a-z0-9_]+",
    slice="[a-z0-9_]+",


def source_archive(wildcards):
    entry = datasets.source_entry(wildcards.source)
    if entry["kind"] != "download":
        return []
    return f"resources/downloads/{wildcards.source}/{entry['archive']}"


def resolved_run(wildcards):
    return lbconfig.resolve_run(TRACKS[wildcards.track], wildcards.dataset, wildcards.method, int(wildcards.seed),
                                wildcards.variant)


RUN_DIR = "results/{profile}/runs/{track}/{dataset}/{method}/{variant}/seed{seed}"


def run_dirs(profile):
    return [f"results/{profile}/runs/{t}/{d}/{m}/{v}/seed{s}" for t, d, m, v, s in RUNS]


def stage_dir(wildcards, run):
    """Where a task's per-seed stages (e.g. the preference track's SFT model and samples) live."""
    return f"results/{wildcards.profile}/stages/{run['track']}/{run['protocol_name']}/seed{run['seed']}"


def train_inputs(wildcards):
    """The files a run trains from, named by its task (classification: the prepared source)."""
    from lossbench import tasks

    run = resolved_run(wildcards)
    return tasks.get(run["task"]).train_inputs(run, stage_dir(wildcards, run), wildcards.profile)


def eval_inputs(wildcards):
    """Extra files evaluation reads besides train.json (preference: the sample_eval stage)."""
    from lossbench import tasks

    run = resolved_run(wildcards)
    return tasks.get(run["task"]).eval_inputs(run, RUN_DIR.format(**wildcards), stage_dir(wildcards, run))


def run_job(fn, *args, **kwargs):
    """Call a lossbench entry point for a job. Jobs running as threads (smoke profile) go to a pool
    of worker processes (lossbench.workers) to escape the GIL (LOSSBENCH_WORKERS sets their number,
    default --cores); otherwise the job is its own process."""
    if workflow.execution_settings.use_threads:
        from lossbench import workers

        return workers.call(fn, *args, workers=int(os.environ.get("LOSSBENCH_WORKERS", workflow.cores)), **kwargs)
    import torch

    torch.set_num_threads(1)
    return fn(*args, **kwargs)
