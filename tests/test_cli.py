import json
import os
import subprocess
import sys
from pathlib import Path

from lossbench import methods
from lossbench import data

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
    out = _cli("run", "--dataset", "mnist1d_lt100", "--method", "focall", "--dry-run")
    assert out.returncode == 2 and "Did you mean focal" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_run_one_by_hand(tmp_path):
    """--direct: the in-process classification fast path (no Snakemake, no report)."""
    out = _cli("run", "--dataset", "mnist1d_sym40", "--method", "focal", "--seed", "1", "--set", "gamma=1.0",
               "--direct", "--out", str(tmp_path / "run"))
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
    assert (dest / "config" / "smoke.yaml").exists() and (dest / "report" / "index.html").exists()
    from lossbench import io, verify

    for name in ("summary.csv", "curves.csv", "per_class.csv"):  # stored gzipped, byte-reproducibly
        assert not (dest / name).exists() and io.tidy_path(dest, name) == dest / f"{name}.gz"
        again = io.write_gzip(tmp_path / f"{name}.gz", results / name)
        assert again.read_bytes() == (dest / f"{name}.gz").read_bytes()
    assert "summary.csv.gz" in io.read_manifest(dest)
    assert verify.verify(dest).ok(strict=True), verify.verify(dest).format()
    again = _cli("publish", str(results), "fixture_set", "--config", "config/smoke.yaml", "--into", str(tmp_path / "pub"))
    assert again.returncode != 0 and "frozen" in again.stderr


# ---------------------------------------------------------------- issue 17: version, help, report, run, errors
def _main(capsys, *args):
    """The CLI in this process (no interpreter start): (exit status, stdout, stderr)."""
    from lossbench import cli

    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_version():
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == "lossbench 0.1.0", out


def test_every_subcommand_has_help_and_examples():
    from lossbench import cli

    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "cmd").choices
    assert set(subs) == {"list", "validate", "run", "report", "publish", "plan", "verify"}
    for name, sub in subs.items():
        assert sub.epilog and "examples:" in sub.epilog and f"lossbench {name}" in sub.epilog, name
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.dest} has no help text"


def test_report_rebuilds_from_a_results_folder(tmp_path, capsys):
    from tests.report.test_build import write_fixture

    results = write_fixture(tmp_path / "results")
    rc, out, err = _main(capsys, "report", str(results), "--out", str(tmp_path / "html"), "--note", "rebuilt")
    assert rc == 0, err
    index = tmp_path / "html" / "index.html"
    assert out.strip() == str(index) and "rebuilt" in index.read_text()
    rc, out, err = _main(capsys, "report", str(tmp_path))  # no summary.csv there
    assert rc == 2 and err.count("\n") == 1 and "summary.csv" in err


def _one_line(err):
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_missing_config_is_one_line_exit_2(capsys):
    for args in (["list", "tracks", "--config", "nope.yaml"], ["run", "--config", "nope.yaml", "--dataset", "x",
                                                               "--method", "y"], ["validate", "nope.yaml"]):
        rc, _, err = _main(capsys, *args)
        assert rc == 2 and "no such profile file" in _one_line(err), args


def test_unknown_dataset_lists_valid_names_exit_2(capsys):
    rc, _, err = _main(capsys, "run", "--dataset", "mnist1d_lt1000", "--method", "focal", "--dry-run")
    assert rc == 2 and "Did you mean mnist1d_lt100" in _one_line(err) and "synthpref" in err
    rc, _, err = _main(capsys, "run", "--dataset", "digits_lt10", "--method", "focal", "--dry-run")
    assert rc == 2 and "no track of this profile runs dataset 'digits_lt10'" in _one_line(err)


