"""Equal-budget tuning: one protocol for every track, every method (the baseline included) gets the
same number of trials (a track's `tuning:` key, config/schema/track.schema.yaml).

  trials()      {trial00: point, ...}: exactly `trials` points per method. trial00 is what the track
                runs by default (the method's defaults, the protocol's own lr); the others are drawn
                from the method's MethodSpec.search plus the track's shared `search` by a numpy
                Generator seeded from (tuning seed, track, method): the same on every machine.
  choose()      the trial with the best mean validation metric (the task's SELECTION) over the
                tuning seeds: most seeds with a finite value first, then the mean; ties to the
                first trial. Also the spread over trials and the hyperparameters on the edge of
                their range (the range may be too narrow).
  write_choice  the DAG rule choose_trial: reads the trials' evaluated metrics (checked against
                their run.json) and writes results/<profile>/tuning/<track>/<dataset>/<method>.json.
  tuned_run()   the final config of a `tuned` run, resolved inside its job from the choice file
                (its sha256 recorded as `tuned_from`; run_id recomputed).

DAG: trial runs (variants trial00.., tuning seeds) -> choose_trial -> `tuned` runs (final seeds) ->
evaluate_run -> aggregate_results; the report shows only the `tuned` rows and a tuning table.
"""
from __future__ import annotations

import itertools
import math
import re

import numpy as np

from lossbench import config as lbconfig
from lossbench import methods
from lossbench.seeding import derive_seed

KINDS = ("choice", "uniform", "log_uniform")  # search kinds (MethodSpec.search, a track's tuning/search)
TUNED = "tuned"  # the variant trained on the final seeds with the chosen trial
EDGE = 0.05  # a continuous value within this fraction of its range (log range for log_uniform) of a bound is on the edge
_TRIAL = re.compile(r"^trial\d{2,}$")


def trial_slug(i: int) -> str:
    return f"trial{i:02d}"


def is_trial(variant: str) -> bool:
    return bool(_TRIAL.match(str(variant)))


def settings(track: dict, dataset: str | None = None) -> dict | None:
    """The `tuning` block that applies to `dataset` (its protocol's own, else the track's), or None."""
    if dataset is not None:
        track = lbconfig.protocol_track(track, lbconfig.protocol_name(track, dataset))
    return track.get("tuning")


def space(track: dict, method: str, dataset: str | None = None) -> dict[str, tuple]:
    """{hyperparameter: (kind, *args)}: the method's own search (less what the track fixes in
    method_hparams) and the shared search, which wins on a shared key."""
    fixed = track.get("method_hparams", {}).get(method, {})
    own = {k: tuple(v) for k, v in methods.get(method).search.items() if k not in fixed}
    shared = {k: tuple(v) for k, v in ((settings(track, dataset) or {}).get("search") or {}).items()}
    return dict(sorted({**own, **shared}.items()))


def check_space(sp: dict[str, tuple]) -> None:
    """ValueError naming the first malformed entry: unknown kind, a choice without values, a range
    that is not two numbers low < high (low > 0 for log_uniform)."""
    for key, (kind, *args) in sp.items():
        if kind not in KINDS:
            close = lbconfig._close_hint(kind, KINDS)
            raise ValueError(f"{key}: unknown search kind {kind!r}{close}; valid: {', '.join(KINDS)}")
        if kind == "choice":
            if not args:
                raise ValueError(f"{key}: [choice, ...] needs at least one value")
            continue
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args) \
                or not args[0] < args[1] or (kind == "log_uniform" and args[0] <= 0):
            raise ValueError(f"{key}: [{kind}, low, high] needs two numbers low < high"
                             f"{' (low > 0)' if kind == 'log_uniform' else ''}, got {list(args)}")


def default_point(track: dict, method: str, dataset: str | None = None) -> dict:
    """Trial 0: every searched hyperparameter at the value the track runs it at (the method's
    defaults with the track's method_hparams; `lr` the protocol's own)."""
    hp = methods.get(method).hparams(track.get("method_hparams", {}).get(method, {}))
    dataset = dataset if dataset is not None else lbconfig.track_datasets(track)[0]
    out = {}
    for key in space(track, method, dataset):
        if key == lbconfig.SWEEP_LR:
            out[key] = lbconfig.protocol_for(track, dataset).get("optimizer", {}).get("lr")
        else:
            out[key] = hp.get(key)
    return out


def capacity(sp: dict[str, tuple], first: dict) -> float:
    """How many distinct points the space holds (with trial 0's): infinite with a continuous kind."""
    if any(kind != "choice" for kind, *_ in sp.values()):
        return math.inf
    return len(_grid(sp, first)) + 1


