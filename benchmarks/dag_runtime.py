"""Where a Snakemake run's time went, per track: read its log (.snakemake/log/*.snakemake.log) and
add up each job's wall time (start to "Finished jobid", 1 s resolution) by track and rule.
Prints figures; asserts nothing.

    python benchmarks/dag_runtime.py                       # the newest log
    python benchmarks/dag_runtime.py .snakemake/log/X.snakemake.log

Job seconds are wall seconds of jobs that mostly ran two at a time on a 2-core machine, so a
track's job seconds are roughly its core-seconds; the DAG's wall time is the last timestamp minus
the first. Jobs without a track wildcard count as "data" (prepare_source), "report"
(aggregate, build) or the benchmark they belong to (kernels).
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lossbench.plan import RULE, job_track, parse_wildcards  # noqa: E402  (one grouping for plan and runtime)

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
FIELD = re.compile(r"^\s+(jobid|wildcards): (.*)$")
DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


def _track(rule: str, wildcards: str) -> str:
    return job_track(rule, parse_wildcards(wildcards))


def parse(lines):
    """[(track, rule, seconds)] of every finished job, and the log's wall seconds."""
    now = first = None
    started, jobs = {}, []
    pending = None  # (rule, start) of the job whose fields are being read
    for line in lines:
        line = line.rstrip("\n")
        if m := STAMP.match(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or now
        elif m := RULE.match(line):
            pending = {"rule": m.group(1), "start": now, "wildcards": ""}
        elif (m := FIELD.match(line)) and pending is not None:
            if m.group(1) == "wildcards":
                pending["wildcards"] = m.group(2)
            else:
                started[m.group(2)] = pending
        elif m := DONE.match(line):
            job = started.pop(m.group(1), None)
            if job:
                jobs.append((_track(job["rule"], job["wildcards"]), job["rule"], (now - job["start"]).total_seconds()))
    return jobs, ((now - first).total_seconds() if first else 0.0)


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else max(Path(".snakemake/log").glob("*.snakemake.log"))
    jobs, wall = parse(path.read_text().splitlines())
    per_track, per_rule = defaultdict(lambda: [0, 0.0]), defaultdict(lambda: [0, 0.0])
    for track, rule, secs in jobs:
        for table, key in ((per_track, track), (per_rule, (track, rule))):
            table[key][0] += 1
            table[key][1] += secs
    total = sum(s for _, s in per_track.values())
    print(f"{path}: {len(jobs)} jobs, DAG wall {wall:.0f} s, job seconds {total:.0f}")
    print(f"{'track':16s} {'jobs':>5s} {'job s':>7s} {'share':>6s}")
    for track, (n, secs) in sorted(per_track.items(), key=lambda kv: -kv[1][1]):
        print(f"{track:16s} {n:5d} {secs:7.0f} {secs / max(total, 1e-9):6.1%}")
    print(f"\n{'track':16s} {'rule':20s} {'jobs':>5s} {'job s':>7s}")
    for (track, rule), (n, secs) in sorted(per_rule.items()):
        print(f"{track:16s} {rule:20s} {n:5d} {secs:7.0f}")


if __name__ == "__main__":
    main()
