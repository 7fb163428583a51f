"""What one Snakemake job does, callable by hand too: prepare a source, train one run, evaluate
one run, aggregate a profile. Every output is written atomically (lossbench.io).

Integrity: each step records the sha256 of what it writes and checks what it reads against the
record (lossbench.io: IntegrityError names the file and both checksums). prepare_source writes
prepared.npz's sidecar; train_run checks its inputs against their sidecars and records its inputs'
and artefacts' checksums in train.json; evaluate_run checks the artefacts and records metrics.csv's,
per_class.csv's and train.json's in run.json; aggregate checks those and writes SHA256SUMS.

Attempts: each train_run and evaluate_run notes its start and end in the run's attempts.jsonl (no
Snakemake output, like failures.jsonl). An attempt that started and never ended (the job was killed,
or raised outside the run: an unusable device, an integrity error) counts as a failure in the run's
retry token (workflows/common.smk), so the next invocation retries it: Snakemake deletes a failed
job's outputs but keeps its metadata, and does not rebuild a missing intermediate file on its own."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Mapping

import pandas as pd
import torch

from lossbench import data
from lossbench import methods
from lossbench import io, tasks

RUN_KEYS = ["track", "dataset", "method", "variant", "seed"]
SUMMARY_COLUMNS = ["track", "track_version", "dataset", "method", "method_version", "variant", "seed", "metric",
                   "value", "run_id", "status"]


def resolve_device(device: str) -> str:
    """The torch device a job uses (lossbench.devices.resolve: never a silent fall-back to the CPU)."""
    from lossbench import devices

    return devices.resolve(device)


def run_logger(path) -> logging.Logger:
    """A logger writing to `path` only; one per run, safe when jobs run as threads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"lossbench.run.{path}")
    logger.handlers.clear()
    logger.propagate = False
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


def prepare_source(source: str, out_path, raw_dir=None) -> None:
    """prepared.npz and its sidecar prepared.npz.sha256, which training checks it against."""
    arrays = data.prepare_source(source, raw_dir=raw_dir)
    io.write_npz(out_path, **arrays)
    io.write_sidecar(out_path)


def check_inputs(inputs: dict) -> dict:
    """{name: sha256} of a run's input files, each checked against what wrote it: a prepared source
    against its sidecar, another run's train.json (a guide) against that run's recorded artefacts.
    IntegrityError on a mismatch: training refuses a file that is not the one that was written."""
    shas = {}
    for name, path in sorted(inputs.items()):
        shas[name] = io.sha256_file(path)
        if not str(path).endswith(io.SIDECAR):
            io.check_sidecar(path, shas[name])
        if Path(path).name == "train.json":
            check_artefacts(Path(path).parent)
    return shas


def artefact_names(task, run: dict, out_dir: Path) -> list[str]:
    """The files (relative to the run folder) a task's train_run writes besides train.json."""
    fn = getattr(task, "artefacts", None)
    return list(fn(run, out_dir)) if fn else list(task.ARTEFACTS)


def check_artefacts(run_dir, info: dict | None = None) -> dict:
    """Check the artefacts a run recorded in train.json (`outputs_sha256`) against the files in
    `run_dir`; returns the record ({} for a train.json written before runs recorded them)."""
    run_dir = Path(run_dir)
    info = io.read_json(run_dir / "train.json") if info is None else info
    recorded = info.get("outputs_sha256") or {}
    io.check_recorded(run_dir, recorded, run_dir / "train.json",
                      f"retrain the run (snakemake --forcerun {run_dir / 'train.json'}) or restore the file")
    return recorded


# the keys of a resolved run that name it without changing what it trains (lossbench.config.resolve_run,
# lossbench.tuning.tuned_run): two runs equal on every other key train the same numbers
NAMING_KEYS = ("variant", "run_id", "tuned_from", "tuning")


def training_signature(run: Mapping) -> dict:
    """What determines a run's training: the resolved run without its naming keys (NAMING_KEYS)."""
    return {k: v for k, v in run.items() if k not in NAMING_KEYS}


def _twin(run: dict, twins) -> dict | None:
    """The train.json of the first twin (an earlier final variant of the same seed) that trained exactly
    this run's signature and finished (ok or diverged: both are results); None when none did."""
    mine = json.loads(json.dumps(training_signature(run), default=str))  # as train.json stores it
    for path in twins or ():
        if not Path(path).exists():  # a group of seeds trained together that failed: train alone
            continue
        info = io.read_json(path)
        if info.get("status") in ("ok", "diverged") and {k: info.get(k) for k in mine} == mine:
            return {**info, "path": str(path)}
    return None


