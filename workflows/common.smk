# Config validation and the helpers every rule uses. Rules only wire things together; the logic
# lives in lossbench/, methods/ and data/.
import atexit
import contextlib
import os
import sys
import threading
import traceback

from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)

from lossbench import data as datasets  # noqa: E402  (the repository's dataset recipes)
from lossbench import config as lbconfig  # noqa: E402
from lossbench import io as lbio  # noqa: E402

# lossbench's checks first, before any job: the same schema plus valid keys, close names, the dataset
# registry and every run's resolved protocol; a broken config stops here with one line naming the
# profile file (no traceback).
_CONFIG_WHERE = str(workflow.overwrite_configfiles[-1]) if workflow.overwrite_configfiles else "config/smoke.yaml"
try:
    if not config:
        raise lbconfig.ConfigError(f"{_CONFIG_WHERE}: the profile is empty")
    for _f in workflow.overwrite_configfiles:  # what Snakemake's reader lets pass: a key given twice
        lbconfig.read_yaml(_f, "profile")
    lbconfig.check_overrides(config, workflow.config_settings.config, _CONFIG_WHERE)  # subsets need profile=NAME
    lbconfig.validate_schema(config, "config", _CONFIG_WHERE)
    TRACKS = lbconfig.load_tracks(config, _CONFIG_WHERE)
    BENCHES = lbconfig.load_benchmarks(config, _CONFIG_WHERE)
    # subset keys (only_tracks, datasets, methods, seeds, method_hparams): lbconfig.select
    TRACKS, BENCHES = lbconfig.select(config, TRACKS, BENCHES, _CONFIG_WHERE)
    RUNS = lbconfig.runs(TRACKS, config.get("datasets"), config.get("methods"))
except lbconfig.ConfigError as _e:
    raise WorkflowError(f"config error: {_e}")
except Exception as _e:  # a config the checks missed: still one line, not a traceback
    raise WorkflowError(f"config error: {_CONFIG_WHERE}: {type(_e).__name__}: {_e} (please report it)")
validate(config, os.path.join(workflow.basedir, "config/schema/config.schema.yaml"))
for _track in TRACKS.values():  # (benchmark tracks were validated by load_benchmarks)
    validate(_track, os.path.join(workflow.basedir, "config/schema/track.schema.yaml"))
PROFILE = config["profile"]


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


_DEVICE_POOL = {}  # built on first use (lossbench.devices.pool_for); jobs are threads or processes
_DEVICE_POOL_LOCK = threading.Lock()


def device_pool():
    with _DEVICE_POOL_LOCK:
        if "pool" not in _DEVICE_POOL:
            from lossbench import devices

            _DEVICE_POOL["pool"] = devices.pool_for(config, os.path.join(".snakemake", "lossbench_device_slots"))
        return _DEVICE_POOL["pool"]


def run_job(fn, *args, log=None, **kwargs):
    """Call a lossbench entry point for a job. Jobs running as threads of the Snakemake process
    (smoke profile) go to a pool of worker processes (lossbench.workers) to escape the GIL (LOSSBENCH_WORKERS sets their number,
    default --cores); otherwise the job is its own process.

    A job given a `device` on a GPU profile holds a slot of the local device pool while it runs and
    trains on that slot's `cuda:<i>` (lossbench.devices; none under SLURM, which binds GPUs itself).
    A job that raises writes its full traceback to `log` before Snakemake reports it."""
    pool = device_pool() if kwargs.get("device", "cpu") != "cpu" else None
    try:
        with pool.acquire() if pool else contextlib.nullcontext() as slot:
            if slot is not None:
                kwargs["device"] = f"cuda:{slot.device}"
            # Snakemake passes --force-use-threads to every job process it spawns (local process
            # jobs, SLURM steps): only the main process's threads need the pool
            if workflow.execution_settings.use_threads and workflow.is_main_process:
                from lossbench import workers

                return workers.call(fn, *args, workers=int(os.environ.get("LOSSBENCH_WORKERS", workflow.cores)),
                                    **kwargs)
            import torch

            torch.set_num_threads(1)
            return fn(*args, **kwargs)
    except Exception:
        if log:
            with open(log, "a") as f:
                f.write(traceback.format_exc())
        raise


def retry_token(wildcards):
    """A param of train_run that changes each time the run fails, so that Snakemake's params trigger
    reruns exactly the failed runs on the next invocation: the number of failures in the run's
    failure history (failures.jsonl, which Snakemake never deletes: it is no declared output)."""
    from lossbench import runner

    return runner.retry_token(RUN_DIR.format(**wildcards))


def failed_runs(profile):
    """(run dir, error, log) of every run of the profile whose train.json says it failed."""
    out = []
    for d in run_dirs(profile):
        try:
            info = lbio.read_json(f"{d}/train.json")
        except (FileNotFoundError, ValueError):
            continue
        if info.get("status") == "failed":
            out.append((d, f"{info['error']['type']}: {info['error']['message']}", info.get("log", "?")))
    return out


def report_failed_runs(profile):
    """The last lines of a DAG run (printed at exit, after Snakemake's own summary): how many runs
    failed, why, where their tracebacks are, and how to retry just those (the same command:
    retry_token makes Snakemake rerun them)."""
    failed = failed_runs(profile)
    if not failed:
        return
    lines = [f"lossbench: {len(failed)} of {len(RUNS)} runs failed (recorded as failed; the report marks them):"]
    lines += [f"  {d}: {err.splitlines()[0] if err else ''} (traceback: {log})" for d, err, log in failed[:20]]
    if len(failed) > 20:
        lines.append(f"  ... and {len(failed) - 20} more (the report's 'Failed runs' section lists all)")
    lines.append("lossbench: rerun the same snakemake command to retry just these runs.")
    atexit.register(print, "\n".join(lines), file=sys.stderr, flush=True)
