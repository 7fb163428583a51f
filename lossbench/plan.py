"""Know the cost before you start: a profile's jobs, counted by Snakemake's own dry run, priced
from the throughput table (config/throughput.yaml, written by benchmarks/cost_table.py).

    lossbench plan [config/full.yaml | config/tier_core_claims.yaml | profiles/full] [--format json]

Counts are exact: they are the jobs of `snakemake --forceall --dry-run` (every job, whatever is
already done), split by track (the job's `track` or `bench` wildcard; data and report jobs apart)
and rule. A job's cost on a device class is

    fixed_s + units × unit_s

from the first table entry whose key pattern (fnmatch) matches the job's key
`<rule>/<track>/<protocol>-<digest>/<class>` (the digest names the protocol's content, so an edited
protocol needs new figures; kernels: `<slice>-<digest>`; data: the source); units are what the rule's work scales with (UNITS): optimiser
steps for training jobs (from the resolved run's protocol; classification epochs through the
table's `train_examples`), runs for aggregation, none otherwise. The class separates runs of one
protocol that cost differently per step (adversarial training, distillation from a teacher, the
optimizer axis's model). A job no entry matches is *unpriced*: counted, listed with its key, and
left out of the totals, which then say so — never priced at zero.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lossbench import methods
from lossbench import config as lbconfig

TABLE = lbconfig.ROOT / "config" / "throughput.yaml"
DEVICES = {"cpu": "CPU core-h", "cuda": "H100 h"}
# what a rule's work scales with; any other rule costs its entry's fixed_s per job
UNITS = {"train_run": "step", "classification_teacher": "step", "lm_reference": "step", "pref_sft": "step",
         "pref_reward_model": "step", "aggregate_results": "run", "train_together": "step"}
# jobs without a track wildcard: the group they are reported under
OTHER = {"prepare_source": "data", "download_source": "data", "aggregate_results": "report",
         "build_report": "report", "aggregate_kernels": "kernels", "aggregate_overopt": "report", "all": "report"}
# protocol keys only some rules read: left out of every other rule's protocol digest, so adding such
# a block (the preference track's best-of-n study) keeps the table's entries of the runs it leaves alone
# (a dotted key names an entry of a block: `eval.revision_methods` leaves the rest of `eval` in every digest)
READ_ONLY_BY = {"overoptimization": ("pref_overopt",), "seeds_together": ("train_together",),
                "eval.revision_methods": ("pref_sample_eval", "evaluate_run")}


def read_by(block: dict, rule: str) -> dict:
    """The part of a protocol block that `rule` reads (READ_ONLY_BY's keys only where they list it)."""
    def reads(key):
        return rule in READ_ONLY_BY.get(key, (rule,))

    return {k: ({kk: vv for kk, vv in v.items() if reads(f"{k}.{kk}")} if isinstance(v, dict) else v)
            for k, v in block.items() if reads(k)}
RULE = re.compile(r"^(?:local)?rule (\w+):$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
TOTAL = re.compile(r"^total\s+(\d+)$", re.M)


class PlanError(ValueError):
    pass


def digest(obj) -> str:
    """Six hex digits naming a protocol's (or slice's) content: an edit to it makes a new table key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:6]


def job_track(rule: str, wildcards: dict) -> str:
    """The group a job is reported under: its track (or benchmark), else data/report/kernels/other."""
    return wildcards.get("track") or wildcards.get("bench") or OTHER.get(rule, "other")


def parse_wildcards(text: str) -> dict:
    return dict(kv.split("=", 1) for kv in text.split(", ") if "=" in kv)


@dataclass
class Job:
    rule: str
    wildcards: dict = field(default_factory=dict)


def parse_dry_run(text: str) -> list[Job]:
    """Every job block (`rule X:` and its fields) of a Snakemake dry run's output, checked against
    the run's own `total` line."""
    jobs = []
    for line in text.splitlines():
        if m := RULE.match(line):
            jobs.append(Job(m.group(1)))
        elif (m := WILDCARDS.match(line)) and jobs:
            jobs[-1].wildcards = parse_wildcards(m.group(1))
    totals = TOTAL.findall(text)
    if totals and int(totals[0]) != len(jobs):
        raise PlanError(f"parsed {len(jobs)} job blocks but Snakemake's job stats say {totals[0]}")
    return jobs


def config_path(target) -> Path:
    """A profile config (config/*.yaml), or a workflow profile folder (profiles/full) whose
    config.yaml names one with `configfile`."""
    path = Path(target)
    if path.is_dir():
        return Path(lbconfig.ROOT / yaml.safe_load((path / "config.yaml").read_text())["configfile"])
    return path


def dag_jobs(config) -> list[Job]:
    """The jobs of Snakemake's dry run of `config`, planned from scratch (--forceall) in an empty
    working directory, so neither finished results nor a running Snakemake's lock matter."""
    with tempfile.TemporaryDirectory(prefix="lossbench-plan-") as work:
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(lbconfig.ROOT / "Snakefile"),
               "--workflow-profile", "none", "--configfile", str(Path(config).resolve()), "--directory", work,
               "--forceall", "--dry-run", "--cores", "1"]
        out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise PlanError(f"snakemake dry run of {config} failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return parse_dry_run(out.stdout)


def load_table(path=TABLE) -> dict:
    table = yaml.safe_load(Path(path).read_text())
    for key in ("devices", "jobs"):
        if key not in table:
            raise PlanError(f"{path}: the throughput table needs a `{key}` mapping")
    return table


class Pricer:
    """Prices the jobs of one profile with one throughput table."""

    def __init__(self, tracks: dict, benches: dict, table: dict, n_runs: int, groups: Counter | None = None):
        self.tracks, self.benches, self.table, self.n_runs = tracks, benches, table, n_runs
        self.groups = groups or Counter()  # (track, dataset, method, variant) trained together: its seeds
        self._cache = {}

    def _cached(self, what: str, job: Job, fn):
        """fn(job), once per rule and wildcards other than the seed (costs do not depend on it)."""
        ident = (what, job.rule, *sorted((k, v) for k, v in job.wildcards.items() if k != "seed"))
        if ident not in self._cache:
            self._cache[ident] = fn(job)
        return self._cache[ident]

    def key(self, job: Job) -> str:
        return self._cached("key", job, self._key)

    def protocol(self, job: Job) -> tuple[str, dict] | None:
        """(name, block without datasets and per-protocol overrides) of the job's track protocol."""
        wc, track = job.wildcards, self.tracks.get(job.wildcards.get("track"))
        if track is None or not ("protocol" in wc or "dataset" in wc):
            return None
        name = wc.get("protocol") or lbconfig.protocol_name(track, wc["dataset"])
        drop = ("datasets", *lbconfig.PROTOCOL_OVERRIDES)
        return name, {k: v for k, v in track["protocols"][name].items() if k not in drop}

    def _key(self, job: Job) -> str:
        wc, cls, proto = job.wildcards, self._class(job), self.protocol(job)
        if proto is not None:
            block = read_by(proto[1], job.rule)
            if cls == "optimizer":  # the axis replaces the protocol's model
                block = {**block, "axis_model": self.tracks[wc["track"]]["optimizer_axis"].get("model", block.get("model"))}
            where = f"{proto[0]}-{digest(block)}"
        elif "slice" in wc:
            bench = self.benches[wc["bench"]]
            where = f"{wc['slice']}-{digest([bench['slices'][wc['slice']], bench.get('measure'), bench.get('impls')])}"
        else:
            where = wc.get("source", "-")
        return f"{job.rule}/{job_track(job.rule, wc)}/{where}/{cls}"

    def _class(self, job: Job) -> str:
        wc = job.wildcards
        if "method" not in wc or job.rule not in UNITS:
            return "default"
        spec = methods.get(wc["method"])
        if spec.kind == "adversarial":
            return "adversarial"
        if spec.kind == "online":  # sampling, the proxy RM and π_ref in every step: several DPO steps' worth
            return "online"
        if "revision_logps" in spec.needs:  # SRPO: four longer answer-conditioned rows per pair and a live π_ref
            return "revision"
        if spec.teacher == "stage":
            return "distill"
        if lbconfig.OPTIMIZER_KEY in self._point(job):
            return "optimizer"
        return "default"

    def _point(self, job: Job) -> dict:
        wc = job.wildcards
        track = self.tracks[wc["track"]]
        view = lbconfig.protocol_track(track, lbconfig.protocol_name(track, wc["dataset"]))
        return lbconfig.variants(view, wc["method"], wc["dataset"])[wc["variant"]]

    def _run(self, job: Job) -> dict:
        wc = job.wildcards
        return lbconfig.resolve_run(self.tracks[wc["track"]], wc["dataset"], wc["method"], int(wc["seed"]), wc["variant"])

    def units(self, job: Job) -> int:
        """How much of the rule's unit the job does (0 for a fixed-cost rule)."""
        unit = UNITS.get(job.rule)
        if unit == "run":
            return self.n_runs
        if unit is None:
            return 0
        if job.rule == "train_run":
            return self._cached("units", job, lambda j: self._run_steps(self._run(j)))
        if job.rule == "train_together":  # its seeds' steps
            return self.groups.get(group_of(job.wildcards), 0) * self._cached(
                "units", job, lambda j: self._run_steps(self._run(Job("train_run", {**j.wildcards, "seed": "0"}))))
        return self._cached("units", job, self._stage_steps)

    def _run_steps(self, run: dict) -> int:
        proto = run["protocol"]
        if run["task"] == "classification":
            rounds = int(run["hparams"].get("rounds", 0)) + 1 if methods.get(run["method"]).teacher == "self" else 1
            return rounds * self._classification_steps(proto["budget"], run["dataset"])
        if run["task"] == "preference":
            return proto["train"]["steps"]
        if run["task"] in ("lm_pretraining", "grokking"):
            return proto["budget"]["steps"]
        raise PlanError(f"no step count for task {run['task']!r}: add it to lossbench/plan.py Pricer._run_steps")

    def _stage_steps(self, job: Job) -> int:
        wc = job.wildcards
        proto = self.tracks[wc["track"]]["protocols"][wc["protocol"]]
        if job.rule == "classification_teacher":
            from lossbench.tasks.classification import teacher_protocol

            return self._classification_steps(teacher_protocol(proto)["budget"], wc["dataset"])
        block = {"lm_reference": "reference", "pref_sft": "sft", "pref_reward_model": "reward_model"}[job.rule]
        if job.rule == "pref_sft":  # the table's unit is a step of π_ref and its retain-only twin together
            from lossbench.tasks.preference import retain_twin

            return proto["sft"]["steps"] // (1 if retain_twin(self.tracks[wc["track"]], wc["protocol"]) else 2)
        return proto[block]["steps"]

    def _classification_steps(self, budget: dict, dataset: str) -> int:
        """The trainer's count (lossbench/train.py): `steps`, or epochs × full batches per epoch."""
        if "steps" in budget:
            return budget["steps"]
        n = self.table.get("train_examples", {}).get(dataset)
        if n is None:
            raise PlanError(f"an epoch budget on {dataset!r} needs its training-set size: add it to the table's "
                            f"train_examples (python benchmarks/cost_table.py measures it)")
        return budget["epochs"] * max(1, n // min(budget["batch_size"], n))

    def entry(self, key: str) -> dict | None:
        return next((e for pat, e in self.table["jobs"].items() if fnmatch.fnmatchcase(key, pat)), None)

    def seconds(self, job: Job, key: str, device: str) -> tuple[float | None, bool]:
        """(seconds of `job` on `device`, whether the figure is an estimate) or (None, False) when
        the table has no entry for it. Seeds trained together (rule train_together): the group job
        costs its seeds' separate runs where the table has no entry of its own (the together speedup
        not counted), and each seed's train_run is a copy, priced at 0."""
        group = self.groups.get(group_of(job.wildcards), 0)
        if job.rule == "train_run" and group:
            return 0.0, True
        if job.rule == "train_together" and self.entry(key) is None:
            run = Job("train_run", {**job.wildcards, "seed": "0"})
            secs, _ = self._priced(run, self.key(run), device)
            return (None, False) if secs is None else (group * secs, True)
        return self._priced(job, key, device)

    def _priced(self, job: Job, key: str, device: str) -> tuple[float | None, bool]:
        """`job`'s table entry applied: fixed_s + units × unit_s."""
        entry = (self.entry(key) or {}).get(device)
        if entry is None or "not_applicable" in entry:
            return None, False
        unit = UNITS.get(job.rule, "job")
        if entry.get("unit_s") and entry.get("unit", unit) != unit:
            raise PlanError(f"table entry for {key} ({device}) is per {entry['unit']}, but {job.rule} counts {unit}s")
        return entry.get("fixed_s", 0.0) + self.units(job) * entry.get("unit_s", 0.0), bool(entry.get("estimate"))


def group_of(wildcards: dict) -> tuple:
    return tuple(wildcards.get(k) for k in ("track", "dataset", "method", "variant"))


def estimate(jobs: list[Job], tracks: dict, benches: dict, table: dict) -> dict:
    """Jobs and seconds per (track, rule) and device, with the unpriced jobs' keys."""
    together = {group_of(j.wildcards) for j in jobs if j.rule == "train_together"}
    groups = Counter(group_of(j.wildcards) for j in jobs if j.rule == "train_run" and group_of(j.wildcards) in together)
    pricer = Pricer(tracks, benches, table, n_runs=sum(j.rule == "train_run" for j in jobs), groups=groups)
    rows = defaultdict(lambda: {"jobs": 0, **{d: 0.0 for d in DEVICES}, "estimated": set(), "priced": Counter()})
    unpriced, moot = {d: Counter() for d in DEVICES}, {d: Counter() for d in DEVICES}  # moot: not_applicable
    for job in jobs:
        key, row = pricer.key(job), rows[(job_track(job.rule, job.wildcards), job.rule)]
        row["jobs"] += 1
        for device in DEVICES:
            secs, est = pricer.seconds(job, key, device)
            if secs is None:
                why = ((pricer.entry(key) or {}).get(device) or {}).get("not_applicable")
                (moot if why else unpriced)[device][f"{key} ({why})" if why else key] += 1
                continue
            row[device] += secs
            row["priced"][device] += 1
            if est:
                row["estimated"].add(device)
    out = [{"track": t, "rule": r, "jobs": v["jobs"], **{f"{d}_hours": v[d] / 3600 for d in DEVICES},
            "estimated": sorted(v["estimated"]), "unpriced": sorted(d for d in DEVICES if v["priced"][d] < v["jobs"])}
           for (t, r), v in sorted(rows.items())]
    processes = sum(j.rule != "all" for j in jobs)  # `all` is a target, not a job that runs
    return {"rows": out, "jobs": len(jobs),
            "total_hours": {d: sum(r[f"{d}_hours"] for r in out) for d in DEVICES},
            "start_hours": {d: processes * table["devices"].get(d, {}).get("job_start_s", 0.0) / 3600 for d in DEVICES},
            "unpriced": {d: dict(c) for d, c in unpriced.items() if c},
            "not_applicable": {d: dict(c) for d, c in moot.items() if c}}


def plan(target, table_path=TABLE) -> dict:
    config = config_path(target)
    cfg, tracks = lbconfig.load_profile(config)
    t0 = time.perf_counter()
    jobs = dag_jobs(config)
    table = load_table(table_path)
    return {"config": str(config), "profile": cfg["profile"], "dry_run_seconds": round(time.perf_counter() - t0, 1),
            "runs_per_device": cfg.get("device_slots", {}).get("runs_per_device", 1),
            "table": str(table_path), "devices": table["devices"], **estimate(jobs, tracks, lbconfig.load_benchmarks(cfg), table)}


def _hours(h: float) -> str:
    return f"{h:,.2f}" if h < 10 else f"{h:,.0f}"


def format_text(p: dict) -> str:
    heads = [DEVICES[d] for d in DEVICES]
    lines = [f"{p['config']} (profile {p['profile']}): {p['jobs']:,} jobs in Snakemake's dry run "
             f"(--forceall, {p['dry_run_seconds']:.0f} s); costs from {p['table']}", "",
             f"{'track':16s} {'rule':24s} {'jobs':>7s} " + " ".join(f"{h:>12s}" for h in heads)]
    last = None
    for r in p["rows"]:
        cells = [("n/a" if r[f"{d}_hours"] == 0 and d in r["unpriced"] else _hours(r[f"{d}_hours"]))
                 + ("?" if d in r["unpriced"] else "*" if d in r["estimated"] else " ") for d in DEVICES]
        lines.append(f"{r['track'] if r['track'] != last else '':16s} {r['rule']:24s} {r['jobs']:7,d} "
                     + " ".join(f"{c:>12s}" for c in cells))
        last = r["track"]
    prefix = {d: "≥ " if d in p["unpriced"] or d in p["not_applicable"] else "" for d in DEVICES}
    lines.append(f"{'total':41s} {p['jobs']:7,d} "
                 + " ".join(f"{prefix[d] + _hours(p['total_hours'][d]):>12s} " for d in DEVICES))
    lines.append(f"{'+ start-up if each job is its own process':41s} {'':7s} "
                 + " ".join(f"{'+' + _hours(p['start_hours'][d]):>12s} " for d in DEVICES))
    lines.append("* includes estimated (not measured) table entries; ? some jobs not priced (below). Start-up: importing torch per job (profiles/full "
                 "runs jobs as processes; with --force-use-threads a worker pool pays it once per worker)")
    slots = p.get("runs_per_device", 1)
    if slots > 1:
        lines.append(f"device_slots: {slots} runs share each GPU, so tiny launch-bound runs take about 1/{slots} "
                     f"of their H100 hours in wall time")
    for d, info in p["devices"].items():
        lines.append(f"{DEVICES.get(d, d)}: {info.get('summary', '')}")
    for d, keys in p["not_applicable"].items():
        lines.append(f"not priced on {d} (the table says why), left out of its total: {sum(keys.values())} jobs:")
        lines += [f"  {k} ({n} jobs)" for k, n in sorted(keys.items())]
    for d, keys in p["unpriced"].items():
        lines.append(f"UNPRICED on {d}: {sum(keys.values())} jobs have no entry in {p['table']} and are left out "
                     f"of its total; add them (python benchmarks/cost_table.py):")
        lines += [f"  {k} ({n} jobs)" for k, n in sorted(keys.items())]
    return "\n".join(lines)