def _grid(sp: dict[str, tuple], first: dict) -> list[dict]:
    """Every point of an all-choice space except trial 0's, in a fixed order."""
    keys = list(sp)
    points = (dict(zip(keys, vals)) for vals in itertools.product(*(sp[k][1:] for k in keys)))
    return [p for p in points if p != first]


def _draw(rng: np.random.Generator, spec: tuple):
    kind, *args = spec
    if kind == "choice":
        return args[int(rng.integers(len(args)))]
    lo, hi = args
    x = rng.uniform(lo, hi) if kind == "uniform" else math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return float(f"{x:.4g}")  # readable, and the same text on every machine


def trials(track: dict, method: str, dataset: str | None = None) -> dict[str, dict]:
    """{trial00: default point, trial01: ..., }: exactly `trials` distinct points (ValueError when
    the space holds fewer)."""
    tune = settings(track, dataset)
    n = int(tune["trials"])
    sp = space(track, method, dataset)
    first = default_point(track, method, dataset)
    if capacity(sp, first) < n:
        raise ValueError(f"method {method!r} has {capacity(sp, first)} distinct point(s) in its search space "
                         f"({', '.join(sp) or 'none'}) for {n} trials")
    rng = np.random.default_rng(derive_seed("tuning", tune.get("seed", 0), track["track"], method))
    points = [first]
    if n > 1 and math.isfinite(capacity(sp, first)):
        grid = _grid(sp, first)
        points += [grid[i] for i in rng.permutation(len(grid))[:n - 1]]
    for _ in range(1000 * n):
        if len(points) >= n:
            break
        p = {k: _draw(rng, sp[k]) for k in sp}
        if p not in points:
            points.append(p)
    return {trial_slug(i): p for i, p in enumerate(points)}


def trials_to_run(track: dict, method: str, dataset: str | None = None) -> dict[str, dict]:
    """The trials that train on the tuning seeds: all of them, or none with `trials: 1` (one trial is
    the protocol's own setting: there is nothing to choose, so the budget is the final runs alone —
    a paper's fixed setup, e.g. the grokking protocols)."""
    out = trials(track, method, dataset)
    return out if len(out) > 1 else {}


def variant_points(track: dict, method: str, dataset: str | None = None) -> dict[str, dict]:
    """{slug: point} of a tuned track's variants: the trials that run, then `tuned` (trial 0's point
    until its job reads the choice: tuned_run)."""
    first = trials(track, method, dataset)[trial_slug(0)]
    return {**trials_to_run(track, method, dataset), TUNED: dict(first)}


def check(track: dict, where: str, names: list[str], dataset: str) -> None:
    """ConfigError (one line) for a tuning block that cannot give every method of `names` the same
    budget: with a sweep, tuning seeds among the final seeds, a bad search entry, too few points."""
    tune = track.get("tuning")
    if not tune:
        return
    if track.get("sweep"):
        raise lbconfig.ConfigError(f"{where}: tuning and sweep: set one (tuning gives every method the same "
                                   f"number of trials; a sweep runs a grid on the final seeds)")
    both = sorted(set(tune["seeds"]) & set(track["seeds"]))
    if both:
        raise lbconfig.ConfigError(f"{where}: tuning/seeds: {both} are also final seeds {track['seeds']}; tuning "
                                   f"seeds must be disjoint from them (a choice made on the seeds it is reported on "
                                   f"is biased), e.g. seeds: {[max(track['seeds']) + 1 + i for i in range(len(tune['seeds']))]}")
    try:
        check_space({k: tuple(v) for k, v in (tune.get("search") or {}).items()})
    except ValueError as e:
        raise lbconfig.ConfigError(f"{where}: tuning/search/{e}") from None
    for m in names:
        try:
            check_space({k: tuple(v) for k, v in methods.get(m).search.items()})
        except ValueError as e:
            raise lbconfig.ConfigError(f"{where}: tuning: method {m!r}'s own search (MethodSpec.search) {e}") from None
        sp, first = space(track, m, dataset), default_point(track, m, dataset)
        if capacity(sp, first) < tune["trials"]:
            raise lbconfig.ConfigError(
                f"{where}: tuning: method {m!r} can supply {capacity(sp, first)} distinct trial(s) (searches "
                f"{', '.join(sp) or 'nothing'}), not trials: {tune['trials']}; add a shared search (e.g. search: "
                f"{{lr: [log_uniform, low, high]}}) or lower trials")
        for slug, point in trials(track, m, dataset).items():
            lbconfig.method_hparams(m, {**track.get("method_hparams", {}).get(m, {}),
                                        **{k: v for k, v in point.items() if k not in lbconfig.NOT_HPARAMS}},
                                    f"{where}: tuning ({m}, {slug})")