def _copy_twin(run: dict, twin: dict, out_dir: Path, task, log) -> tuple[dict, dict]:
    """(result, outputs_sha256) of `run` from its twin's artefacts, copied (and checked) into out_dir:
    the same training, so the same numbers, without training again."""
    import shutil

    src = Path(twin["path"]).parent
    check_artefacts(src, twin)  # a twin edited since it trained is no source
    for name in twin["outputs_sha256"]:
        if name.endswith(".csv"):  # tidy rows (curves.csv) name their run: this one's variant, not the twin's
            table = io.read_csv(src / name)
            if "variant" in table:
                table["variant"] = run["variant"]
            io.write_csv(out_dir / name, table)
        else:
            shutil.copy2(src / name, out_dir / name)
    if "trained_together" in twin:
        log.info(f"trained together with seeds {twin['trained_together']['seeds']} ({src}): its artefacts copied")
    else:
        log.info(f"same training as {twin['variant']} (run {twin['run_id']}): its artefacts copied, not retrained")
    runner_keys = {"wall_seconds", "inputs", "inputs_sha256", "outputs_sha256", "versions", "git_commit",
                   "git_dirty", "torch_threads", "path", *NAMING_KEYS}
    result = {k: v for k, v in twin.items() if k not in run and k not in runner_keys}
    result["copied_from"] = {"variant": twin["variant"], "run_id": twin["run_id"], "path": str(src)}
    return result, {name: io.sha256_file(out_dir / name) for name in artefact_names(task, run, out_dir)}


def train_run(run: dict, inputs: dict, out_dir, device: str = "cpu", log_path=None, twins=()) -> dict:
    """Train `run` (from lossbench.config.resolve_run) on `inputs` ({name: path}, the task's
    `train_inputs`) with its task's trainer; the task writes its artefacts (e.g. predictions.npz,
    curves.csv) and this writes train.json with provenance and the inputs' checksums.

    `twins`: train.json paths of runs that may have trained the same thing (a tuned track's earlier
    final variants of this seed, whose choice was the same trial): the first with this run's
    training_signature is copied (`copied_from` in train.json, with the copy's own seconds; wall_seconds
    stays the training's) instead of training twice. Every seed a run draws comes from its signature,
    not its name, so the copy is what training would give.

    A run that raises (a bug, CUDA out of memory) is a result, not a crash: it is recorded as
    `failed` (record_failure) and the DAG goes on."""
    out_dir = Path(out_dir)
    begin_attempt(out_dir, "train_run")
    log_path = Path(log_path or out_dir / "train.log")
    log = run_logger(log_path)
    device = resolve_device(device)  # an unusable device is the profile's error, not this run's: it stops the job
    inputs_sha256 = check_inputs(inputs)  # so is a changed input: training refuses it
    t0 = time.perf_counter()
    try:
        _injected_failure(run)
        log.info(f"run {run['run_id']}: {run['track']}/{run['dataset']}/{run['method']}/{run['variant']}/seed{run['seed']} on {device}")
        task = tasks.get(run["task"])
        twin = _twin(run, twins)
        if twin:
            result, outputs_sha256 = _copy_twin(run, twin, out_dir, task, log)
        else:
            result = task.train_run(run, inputs, out_dir, device, log)
            outputs_sha256 = {name: io.sha256_file(out_dir / name) for name in artefact_names(task, run, out_dir)}
    except Exception as exc:
        log.exception(f"run failed: {type(exc).__name__}: {exc}")
        return record_failure(run, out_dir, exc, log_path, wall=time.perf_counter() - t0)
    wall = time.perf_counter() - t0
    if "copied_from" in result:  # the run's cost is its training's (the twin's); the copy's beside it
        result["copied_from"]["copy_seconds"], wall = wall, twin["wall_seconds"]
    info = _train_info(run, result, wall, device, inputs, inputs_sha256, outputs_sha256)
    io.write_json(out_dir / "train.json", info)
    end_attempt(out_dir, "train_run")
    log.info(f"done: {result['status']}, {wall:.2f} s")
    return info


