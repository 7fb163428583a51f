"""`lossbench plan`: job counts are Snakemake's own, costs are the table's per-job figures summed,
and a job the table does not know is reported, never priced at zero."""
import re
from collections import Counter
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lossbench import methods
from lossbench import config as lbconfig
from lossbench import plan
from lossbench.cli import main

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--workflow-profile", "none"]


def _track(name: str, **changes) -> dict:
    track = yaml.safe_load((ROOT / f"config/tracks/{name}/smoke.yaml").read_text())
    return {**track, **changes}


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """A small profile touching every kind of rule: classification with a teacher, the adversarial
    class and the optimizer axis, the preference stages, grokking and a kernels slice."""
    tmp = tmp_path_factory.mktemp("plan")
    cls = _track("classification", methods=["erm", "kd", "pgd_at"], seeds=[0, 1], method_hparams={},
                 dataset_methods={})
    cls["protocols"] = {"mlp_adam": {**cls["protocols"]["mlp_adam"], "datasets": ["mnist1d_lt100"]}}
    pref = _track("preference", methods=["dpo", "ipo"], seeds=[0], dataset_methods={"synthpref_eps20": ["dpo"]})
    pref["sweep"] = {m: pref["sweep"][m] for m in pref["methods"]}
    kernels = yaml.safe_load((ROOT / "config/tracks/kernels/smoke.yaml").read_text())
    kernels["slices"] = {"ce_weighted": kernels["slices"]["ce_weighted"]}
    paths = {}
    for name, t in {"classification": cls, "preference": pref, "grokking": _track("grokking"), "kernels": kernels}.items():
        paths[name] = tmp / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(t))
    cfg = tmp / "reduced.yaml"
    cfg.write_text(yaml.safe_dump({"profile": "plantest", "device": "cpu", "benchmarks": {"kernels": str(paths.pop("kernels"))},
                                   "tracks": {k: str(v) for k, v in paths.items()}}))
    return cfg