# ============================================================================== choosing a trial
def on_edge(point: dict, sp: dict[str, tuple]) -> list[str]:
    """Hyperparameters of `point` at the edge of their range: a numeric choice list's smallest or
    largest value (lists of 3 or more: with 2 every value is an end), a continuous value within
    EDGE of a bound (in log space for log_uniform) or outside the range."""
    out = []
    for key, (kind, *args) in sp.items():
        v = point.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if kind == "choice":
            nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
            if len(nums) >= 3 and v in (min(nums), max(nums)):
                out.append(key)
            continue
        lo, hi = args
        if kind == "log_uniform":
            if v <= 0:
                out.append(key)
                continue
            v, lo, hi = math.log(v), math.log(lo), math.log(hi)
        t = (v - lo) / (hi - lo)
        if t <= EDGE or t >= 1 - EDGE:
            out.append(key)
    return out


def choose(rows, metric: str, higher_is_better: bool, points: dict | None = None,
           sp: dict | None = None) -> dict:
    """The chosen trial of one (dataset, method) from its trial runs' tidy rows (columns variant,
    seed, metric, value; other variants are ignored): the most tuning seeds with a finite `metric`,
    then the best mean; ties to the first trial. `points` ({trial: point}) and `sp` (the space) add
    the chosen point and the hyperparameters on the edge of their range."""
    part = rows[(rows["metric"] == metric) & rows["variant"].map(is_trial)]
    names = sorted(part["variant"].unique()) or sorted(points or {}) or [trial_slug(0)]
    scores, counts = {}, {}
    for name in names:
        vals = part.loc[part["variant"] == name, "value"].astype(float).to_numpy()
        vals = vals[np.isfinite(vals)]
        scores[name] = float(vals.mean()) if len(vals) else None
        counts[name] = int(len(vals))
    sign = 1.0 if higher_is_better else -1.0
    ranked = [n for n in names if scores[n] is not None]
    best = max(ranked, key=lambda n: (counts[n], sign * scores[n], -names.index(n))) if ranked else names[0]
    finite = np.array([scores[n] for n in ranked], dtype=float)
    point = dict((points or {}).get(best, {}))
    return {
        "trial": best, "point": point, "score": scores[best], "scores": scores, "n_seeds": counts,
        "spread": {"range": float(finite.max() - finite.min()) if len(finite) else None,
                   "std": float(finite.std()) if len(finite) else None},
        "n_trials": len(names), "on_edge": on_edge(point, sp) if sp else [],
        "fallback": not ranked,  # no trial had a finite value: trial00 (the defaults) runs
    }


def write_choice(track: dict, dataset: str, method: str, run_dirs, out_path) -> dict:
    """Read the trials' metrics.csv (checked against their run.json), choose on the task's
    SELECTION metric and write the choice file the `tuned` runs train from."""
    import pandas as pd

    from lossbench import io, runner, tasks

    frames = [pd.DataFrame(columns=["variant", "seed", "metric", "value"])]  # one trial: no runs to read
    for d in run_dirs:
        runner.check_evaluation(d, only=("metrics.csv",))
        frames.append(io.read_csv(f"{d}/metrics.csv"))
    rows = pd.concat(frames, ignore_index=True)
    sel = tasks.get(track["task"]).SELECTION
    tune, pts, sp = settings(track, dataset), trials(track, method, dataset), space(track, method, dataset)
    picked = choose(rows, sel["metric"], bool(sel["higher_is_better"]), pts, sp)
    if len(pts) == 1:  # nothing was chosen, and nothing fell back: the protocol's own setting
        picked["fallback"] = False
    choice = {"track": track["track"], "dataset": dataset, "method": method, "metric": sel["metric"],
              "higher_is_better": bool(sel["higher_is_better"]), "split": sel.get("split", "validation"),
              "tuning_seeds": list(tune["seeds"]), "trials": pts, "space": {k: list(v) for k, v in sp.items()},
              **picked}
    io.write_json(out_path, choice)
    return choice


SUMMARY_KEYS = ("trial", "point", "score", "scores", "spread", "n_trials", "on_edge", "metric",
                "higher_is_better", "tuning_seeds", "fallback")


def tuned_run(track: dict, dataset: str, method: str, seed: int, choice_path) -> dict:
    """The resolved `tuned` run: the chosen point merged in, `tuned_from` the choice file's sha256
    (part of run_id), and the choice's summary as `tuning` (for the report)."""
    from lossbench import io

    choice = io.read_json(choice_path)
    if (choice.get("track"), choice.get("dataset"), choice.get("method")) != (track["track"], dataset, method):
        raise ValueError(f"{choice_path}: a choice for {choice.get('track')}/{choice.get('dataset')}/"
                         f"{choice.get('method')}, not {track['track']}/{dataset}/{method}")
    run = lbconfig.resolve_run(track, dataset, method, seed, TUNED, point=choice["point"],
                               tuned_from=io.sha256_file(choice_path))
    return {**run, "tuning": {k: choice.get(k) for k in SUMMARY_KEYS}}