def _train_info(run: dict, result: dict, wall: float, device: str, inputs: dict, inputs_sha256: dict,
                outputs_sha256: dict) -> dict:
    """A run's train.json: the resolved run, its result and its provenance."""
    from lossbench import devices

    return {
        **run, **result, "wall_seconds": wall, **devices.describe(device),
        "torch_threads": torch.get_num_threads(),
        "inputs": {k: str(p) for k, p in sorted(inputs.items())}, "inputs_sha256": inputs_sha256,
        "outputs_sha256": outputs_sha256,
        "versions": io.package_versions(), **io.git_state(Path(__file__).parent),
    }


TOGETHER_INDEX = "seeds.json"


def train_together(runs: list[dict], inputs: dict, group_dir, device: str = "cpu", log_path=None) -> dict:
    """Train the seeds `runs` of one (track, dataset, method, variant) as one stacked model (the
    task's `train_together_runs`; classification) into group_dir/seed<k>/, each folder what
    train_run would write (train.json with `trained_together`), and group_dir/seeds.json.

    The seeds' own train_run jobs then take these as twins (train_run's `twins`: same training
    signature, so their artefacts are copied, not trained again). A group that raises records the
    error in seeds.json and leaves no seed folder: each seed then trains on its own."""
    group_dir = Path(group_dir)
    log_path = Path(log_path or group_dir / "train.log")
    log = run_logger(log_path)
    device = resolve_device(device)
    inputs_sha256 = check_inputs(inputs)
    seeds = [r["seed"] for r in runs]
    out_dirs = [group_dir / f"seed{s}" for s in seeds]
    t0 = time.perf_counter()
    try:
        first = runs[0]
        log.info(f"{first['track']}/{first['dataset']}/{first['method']}/{first['variant']}: seeds {seeds} "
                 f"trained together on {device}")
        _injected_failure(first, seed="together")
        task = tasks.get(first["task"])
        for d in out_dirs:
            d.mkdir(parents=True, exist_ok=True)
        results = task.train_together_runs(runs, inputs, out_dirs, device, [log] * len(runs))
    except Exception as exc:
        log.exception(f"seeds trained together failed ({type(exc).__name__}: {exc}); each trains on its own")
        index = {"seeds": seeds, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        io.write_json(group_dir / TOGETHER_INDEX, index)
        return index
    wall = time.perf_counter() - t0
    for run, result, out in zip(runs, results, out_dirs):
        result = {**result, "trained_together": {"seeds": seeds, "wall_seconds": wall}}
        outputs_sha256 = {name: io.sha256_file(out / name) for name in artefact_names(task, run, out)}
        io.write_json(out / "train.json", _train_info(run, result, wall / len(runs), device, inputs, inputs_sha256,
                                                      outputs_sha256))
    index = {"seeds": seeds, "status": "ok", "wall_seconds": wall,
             "runs": {f"seed{s}": r["status"] for s, r in zip(seeds, results)}}
    io.write_json(group_dir / TOGETHER_INDEX, index)
    log.info(f"done: {len(runs)} seeds in {wall:.2f} s")
    return index


def _injected_failure(run: dict, seed: str | None = None) -> None:
    """Fault injection for testing the failure path end to end: LOSSBENCH_FAIL_RUNS holds
    comma-separated globs over `track/dataset/method/variant/seed<k>` (a group of seeds trained
    together: `.../<variant>/together`, `seed`); a matching run raises."""
    import fnmatch
    import os

    name = "/".join(str(run[k]) for k in ("track", "dataset", "method", "variant")) + f"/{seed or 'seed' + str(run['seed'])}"
    for pattern in filter(None, os.environ.get("LOSSBENCH_FAIL_RUNS", "").split(",")):
        if fnmatch.fnmatchcase(name, pattern.strip()):
            raise RuntimeError(f"failure injected by LOSSBENCH_FAIL_RUNS={pattern.strip()!r}")


FAILURES = "failures.jsonl"  # a run's failure history; not a Snakemake output, so a rerun keeps it
ATTEMPTS = "attempts.jsonl"  # when each train_run / evaluate_run of the run started and ended; idem


def _read_jsonl(path) -> list[dict]:
    try:
        with open(path) as f:
            lines = [line for line in f if line.strip()]
    except FileNotFoundError:
        return []
    try:
        return [json.loads(line) for line in lines]
    except json.JSONDecodeError as e:
        raise io.CorruptFile(path, f"JSONDecodeError: {e}") from None


def recorded_failures(run_dir) -> list[dict]:
    """The failures the run recorded itself (failures.jsonl), oldest first."""
    return _read_jsonl(Path(run_dir) / FAILURES)


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _note_attempt(run_dir, stage: str, event: str) -> None:
    path = Path(run_dir) / ATTEMPTS
    lines = [json.dumps(a, sort_keys=True) + "\n" for a in _read_jsonl(path)]
    io.write_text(path, "".join(lines) + json.dumps({"stage": stage, "event": event, "at": _now()}) + "\n")


def begin_attempt(run_dir, stage: str) -> None:
    _note_attempt(run_dir, stage, "start")


def end_attempt(run_dir, stage: str) -> None:
    _note_attempt(run_dir, stage, "end")


def interrupted_attempts(run_dir, stage: str) -> list[dict]:
    """The attempts of `stage` that started and never ended (killed, or raised outside the run)."""
    out, open_ = [], None
    for a in _read_jsonl(Path(run_dir) / ATTEMPTS):
        if a.get("stage") != stage:
            continue
        if a["event"] == "start":
            if open_ is not None:
                out.append(open_)
            open_ = a
        elif a["event"] == "end":
            open_ = None
    return out + ([open_] if open_ is not None else [])


def attempt_open(run_dir, stage: str) -> bool:
    """Whether the last attempt of `stage` started and never ended (the next invocation retries it)."""
    events = [a["event"] for a in _read_jsonl(Path(run_dir) / ATTEMPTS) if a.get("stage") == stage]
    return bool(events) and events[-1] == "start"


def failure_history(run_dir, stage: str = "train_run") -> list[dict]:
    """Every failure of the run in `run_dir`, oldest first ([] if it never failed): those it
    recorded (train_run only) and its interrupted `stage` attempts, which recorded nothing."""
    recorded = recorded_failures(run_dir) if stage == "train_run" else []
    interrupted = [{"failed_at": a["at"], "error": {"type": "Interrupted", "stage": stage,
                                                    "message": "started and never finished (killed, or raised outside the run)"}}
                   for a in interrupted_attempts(run_dir, stage)]
    return sorted(recorded + interrupted, key=lambda h: h.get("failed_at", ""))


def retry_token(run_dir, stage: str = "train_run") -> str:
    """A param of the `stage` rule that changes each time the stage fails in the run (see
    workflows/common.smk: retry_token): the next invocation reruns exactly those."""
    n = len(failure_history(run_dir, stage))
    return f"retry after {n} failed attempts" if n else ""


def _failure(stage: str, exc: BaseException, log_path) -> dict:
    from datetime import datetime, timezone

    return {"status": "failed", "error": {"type": type(exc).__name__, "message": str(exc), "stage": stage},
            "log": str(log_path), "failed_at": datetime.now(timezone.utc).isoformat(timespec="microseconds")}


def _write_failure(run_dir: Path, info: dict) -> dict:
    """train.json says failed; the failure joins the run's history (failures.jsonl), whose length is
    a param of train_run (workflows/common.smk: retry_token), so the next invocation retries the run."""
    io.write_json(run_dir / "train.json", info)
    history = recorded_failures(run_dir) + [{k: info[k] for k in ("failed_at", "error", "log")}]
    io.write_text(run_dir / FAILURES, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))
    err = info["error"]
    print(f"lossbench: run {run_dir} FAILED in {err['stage']} ({err['type']}: {err['message'].splitlines()[0]}); "
          f"recorded as failed, traceback in {info['log']}", file=sys.stderr, flush=True)
    return info


