"""Equal-budget tuning: one protocol for every track, every method (the baseline included) gets the
same number of trials (a track's `tuning:` key, config/schema/track.schema.yaml).

  trials()      {trial00: point, ...}: exactly `trials` points per method. trial00 is what the track
                runs by default (the method's defaults, the protocol's own lr); the others are drawn
                from the method's MethodSpec.search plus the track's shared `search` by a numpy
                Generator seeded from (tuning seed, track, method): the same on every machine.
                With `grid: {method: grid}` instead: each method's grid points, in order.
  rules()       the ways a task chooses: {`tuned`: its SELECTION}, or the task's own tuning_rules
                (the preference views: tuned_best, tuned_kl with a KL budget, tuned_forget), each a
                final variant trained from its own choice (choose_rule).
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
TWIN = "twin_"  # a final run's input naming an earlier final variant of its seed (twin_<variant>: its train.json)
# A task may choose several ways at once (its `tuning_rules`: the preference track's views): one
# final variant per rule, `tuned_<view>`, each trained on the final seeds from its own choice.
EDGE = 0.05  # a continuous value within this fraction of its range (log range for log_uniform) of a bound is on the edge
_TRIAL = re.compile(r"^trial\d{2,}$")


def trial_slug(i: int) -> str:
    return f"trial{i:02d}"


def is_trial(variant: str) -> bool:
    return bool(_TRIAL.match(str(variant)))


def is_tuned(variant: str) -> bool:
    """A final variant trained from a choice: `tuned`, or a rule's `tuned_<view>`."""
    return str(variant) == TUNED or str(variant).startswith(TUNED + "_")


def settings(track: dict, dataset: str | None = None) -> dict | None:
    """The `tuning` block that applies to `dataset` (its protocol's own, else the track's), or None."""
    if dataset is not None:
        track = lbconfig.protocol_track(track, lbconfig.protocol_name(track, dataset))
    return track.get("tuning")


def space(track: dict, method: str, dataset: str | None = None) -> dict[str, tuple]:
    """{hyperparameter: (kind, *args)}: the method's own search (less what the track fixes in
    method_hparams) and the shared search, which wins on a shared key. With a `grid`: each key's
    grid values as a choice."""
    tune = settings(track, dataset) or {}
    if tune.get("grid"):  # a grid's values per key: the range its choice sits in (for on_edge)
        pts = lbconfig.grid_points(tune["grid"][method])
        keys = sorted({k for p in pts for k in p})
        return {k: ("choice", *_ordered([p[k] for p in pts if k in p])) for k in keys}
    fixed = track.get("method_hparams", {}).get(method, {})
    own = {k: tuple(v) for k, v in methods.get(method).search.items() if k not in fixed}
    shared = {k: tuple(v) for k, v in ((settings(track, dataset) or {}).get("search") or {}).items()}
    return dict(sorted({**own, **shared}.items()))