def _snakemake_rule_counts(cfg) -> dict:
    """Snakemake's own job stats table (`--quiet rules`), parsed independently of lossbench.plan."""
    out = subprocess.run(SNAKEMAKE + ["--configfile", str(cfg), "--forceall", "-n", "--quiet", "rules", "--cores", "1"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    stats = out.stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def test_job_counts_per_rule_equal_snakemakes_dry_run(reduced):
    jobs = plan.dag_jobs(reduced)
    counts = {}
    for job in jobs:
        counts[job.rule] = counts.get(job.rule, 0) + 1
    assert counts == _snakemake_rule_counts(reduced)
    # and the per-track split of the runs is the profile's runs
    tracks = lbconfig.load_profile(reduced)[1]
    per_track = {t: sum(j.rule == "train_run" and j.wildcards["track"] == t for j in jobs) for t in tracks}
    assert per_track == {t: sum(r[0] == t for r in lbconfig.runs(tracks)) for t in tracks}
    assert counts["classification_teacher"] == 2 and counts["kernel_bench"] == 1


def _grokking_jobs():
    wc = {"profile": "p", "track": "grokking", "dataset": "mod113_add_f40", "method": "erm", "variant": "default"}
    return [plan.Job("train_run", {**wc, "seed": "0"}), plan.Job("train_run", {**wc, "seed": "1"}),
            plan.Job("evaluate_run", {**wc, "seed": "0"}), plan.Job("evaluate_run", {**wc, "seed": "1"}),
            plan.Job("aggregate_results", {"profile": "p"}), plan.Job("all")]


TINY = {"devices": {"cpu": {"summary": "test"}, "cuda": {"summary": "test"}},
        "jobs": {"train_run/grokking/*": {"cpu": {"unit": "step", "unit_s": 0.01, "fixed_s": 1.0},
                                          "cuda": {"unit": "step", "unit_s": 0.001, "fixed_s": 3.0, "estimate": True}},
                 "evaluate_run/*": {"cpu": {"fixed_s": 0.5}},
                 "aggregate_results/*": {"cpu": {"unit": "run", "unit_s": 0.1}},
                 "all/*": {"cpu": {"fixed_s": 0.0}}}}


def test_estimate_is_the_sum_of_per_job_costs_from_the_table():
    tracks = {"grokking": _track("grokking")}  # 200 steps a run
    est = plan.estimate(_grokking_jobs(), tracks, {}, TINY)
    # two runs of 1 s + 200 x 0.01 s, two evaluations of 0.5 s, aggregation of 2 runs x 0.1 s
    assert est["total_hours"]["cpu"] * 3600 == pytest.approx(2 * (1 + 200 * 0.01) + 2 * 0.5 + 2 * 0.1)
    rows = {(r["track"], r["rule"]): r for r in est["rows"]}
    assert rows[("grokking", "train_run")]["cpu_hours"] * 3600 == pytest.approx(6.0)
    assert rows[("grokking", "train_run")]["estimated"] == ["cuda"]
    assert est["jobs"] == 6 and "cpu" not in est["unpriced"]
    # cuda: only the runs are in the table; the rest is reported, not counted as free
    assert est["total_hours"]["cuda"] * 3600 == pytest.approx(2 * (3 + 200 * 0.001))
    assert sum(est["unpriced"]["cuda"].values()) == 4


def test_a_protocol_missing_from_the_table_is_reported_not_priced_at_zero():
    table = {**TINY, "jobs": {k: v for k, v in TINY["jobs"].items() if not k.startswith("train_run")}}
    est = plan.estimate(_grokking_jobs(), {"grokking": _track("grokking")}, {}, table)
    (key,) = est["unpriced"]["cpu"]
    assert key.startswith("train_run/grokking/grok_smoke-") and est["unpriced"]["cpu"][key] == 2
    text = plan.format_text({"config": "c.yaml", "profile": "p", "dry_run_seconds": 1, "table": "t.yaml",
                             "devices": table["devices"], **est})
    assert "UNPRICED on cpu: 2 jobs" in text and key in text and "≥ " in text


def test_a_protocol_edit_changes_its_key():
    track = _track("grokking")
    job = _grokking_jobs()[0]
    before = plan.Pricer({"grokking": track}, {}, TINY, 0).key(job)
    track["protocols"]["grok_smoke"]["model"] = {"hidden": [400, 400]}
    assert plan.Pricer({"grokking": track}, {}, TINY, 0).key(job) != before


def test_epoch_budgets_need_the_training_set_size():
    track = yaml.safe_load((ROOT / "config/tracks/classification/full.yaml").read_text())
    wc = {"profile": "p", "track": "classification", "dataset": "mnist1d_lt10", "variant": "tuned", "seed": "0"}  # tuned track
    erm, self_distill = plan.Job("train_run", {**wc, "method": "erm"}), plan.Job("train_run", {**wc, "method": "self_distill"})
    pricer = plan.Pricer({"classification": track}, {}, {**TINY, "train_examples": {"mnist1d_lt10": 1000}}, 0)
    assert pricer.units(erm) == 40 * (1000 // 128)  # 40 epochs of full batches
    rounds = methods.get("self_distill").hparams({})["rounds"]
    assert pricer.units(self_distill) == pricer.units(erm) * (1 + rounds)  # the CE round 0, then its rounds
    with pytest.raises(plan.PlanError, match="train_examples"):
        plan.Pricer({"classification": track}, {}, TINY, 0).units(erm)


def test_a_table_entry_in_the_wrong_unit_is_an_error():
    table = {**TINY, "jobs": {"train_run/grokking/*": {"cpu": {"unit": "run", "unit_s": 1.0}}}}
    with pytest.raises(plan.PlanError, match="per run"):
        plan.estimate(_grokking_jobs()[:1], {"grokking": _track("grokking")}, {}, table)


def test_parse_checks_snakemakes_total():
    text = "rule a:\n    jobid: 1\n    wildcards: x=1, y=2\nrule all:\n    jobid: 0\nJob stats:\ntotal        2\n"
    jobs = plan.parse_dry_run(text)
    assert [j.rule for j in jobs] == ["a", "all"] and jobs[0].wildcards == {"x": "1", "y": "2"}
    with pytest.raises(plan.PlanError, match="parsed 2 job blocks"):
        plan.parse_dry_run(text.replace("total        2", "total        3"))


def test_cli_plan_json(reduced, tmp_path, capsys):
    table = tmp_path / "t.yaml"
    table.write_text(yaml.safe_dump(TINY))
    assert main(["plan", str(reduced), "--table", str(table), "--format", "json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["profile"] == "plantest" and out["jobs"] == sum(r["jobs"] for r in out["rows"])
    assert out["unpriced"]["cpu"]  # the tiny table prices grokking runs only


def test_committed_table_prices_the_smoke_profile(capsys):
    """The committed throughput table has an entry for every job of the default profile."""
    assert main(["plan"]) == 0
    text = capsys.readouterr().out
    assert "UNPRICED" not in text and "profile smoke" in text


def test_a_device_the_table_rules_out_is_said_not_priced():
    """An entry may say a device does not apply (the GPU kernel grid on a CPU): left out and said."""
    table = {**TINY, "jobs": {**TINY["jobs"], "train_run/grokking/*": {"cpu": {"not_applicable": "GPU only"}}}}
    est = plan.estimate(_grokking_jobs(), {"grokking": _track("grokking")}, {}, table)
    assert "cpu" not in est["unpriced"] and sum(est["not_applicable"]["cpu"].values()) == 2
    text = plan.format_text({"config": "c.yaml", "profile": "p", "dry_run_seconds": 1, "table": "t.yaml",
                             "devices": table["devices"], **est})
    assert "not priced on cpu" in text and "GPU only" in text and "n/a?" in text


def test_keys_a_rule_does_not_read_leave_its_digest_alone():
    """seeds_together is read by train_together only, eval.revision_methods by the preference
    evaluation only: adding them keeps every other rule's table key (and its measured entry)."""
    block = {"model": {"name": "mlp"}, "seeds_together": True, "eval": {"revisions": 2, "revision_methods": ["dpo"]}}
    assert plan.read_by(block, "train_run") == {"model": {"name": "mlp"}, "eval": {"revisions": 2}}
    assert plan.read_by(block, "train_together")["seeds_together"] is True
    assert plan.read_by(block, "pref_sample_eval")["eval"] == {"revisions": 2, "revision_methods": ["dpo"]}


def test_seeds_trained_together_are_priced_once_as_their_separate_runs(monkeypatch):
    """The group job costs its seeds' separate runs (no table entry of its own); each seed's train_run
    is a copy, priced at 0; an ungrouped run keeps its own price."""
    wc = {"track": "t", "dataset": "d", "method": "m", "variant": "default"}
    pricer = plan.Pricer({}, {}, {"jobs": {}}, 0, groups=Counter({("t", "d", "m", "default"): 3}))
    monkeypatch.setattr(pricer, "key", lambda job: f"{job.rule}/key")
    monkeypatch.setattr(pricer, "_priced", lambda job, key, device: (2.0, False) if job.rule == "train_run" else (None, False))
    assert pricer.seconds(plan.Job("train_together", wc), "train_together/key", "cpu") == (6.0, True)
    assert pricer.seconds(plan.Job("train_run", {**wc, "seed": "1"}), "train_run/key", "cpu") == (0.0, True)
    alone = plan.Job("train_run", {**wc, "method": "kd", "seed": "1"})
    assert pricer.seconds(alone, "train_run/key", "cpu") == (2.0, False)