def record_failure(run: dict, out_dir, exc: BaseException, log_path, wall: float = float("nan")) -> dict:
    """train.json of a run whose training raised: status `failed`, the exception's type and message,
    and the log holding its traceback. Whatever the run wrote is discarded (its curves are emptied,
    evaluation reads no artefact of a failed run), so nothing half-written is read as a result."""
    out_dir = Path(out_dir)
    keys = {k: run[k] for k in RUN_KEYS}
    io.write_csv(out_dir / "curves.csv", pd.DataFrame(columns=[*keys, "step", "metric", "value"]))
    info = _write_failure(out_dir, {**run, **_failure("train_run", exc, log_path), "wall_seconds": wall,
                                    "outputs_sha256": {"curves.csv": io.sha256_file(out_dir / "curves.csv")},
                                    "versions": io.package_versions(), **io.git_state(Path(__file__).parent)})
    end_attempt(out_dir, "train_run")
    return info


@contextlib.contextmanager
def failing_stage(run_dir, stage: str, log_path, placeholder=None):
    """For a run's jobs after training (sampling, capability scores, evaluation): an exception marks
    the trained run failed instead of stopping the DAG, with the traceback appended to `log_path`;
    `placeholder()` then writes the job's outputs, which nothing reads as a result."""
    try:
        yield
    except Exception as exc:
        with open(log_path, "a") as f:
            f.write(traceback.format_exc())
        run_dir = Path(run_dir)
        _write_failure(run_dir, {**io.read_json(run_dir / "train.json"), **_failure(stage, exc, log_path)})
        if placeholder is not None:
            placeholder()