def _ordered(values: list) -> list:
    """Distinct values, sorted when they compare (numbers), else in first-seen order."""
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct)
    except TypeError:
        return distinct


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
    dataset = dataset if dataset is not None else lbconfig.track_datasets(track)[0]
    grid = (settings(track, dataset) or {}).get("grid")
    if grid:  # a grid's trial 0 is its first point
        return dict(lbconfig.grid_points(grid[method])[0])
    hp = methods.get(method).hparams(track.get("method_hparams", {}).get(method, {}))
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
    the space holds fewer). With a `grid` ({method: grid}, the sweep format): the method's grid
    points in order, as many as `trials`."""
    tune = settings(track, dataset)
    n = int(tune["trials"])
    if tune.get("grid"):  # every grid point is a trial, in the grid's order
        pts = lbconfig.grid_points(tune["grid"][method])
        if len(pts) != n:
            raise ValueError(f"method {method!r} has {len(pts)} grid point(s) for {n} trials")
        return {trial_slug(i): dict(p) for i, p in enumerate(pts)}
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
    """{slug: point} of a tuned track's variants: the trials that run, then `tuned` (or the task's
    `tuned_<view>` variants: tuned_variants) at trial 0's point until its job reads the choice
    (tuned_run)."""
    first = trials(track, method, dataset)[trial_slug(0)]
    return {**trials_to_run(track, method, dataset), **{v: dict(first) for v in tuned_variants(track, method, dataset)}}


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
    grid = tune.get("grid")
    if grid:
        _check_grid(track, where, names, grid, tune)
    try:
        check_space({k: tuple(v) for k, v in (tune.get("search") or {}).items()})
    except ValueError as e:
        raise lbconfig.ConfigError(f"{where}: tuning/search/{e}") from None
    for m in names:
        if grid:
            for slug, point in trials(track, m, dataset).items():
                lbconfig.method_hparams(m, {**track.get("method_hparams", {}).get(m, {}),
                                            **{k: v for k, v in point.items() if k not in lbconfig.NOT_HPARAMS}},
                                        f"{where}: tuning/grid/{m} ({slug})")
            continue
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


def _check_grid(track: dict, where: str, names: list[str], grid: dict, tune: dict) -> None:
    """A `grid` tuning block: no `search` beside it, a grid for every method of `names` (and none
    for a method the track lacks), each with exactly `trials` distinct points."""
    if tune.get("search"):
        raise lbconfig.ConfigError(f"{where}: tuning: grid and search: set one (a grid lists every trial)")
    for m in grid:
        if m not in track["methods"]:
            raise lbconfig.unknown_name("method in tuning/grid", m, track["methods"], where)
    missing = [m for m in names if m not in grid]
    if missing:
        raise lbconfig.ConfigError(f"{where}: tuning/grid: every method needs a grid (equal budget); missing {missing}")
    for m in names:
        pts = lbconfig.grid_points(grid[m])
        distinct = len({repr(sorted(p.items())) for p in pts})
        if len(pts) != tune["trials"] or distinct != len(pts):
            raise lbconfig.ConfigError(
                f"{where}: tuning/grid/{m}: {len(pts)} point(s) ({distinct} distinct) for trials: {tune['trials']}; "
                f"every method's grid must hold exactly `trials` distinct points (equal budget)")


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


def rules(track: dict, method: str, dataset: str | None = None) -> dict[str, dict]:
    """{final variant: rule} of (track, method): the task's `tuning_rules(protocol, method)` when it
    has one (the preference track: one per view), else {`tuned`: the task's SELECTION}. A rule:
    {metric, higher_is_better, split, on (its text); optional within: {metric, max}: only trials
    whose mean `within` metric is ≤ max are candidates}."""
    from lossbench import tasks

    task = tasks.get(track["task"])
    dataset = dataset if dataset is not None else lbconfig.track_datasets(track)[0]
    if hasattr(task, "tuning_rules"):
        return task.tuning_rules(lbconfig.protocol_for(track, dataset), method)
    sel = task.SELECTION
    way = "max" if sel["higher_is_better"] else "min"
    return {TUNED: {"metric": sel["metric"], "higher_is_better": bool(sel["higher_is_better"]),
                    "split": sel.get("split", "validation"), "on": f"{sel['metric']} ({way})"}}


def tuned_variants(track: dict, method: str, dataset: str | None = None) -> list[str]:
    """The final variants of (track, method): `tuned`, or one per rule of the task (rules)."""
    return list(rules(track, method, dataset))


def choose_rule(rows, rule: dict, points: dict | None = None, sp: dict | None = None) -> dict:
    """choose() under a rule. With `within` ({metric, max}): only the trials whose mean `within`
    metric over the tuning seeds is ≤ max compete; with none admissible the trial with the smallest
    mean `within` metric is taken and flagged `no_admissible` (said in the tuning table)."""
    within = rule.get("within")
    if not within:
        return {**choose(rows, rule["metric"], rule["higher_is_better"], points, sp), "no_admissible": False}
    part = rows[(rows["metric"] == within["metric"]) & rows["variant"].map(is_trial)]
    means = {}
    for name, vals in part.groupby("variant")["value"]:
        vals = vals.astype(float).to_numpy()
        vals = vals[np.isfinite(vals)]
        if len(vals):
            means[name] = float(vals.mean())
    admissible = sorted(n for n, v in means.items() if v <= within["max"])
    keep = admissible or ([min(sorted(means), key=lambda n: means[n])] if means else [])
    narrowed = rows[~rows["variant"].map(is_trial) | rows["variant"].isin(keep)] if keep else rows
    picked = choose(narrowed, rule["metric"], rule["higher_is_better"],
                    {k: v for k, v in (points or {}).items() if k in keep} if keep else points, sp)
    if keep:  # the scores and spread of every trial, not just the candidates
        everything = choose(rows, rule["metric"], rule["higher_is_better"], points, sp)
        picked.update(scores=everything["scores"], spread=everything["spread"], n_trials=everything["n_trials"])
        if not admissible:
            picked["point"] = dict((points or {}).get(keep[0], picked["point"]))
            picked["trial"] = keep[0]
            picked["score"] = everything["scores"].get(keep[0])
    return {**picked, "no_admissible": not admissible, "admissible": admissible,
            "within_means": means}


def write_choice(track: dict, dataset: str, method: str, run_dirs, out_path) -> dict:
    """Read the trials' metrics.csv (checked against their run.json), choose by each of the task's
    rules (rules: the SELECTION metric, or the preference views) and write the choice file the
    final runs train from: its top level the first rule's choice, `choices` every rule's."""
    import pandas as pd

    from lossbench import io, runner

    frames = [pd.DataFrame(columns=["variant", "seed", "metric", "value"])]  # one trial: no runs to read
    for d in run_dirs:
        runner.check_evaluation(d, only=("metrics.csv",))
        frames.append(io.read_csv(f"{d}/metrics.csv"))
    rows = pd.concat(frames, ignore_index=True)
    tune, pts, sp = settings(track, dataset), trials(track, method, dataset), space(track, method, dataset)
    choices = {}
    for variant, rule in rules(track, method, dataset).items():
        picked = choose_rule(rows, rule, pts, sp)
        if len(pts) == 1:  # nothing was chosen, and nothing fell back: the protocol's own setting
            picked.update(fallback=False, no_admissible=False)
        choices[variant] = {"metric": rule["metric"], "higher_is_better": bool(rule["higher_is_better"]),
                            "split": rule.get("split", "validation"), "on": rule.get("on", rule["metric"]),
                            "within": rule.get("within"), "tuning_seeds": list(tune["seeds"]), **picked}
    first = next(iter(choices.values()))
    choice = {"track": track["track"], "dataset": dataset, "method": method, **first,
              "trials": pts, "space": {k: list(v) for k, v in sp.items()}, "choices": choices}
    io.write_json(out_path, choice)
    return choice


SUMMARY_KEYS = ("trial", "point", "score", "scores", "spread", "n_trials", "on_edge", "metric",
                "higher_is_better", "tuning_seeds", "fallback", "on", "no_admissible")


def tuned_run(track: dict, dataset: str, method: str, seed: int, choice_path, variant: str = TUNED) -> dict:
    """The resolved final run `variant` (`tuned` or a rule's `tuned_<view>`): its rule's chosen point
    merged in, `tuned_from` the choice file's sha256 (part of run_id), and the choice's summary as
    `tuning` (for the report)."""
    from lossbench import io

    choice = io.read_json(choice_path)
    if (choice.get("track"), choice.get("dataset"), choice.get("method")) != (track["track"], dataset, method):
        raise ValueError(f"{choice_path}: a choice for {choice.get('track')}/{choice.get('dataset')}/"
                         f"{choice.get('method')}, not {track['track']}/{dataset}/{method}")
    picked = (choice.get("choices") or {variant: choice}).get(variant)
    if picked is None:
        raise ValueError(f"{choice_path}: no choice for variant {variant!r} (has {sorted(choice['choices'])})")
    run = lbconfig.resolve_run(track, dataset, method, seed, variant, point=picked["point"],
                               tuned_from=io.sha256_file(choice_path))
    return {**run, "tuning": {"variant": variant, **{k: picked.get(k) for k in SUMMARY_KEYS}}}
