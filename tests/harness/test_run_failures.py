"""A run's jobs after training (sampling, capability scores, evaluation) that raise mark the run
failed, keep the traceback, and leave nothing that is read as a result."""
import pandas as pd
import pytest

from lossbench import io, runner


def _trained_run(tmp_path):
    info = {"track": "t", "track_version": 1, "dataset": "d", "method": "m", "method_version": 1, "variant": "default",
            "seed": 0, "run_id": "r", "task": "classification", "status": "ok", "wall_seconds": 1.5}
    io.write_json(tmp_path / "train.json", info)
    return info


def test_a_stage_that_raises_marks_the_run_failed(tmp_path):
    _trained_run(tmp_path)
    wrote = []
    with runner.failing_stage(tmp_path, "pref_sample_eval", tmp_path / "stage.log", placeholder=lambda: wrote.append(1)):
        raise MemoryError("CUDA out of memory (simulated)")
    info = io.read_json(tmp_path / "train.json")
    assert info["status"] == "failed" and info["error"] == {
        "type": "MemoryError", "message": "CUDA out of memory (simulated)", "stage": "pref_sample_eval"}
    assert wrote == [1]  # the job's outputs exist, so the DAG goes on
    assert "Traceback" in (tmp_path / "stage.log").read_text()
    assert len(runner.failure_history(tmp_path)) == 1  # the retry token of train_run changes

    metrics = runner.evaluate_run(tmp_path)
    assert list(metrics.metric) == ["train/wall_seconds"] and list(metrics.status) == ["failed"]
    assert io.read_json(tmp_path / "run.json")["metrics"] == {"train/wall_seconds": 1.5}


def test_an_evaluation_that_raises_marks_the_run_failed(tmp_path, monkeypatch):
    _trained_run(tmp_path)

    class Broken:
        @staticmethod
        def evaluate_run(run_dir, info):
            raise ValueError("corrupt predictions")

    monkeypatch.setattr(runner.tasks, "get", lambda task: Broken)
    metrics = runner.evaluate_run(tmp_path, tmp_path / "eval.log")
    assert list(metrics.status) == ["failed"] and list(metrics.metric) == ["train/wall_seconds"]
    assert io.read_json(tmp_path / "run.json")["error"]["stage"] == "evaluate_run"
    assert "corrupt predictions" in (tmp_path / "eval.log").read_text()


def test_the_failure_history_grows_with_each_failure(tmp_path):
    run = _trained_run(tmp_path)
    for n in (1, 2):
        runner.record_failure(run, tmp_path, RuntimeError(f"boom {n}"), tmp_path / "train.log")
        assert [h["error"]["message"] for h in runner.failure_history(tmp_path)] == [f"boom {k}" for k in range(1, n + 1)]
    assert pd.read_csv(tmp_path / "curves.csv").empty  # nothing half-written is kept


def test_no_history_for_a_run_that_never_failed(tmp_path):
    assert runner.failure_history(tmp_path) == []


@pytest.mark.parametrize("pattern,fails", [("*/m/*/seed0", True), ("*/m/*/seed1", False), ("", False)])
def test_fault_injection_matches_run_names(monkeypatch, pattern, fails):
    monkeypatch.setenv("LOSSBENCH_FAIL_RUNS", pattern)
    run = {"track": "t", "dataset": "d", "method": "m", "variant": "default", "seed": 0}
    if fails:
        with pytest.raises(RuntimeError, match="injected"):
            runner._injected_failure(run)
    else:
        runner._injected_failure(run)