def evaluate_run(run_dir, log_path=None) -> pd.DataFrame:
    """Shared metrics of a trained run (its task's); writes metrics.csv, per_class.csv and run.json.
    An evaluation that raises marks the run failed (failing_stage), like a training that raises."""
    run_dir = Path(run_dir)
    begin_attempt(run_dir, "evaluate_run")
    info = io.read_json(run_dir / "train.json")
    check_artefacts(run_dir, info)  # a changed artefact is an error, not a result: it stops the job
    read = _eval_artefacts(run_dir, info)  # what a later stage wrote into the run folder (eval.npz)
    read_sha256 = {name: io.sha256_file(run_dir / name) for name in read}
    values, per_class = {}, None  # a failed run: no artefact is read, its one row carries the status
    if info["status"] != "failed":
        with failing_stage(run_dir, "evaluate_run", log_path or run_dir / "evaluate.log"):
            values, per_class = tasks.get(info["task"]).evaluate_run(run_dir, info)
    info = io.read_json(run_dir / "train.json")
    values["train/wall_seconds"] = info["wall_seconds"]
    rows = [{**{k: info[k] for k in SUMMARY_COLUMNS if k in info}, "metric": m, "value": v}
            for m, v in values.items()]
    metrics = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    io.write_csv(run_dir / "metrics.csv", metrics)
    io.write_csv(run_dir / "per_class.csv", per_class if per_class is not None else pd.DataFrame())
    evaluation = {name: io.sha256_file(run_dir / name) for name in ("metrics.csv", "per_class.csv", "train.json")}
    io.write_json(run_dir / "run.json", {**info, "metrics": values, "evaluation_sha256": {**read_sha256, **evaluation}})
    end_attempt(run_dir, "evaluate_run")
    return metrics


def _eval_artefacts(run_dir: Path, info: dict) -> list[str]:
    """Files of the run folder that evaluation reads besides train.json's artefacts (the task's
    `eval_artefacts`, e.g. the preference track's eval.npz), where present."""
    if info.get("task") not in tasks.TASKS:
        return []
    fn = getattr(tasks.get(info["task"]), "eval_artefacts", None)
    return [n for n in (fn(info) if fn else []) if (run_dir / n).exists()]


def check_evaluation(run_dir, run: dict | None = None, only=None) -> dict:
    """Check the files a run's evaluation recorded in run.json (`evaluation_sha256`: metrics.csv,
    per_class.csv, train.json and what it read) and the train.json artefacts it copied (`only`: just
    these names); returns run.json."""
    run_dir = Path(run_dir)
    run = io.read_json(run_dir / "run.json") if run is None else run
    pick = lambda rec: {k: v for k, v in (rec or {}).items() if only is None or k in only}  # noqa: E731
    hint = f"re-evaluate the run (snakemake --forcerun {run_dir / 'run.json'}) or restore the file"
    io.check_recorded(run_dir, pick(run.get("evaluation_sha256")), run_dir / "run.json", hint)
    io.check_recorded(run_dir, pick(run.get("outputs_sha256")), run_dir / "run.json",
                      f"retrain the run (snakemake --forcerun {run_dir / 'train.json'}) or restore the file")
    return run


AGGREGATED = ("metrics.csv", "curves.csv", "per_class.csv")  # what aggregate reads of a run, besides run.json


def _read_optional_csv(path) -> pd.DataFrame:
    """A table a task may leave empty (e.g. per-class results outside classification)."""
    return io.read_csv(path, empty_ok=True)


TIDY_FILES = ("summary.csv", "curves.csv", "per_class.csv", "runs.json", "methods.json", "provenance.json")
GZIPPED = tuple(n for n in TIDY_FILES if n.endswith(".csv"))  # a published set stores these as <name>.gz


