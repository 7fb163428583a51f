# Seeds trained together (a protocol's `seeds_together: true`; lossbench/train_together.py): the seeds
# of one (track, dataset, method, variant) train as one stacked model in one job, train_together,
# which writes each seed's folder under TOGETHER_DIR; each seed's train_run then copies its folder
# (runner.train_run's twins) instead of training. Runs the stacked trainer refuses (its `why_not`:
# a teacher, adversarial training, BatchNorm, a non-elementwise optimiser), tuned variants and
# single-seed groups train on their own, as do the seeds of a group that failed.
import functools  # noqa: E402

TOGETHER_DIR = "results/{profile}/together/{track}/{dataset}/{method}/{variant}"

_GROUPS = {}
for _t, _d, _m, _v, _s in RUNS:
    _GROUPS.setdefault((_t, _d, _m, _v), []).append(int(_s))


@functools.lru_cache(maxsize=None)
def together_seeds(track, dataset, method, variant):
    """The seeds of the group this run trains in, or () when it trains on its own."""
    from lossbench import methods, tasks
    from lossbench.train_together import why_not

    seeds = tuple(sorted(_GROUPS.get((track, dataset, method, variant), ())))
    if len(seeds) < 2 or tuning.is_tuned(variant):
        return ()
    run = lbconfig.resolve_run(TRACKS[track], dataset, method, seeds[0], variant)
    if not run["protocol"].get("seeds_together") or not hasattr(tasks.get(run["task"]), "train_together_runs"):
        return ()
    return () if why_not(methods.get(method), run["protocol"]) else seeds


def together_input(wildcards):
    """train_run's extra input: its group's index, when it trains in a group."""
    w = wildcards
    if int(w.seed) not in together_seeds(w.track, w.dataset, w.method, w.variant):
        return {}
    return {"together": TOGETHER_DIR.format(**{k: getattr(w, k) for k in ("profile", "track", "dataset", "method",
                                                                          "variant")}) + "/seeds.json"}


def together_runs(wildcards):
    """The resolved runs of a group's seeds (the group job's params: a change reruns it)."""
    w = wildcards
    return [lbconfig.resolve_run(TRACKS[w.track], w.dataset, w.method, s, w.variant)
            for s in together_seeds(w.track, w.dataset, w.method, w.variant)]


def together_train_inputs(wildcards):
    """The group's training inputs: its seeds' (the same files: the prepared source)."""
    from lossbench import tasks

    runs = together_runs(wildcards)
    inputs = [tasks.get(r["task"]).train_inputs(r, stage_dir(wildcards, r), wildcards.profile) for r in runs]
    if any(i != inputs[0] for i in inputs):
        raise WorkflowError(f"{wildcards}: the seeds of a group read different inputs: {inputs}")
    return {**inputs[0], **prepared_sidecars(inputs[0])}


rule train_together:
    input:
        unpack(together_train_inputs),
    output:
        f"{TOGETHER_DIR}/seeds.json",
    params:
        runs=together_runs,
    log:
        "results/{profile}/logs/train_together/{track}/{dataset}/{method}/{variant}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench import runner

        run_job(runner.train_together, params.runs, dict(input.items()), os.path.dirname(output[0]),
                device=config["device"], log_path=log[0])