def test_dataset_in_several_tracks_asks_for_track(tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text("extends: config/tracks/classification/smoke.yaml\ntrack: classification_b\n")
    profile = tmp_path / "two.yaml"
    profile.write_text(f"profile: two\ndevice: cpu\ntracks:\n  classification: config/tracks/classification/smoke.yaml"
                       f"\n  classification_b: {other}\n")
    rc, _, err = _main(capsys, "run", "--config", str(profile), "--dataset", "mnist1d_lt100", "--method", "focal",
                       "--dry-run")
    assert rc == 2 and "in tracks classification, classification_b; choose one with --track" in _one_line(err)


def test_device_cuda_without_cuda_exit_3(capsys):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("CUDA is available here")
    rc, _, err = _main(capsys, "run", "--dataset", "mnist1d_lt100", "--method", "focal", "--device", "cuda",
                       "--dry-run")
    assert rc == 3 and _one_line(err).startswith("error: device:")


def test_list_into_a_closed_pipe_exits_quietly():
    """`lossbench list | head -1`: no BrokenPipeError traceback; 141 as for a process SIGPIPE killed."""
    # the reader is gone before the first write (its ~20 kB would otherwise fit the pipe's buffer
    # and the command could finish before a reader closed it: a race, not a broken pipe)
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", "list"], cwd=ROOT, stdout=write,
                            stderr=subprocess.PIPE)
    os.close(write)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == "", err


def test_list_json_for_scripts(capsys):
    rc, out, _ = _main(capsys, "list", "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and {m["name"] for m in doc["methods"]} == set(methods.REGISTRY)
    assert doc["tracks"]["grokking"]["datasets"] == ["mod113_add_f40"]


def _dry(capsys, dataset, method):
    rc, out, err = _main(capsys, "run", "--dataset", dataset, "--method", method, "--seed", "0", "--dry-run",
                         "--cores", "1")
    assert rc == 0, err
    return out


def test_run_infers_the_track_dry_run(capfd):
    """One dataset of each training track: the subset profile names the dataset's track, and
    Snakemake plans the track's stages and the run under results/run_<track>_<dataset>_<method>/."""
    import yaml

    for dataset, method, track, stage in (("synthpref", "dpo", "preference", "pref_sft"),
                                          ("shakespeare_mix", "prior", "lm_pretraining", "train_run"),
                                          ("mod113_add_f40", "orthograd", "grokking", "train_run")):
        out = _dry(capfd, dataset, method)  # capfd: Snakemake's plan comes from a subprocess
        profile = yaml.safe_load(out.split("# would run")[0])
        name = f"run_{track}_{dataset}_{method}"
        assert profile["profile"] == name and list(profile["tracks"]) == [track], out
        assert profile["datasets"] == [dataset] and profile["methods"] == [method] and profile["seeds"] == [0]
        assert f"# would run: results/{name}/runs/{track}/{dataset}/{method}/" in out
        assert f"\n{stage} " in out and not (ROOT / "results" / name).exists()


def test_run_through_snakemake(capsys):
    """One tiny real classification run: its own results folder with summary.csv and a report."""
    import shutil

    name = f"test_cli_run_{os.getpid()}"
    try:
        rc, out, err = _main(capsys, "run", "--dataset", "mnist1d_sym40", "--method", "focal", "--seed", "1",
                             "--set", "gamma=1.0", "--name", name, "--cores", "2", "--format", "json")
        assert rc == 0, err[-3000:]
        rows = json.loads(out)
        assert [r["run"] for r in rows] == ["classification/mnist1d_sym40/focal/default/1"]
        assert 0.0 <= rows[0]["metrics"]["test/balanced_accuracy"] <= 1.0
        results = ROOT / "results" / name
        assert (results / "subset.yaml").exists() and (results / "report" / "index.html").exists()
        run = json.loads((results / "runs.json").read_text())[0]
        assert run["hparams"] == {"gamma": 1.0}
    finally:
        shutil.rmtree(ROOT / "results" / name, ignore_errors=True)


def test_run_refuses_a_profiles_results_folder(capsys):
    rc, _, err = _main(capsys, "run", "--dataset", "mnist1d_lt100", "--method", "focal", "--name", "smoke",
                       "--dry-run")
    assert rc == 2 and "choose another --name" in _one_line(err)
