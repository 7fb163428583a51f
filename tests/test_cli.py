import json
import subprocess
import sys
from pathlib import Path

import methods
import data

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "lossbench", *args], cwd=cwd, capture_output=True, text=True)


def test_list_shows_every_registered_name():
    out = _cli("list")
    assert out.returncode == 0, out.stderr
    for name in list(methods.REGISTRY) + data.names():
        assert name in out.stdout
    assert "classification" in out.stdout


def test_validate_reports_typos():
    assert _cli("validate", "config/full.yaml").returncode == 0


def test_run_unknown_method_lists_valid(tmp_path):
    out = _cli("run", "--dataset", "digits_lt10", "--method", "focall", "--out", str(tmp_path))
    assert out.returncode == 2 and "Did you mean focal" in out.stderr


def test_run_one_by_hand(tmp_path):
    out = _cli("run", "--dataset", "mnist1d_sym40", "--method", "focal", "--seed", "1", "--set", "gamma=1.0",
               "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["status"] == "ok" and report["hparams"] == {"gamma": 1.0}
    assert 0.0 <= report["metrics"]["test/balanced_accuracy"] <= 1.0
    assert (tmp_path / "run" / "run.json").exists() and (tmp_path / "run" / "metrics.csv").exists()


def test_publish_freezes_results_and_renders_them(tmp_path):
    import json as _json

    from tests.report.test_build import write_fixture

    results = write_fixture(tmp_path / "results")
    out = _cli("publish", str(results), "fixture_set", "--config", "config/smoke.yaml", "--into", str(tmp_path / "pub"))
    assert out.returncode != 0 and "dirty" in out.stderr  # the fixture says git_dirty: true
    prov = _json.loads((results / "provenance.json").read_text())
    (results / "provenance.json").write_text(_json.dumps({**prov, "git_dirty": False}))
    out = _cli("publish", str(results), "fixture_set", "--config", "config/smoke.yaml", "--into", str(tmp_path / "pub"))
    assert out.returncode == 0, out.stderr[-3000:]
    dest = tmp_path / "pub" / "fixture_set"
    assert (dest / "summary.csv").exists() and (dest / "config" / "smoke.yaml").exists()
    assert (dest / "report" / "index.html").exists()
    again = _cli("publish", str(results), "fixture_set", "--config", "config/smoke.yaml", "--into", str(tmp_path / "pub"))
    assert again.returncode != 0 and "frozen" in again.stderr