def aggregate(run_dirs, out_dir, provenance: dict) -> None:
    """Merge runs into the tidy tables the report reads; checks one row per key."""
    out_dir = Path(out_dir)
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:  # a profile of benchmark tracks only: empty tables, so the report still builds
        for name, columns in (("summary", SUMMARY_COLUMNS), ("curves", ["track", "dataset", "method", "seed"]),
                              ("per_class", ["track", "dataset", "method", "seed"])):
            io.write_csv(out_dir / f"{name}.csv", pd.DataFrame(columns=columns))
        io.write_json(out_dir / "runs.json", [])
        io.write_json(out_dir / "methods.json", {})
        io.write_json(out_dir / "provenance.json", provenance)
        io.write_manifest(out_dir, TIDY_FILES)
        return
    records = {d: check_evaluation(d, only=AGGREGATED) for d in run_dirs}  # every file read below is the one recorded
    summary = pd.concat([io.read_csv(d / "metrics.csv") for d in run_dirs], ignore_index=True)
    dup = summary.duplicated(RUN_KEYS + ["metric"])
    if dup.any():
        raise RuntimeError(f"duplicate result rows: {summary[dup].head()}")
    curves = pd.concat([io.read_csv(d / "curves.csv") for d in run_dirs], ignore_index=True)
    per_class = pd.concat([_read_optional_csv(d / "per_class.csv") for d in run_dirs], ignore_index=True)
    runs = []
    for d in run_dirs:
        r = records[d]
        runs.append({**{k: r.get(k) for k in RUN_KEYS + ["status", "hparams", "method_version", "track_version",
                                                          "run_id", "wall_seconds", "device", "host", "protocol_name",
                                                          "error", "log"]},
                     **{k: r[k] for k in ("tuned_from", "tuning") if k in r}})  # a tuned run's choice
    registry = {name: methods.get(name) for name in sorted({r["method"] for r in runs})}
    method_meta = {n: {"kind": s.kind, "paper": s.paper, "url": s.url, "docs": s.docs_path, "summary": s.summary,
                       "version": s.version, "defaults": dict(s.defaults)} for n, s in registry.items()}
    io.write_csv(out_dir / "summary.csv", summary)
    io.write_csv(out_dir / "curves.csv", curves)
    io.write_csv(out_dir / "per_class.csv", per_class)
    io.write_json(out_dir / "runs.json", runs)
    io.write_json(out_dir / "methods.json", method_meta)
    io.write_json(out_dir / "provenance.json", provenance)
    io.write_manifest(out_dir, TIDY_FILES)  # lossbench verify re-checks the tables against it


def aggregate_kernels(slice_csvs, out_csv, out_json, baselines: dict) -> None:
    """One tidy table of every benchmark slice (bench track name in `track`) and their provenance:
    {"baselines": {track: {bench: impl}}, "slices": {track: {slice: the slice's .json}}}."""
    frames, meta = [], {}
    for path in map(Path, slice_csvs):
        track = path.parent.name
        frames.append(pd.read_csv(path).assign(track=track))
        meta.setdefault(track, {})[path.stem] = io.read_json(path.with_suffix(".json"))
    table = pd.concat(frames, ignore_index=True)
    io.write_csv(out_csv, table[["track", *[c for c in table.columns if c != "track"]]])
    io.write_json(out_json, {"baselines": baselines, "slices": meta})


def provenance(cfg: dict, tracks: dict, command: str, runs) -> dict:
    """What the report prints at the bottom: command, commit, versions, hardware, and exactly
    which datasets and budgets each track's numbers come from (only those in `runs`), and the
    profile's evidence level (config.evidence_level: what the claims table may conclude from it)."""
    from datetime import datetime, timezone

    from lossbench import config as lbconfig

    described = {}
    for name, track in tracks.items():
        ran = {r[1] for r in runs if r[0] == name}
        protocols = {p: proto for p, proto in track["protocols"].items() if ran & set(proto["datasets"])}
        described[name] = {
            "task": track["task"], "version": track["version"], "baseline": track["baseline"], "seeds": track["seeds"],
            "datasets": {d: data.describe(d) for p in protocols.values() for d in p["datasets"] if d in ran},
            "budget": {p: {k: v for k, v in proto.items() if k != "datasets"} for p, proto in protocols.items()},
            **({"optimizer_axis": track["optimizer_axis"]} if "optimizer_axis" in track else {}),
        }
    return {
        "profile": cfg["profile"], "evidence": lbconfig.evidence_level(cfg), "command": command,
        **io.git_state(Path(__file__).parent),
        "versions": io.package_versions(), "hardware": io.hardware(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tracks": described,
    }
