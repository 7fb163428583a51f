"""Integrity of results (issue 16): a changed prepared file, metrics file, predictions file or curves
file is refused and named by the pipeline step that reads it (train / evaluate / aggregate) and by
`lossbench verify`; truncated files are named; an interrupted attempt is retried; the published
sets verify clean. Two tiny in-process classification runs, no Snakemake."""
import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lossbench import config as lbconfig
from lossbench import io, runner, verify
from tests.test_workflow import ROOT, _reduced_classification_track

RUN = Path("results/itest/runs/classification/digits_lt10/erm/default")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, one_torch_thread):
    """A working folder with a prepared digits source and two trained, evaluated, aggregated runs."""
    work = tmp_path_factory.mktemp("integrity") / "work"
    prepared = work / "resources/data/digits/prepared.npz"
    runner.prepare_source("digits", prepared)
    track = _reduced_classification_track(methods=("erm",), seeds=(0, 1))
    track["protocols"]["mlp_adam"]["budget"]["steps"] = 10
    cwd = os.getcwd()
    os.chdir(work)  # inputs relative to the working folder, as Snakemake passes them
    try:
        for seed in (0, 1):
            run = lbconfig.resolve_run(track, "digits_lt10", "erm", seed)
            rel = prepared.relative_to(work)
            inputs = {"data": str(rel), "data_sha256": str(io.sidecar(rel))}
            assert runner.train_run(run, inputs, work / RUN / f"seed{seed}")["status"] == "ok"
            runner.evaluate_run(work / RUN / f"seed{seed}")
    finally:
        os.chdir(cwd)
    runner.aggregate([work / RUN / "seed0", work / RUN / "seed1"], work / "results/itest", {"profile": "itest"})
    return work


@pytest.fixture
def work(pristine, tmp_path):
    shutil.copytree(pristine, tmp_path / "work")
    return tmp_path / "work"


def _runs(work):
    return [work / RUN / "seed0", work / RUN / "seed1"]


def _verify(path, capsys):
    code = verify.main([str(path)])
    return code, capsys.readouterr().out


# ------------------------------------------------------------------------------ what is recorded
def test_every_artefact_is_recorded(pristine):
    run_dir = pristine / RUN / "seed0"
    info = io.read_json(run_dir / "train.json")
    assert set(info["outputs_sha256"]) == {"curves.csv", "predictions.npz", "predictions_valsel.npz"}
    assert info["inputs_sha256"]["data"] == io.read_sidecar(pristine / "resources/data/digits/prepared.npz")
    run = io.read_json(run_dir / "run.json")
    assert set(run["evaluation_sha256"]) == {"metrics.csv", "per_class.csv", "train.json"}
    assert set(io.read_manifest(pristine / "results/itest")) == set(runner.TIDY_FILES)


def test_clean_results_verify(pristine, capsys):
    code, out = _verify(pristine / "results/itest", capsys)
    assert code == 0, out
    assert "2 runs" in out and "0 problems" in out


# ------------------------------------------------------------------------------ prepared data
def test_a_changed_prepared_file_is_refused_by_training(work, capsys):
    prepared = work / "resources/data/digits/prepared.npz"
    recorded = io.read_sidecar(prepared)
    arrays = io.read_npz(prepared)
    arrays["y_train"] = np.random.default_rng(0).permutation(arrays["y_train"])  # label-permuted
    io.write_npz(prepared, **arrays)
    run = io.read_json(work / RUN / "seed0" / "train.json")
    with pytest.raises(io.IntegrityError) as e:
        runner.train_run(run, {"data": str(prepared)}, work / "retrain")
    assert str(prepared) in str(e.value) and recorded in str(e.value) and io.sha256_file(prepared) in str(e.value)
    assert not (work / "retrain" / "train.json").exists()  # nothing trained, nothing recorded as a result
    code, out = _verify(work / "results/itest", capsys)  # the runs trained on another file
    assert code == 1 and str(prepared) in out


def test_a_truncated_prepared_file_is_named(work):
    prepared = work / "resources/data/digits/prepared.npz"
    prepared.write_bytes(prepared.read_bytes()[:1000])
    with pytest.raises(io.IntegrityError, match=str(prepared)):
        runner.check_inputs({"data": str(prepared)})
    io.sidecar(prepared).unlink()  # made outside the pipeline: no record, the read still names it
    with pytest.raises(io.CorruptFile, match=str(prepared)):
        io.read_npz(prepared)


# ------------------------------------------------------------------------------ a run's artefacts
def test_the_validation_selected_checkpoint_is_evaluated(pristine):
    """train/valsel_step is the first argmax of the run's recorded val curve, and test_valsel/* sit
    beside test/* in metrics.csv (issue 19)."""
    run_dir = pristine / RUN / "seed0"
    curve = pd.read_csv(run_dir / "curves.csv").query("metric == 'val/balanced_accuracy'")
    metrics = dict(pd.read_csv(run_dir / "metrics.csv")[["metric", "value"]].values)
    best = curve.loc[curve["value"].idxmax()]  # idxmax: the first maximum (the earlier step)
    assert metrics["train/valsel_step"] == best["step"] == io.read_json(run_dir / "train.json")["valsel_step"]
    assert metrics["val_valsel/balanced_accuracy"] == pytest.approx(best["value"])
    for m in ("balanced_accuracy", "accuracy", "worst_class_accuracy"):
        assert 0 <= metrics[f"test_valsel/{m}"] <= 1 and f"test/{m}" in metrics


@pytest.mark.parametrize("name", ["predictions.npz", "predictions_valsel.npz"])
def test_another_runs_predictions_are_refused_by_evaluation(work, name, capsys):
    seed0, seed1 = _runs(work)
    shutil.copy(seed1 / name, seed0 / name)
    with pytest.raises(io.IntegrityError) as e:
        runner.evaluate_run(seed0)
    msg = str(e.value)
    assert str(seed0 / name) in msg and str(seed0 / "train.json") in msg
    assert io.sha256_file(seed1 / name) in msg
    assert io.read_json(seed0 / "train.json")["outputs_sha256"][name] in msg
    assert runner.attempt_open(seed0, "evaluate_run")  # the next invocation retries it
    code, out = _verify(work / "results/itest", capsys)
    assert code == 1 and name in out


def test_an_edited_metrics_file_is_refused_by_aggregation(work, capsys):
    seed0, seed1 = _runs(work)
    metrics = pd.read_csv(seed0 / "metrics.csv")
    metrics.loc[metrics.metric == "test/balanced_accuracy", "value"] = 0.99
    io.write_csv(seed0 / "metrics.csv", metrics)
    with pytest.raises(io.IntegrityError, match=str(seed0 / "metrics.csv")):
        runner.aggregate([seed0, seed1], work / "agg", {"profile": "itest"})
    assert not (work / "agg" / "summary.csv").exists()
    code, out = _verify(work / "results/itest", capsys)
    assert code == 1 and str(seed0 / "metrics.csv") in out


def test_a_halved_curves_file_is_refused_by_aggregation(work, capsys):
    seed0, seed1 = _runs(work)
    curves = pd.read_csv(seed1 / "curves.csv")
    io.write_csv(seed1 / "curves.csv", curves.iloc[: len(curves) // 2])
    with pytest.raises(io.IntegrityError, match=str(seed1 / "curves.csv")):
        runner.aggregate([seed0, seed1], work / "agg", {"profile": "itest"})
    code, out = _verify(seed1, capsys)  # one run folder
    assert code == 1 and str(seed1 / "curves.csv") in out


def test_an_edited_summary_is_found_by_verify(work, capsys):
    results = work / "results/itest"
    summary = pd.read_csv(results / "summary.csv")
    summary.loc[summary.metric == "test/accuracy", "value"] = 0.5
    io.write_csv(results / "summary.csv", summary)
    code, out = _verify(results, capsys)
    assert code == 1 and str(results / "summary.csv") in out and "SHA256SUMS" in out
    io.write_manifest(results, runner.TIDY_FILES)  # even with a manifest rewritten to match
    code, out = _verify(results, capsys)
    assert code == 1 and "differ from" in out and "metrics.csv" in out


@pytest.mark.parametrize("name", ["run.json", "train.json", "predictions.npz", "predictions_valsel.npz", "metrics.csv"])
def test_a_truncated_run_file_is_named(work, name, capsys):
    seed0, seed1 = _runs(work)
    path = seed0 / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, out = _verify(work / "results/itest", capsys)
    assert code == 1 and str(path) in out
    if name == "run.json":
        with pytest.raises(io.CorruptFile, match=str(path)):
            runner.aggregate([seed0, seed1], work / "agg", {"profile": "itest"})
    if name in ("train.json", "predictions.npz", "predictions_valsel.npz"):
        with pytest.raises((io.CorruptFile, io.IntegrityError), match=str(path)):
            runner.evaluate_run(seed0)


# ------------------------------------------------------------------------------ failed reruns
def test_an_interrupted_attempt_changes_the_retry_token(tmp_path):
    """Snakemake deletes a failed job's outputs and records its params: an attempt that started and
    never ended must change the token, or the run is never retried ("Nothing to be done")."""
    assert runner.retry_token(tmp_path) == ""
    runner.begin_attempt(tmp_path, "train_run")
    runner.end_attempt(tmp_path, "train_run")
    assert runner.retry_token(tmp_path) == ""  # a finished attempt is no failure
    runner.begin_attempt(tmp_path, "train_run")  # killed, or raised before recording anything
    token = runner.retry_token(tmp_path)
    assert token == "retry after 1 failed attempts"
    runner.begin_attempt(tmp_path, "train_run")  # the retry
    runner.end_attempt(tmp_path, "train_run")
    assert runner.retry_token(tmp_path) == token  # stable: no rerun after the retry succeeded
    assert runner.retry_token(tmp_path, "evaluate_run") == ""  # each stage has its own
    runner.begin_attempt(tmp_path, "evaluate_run")
    assert runner.retry_token(tmp_path, "evaluate_run") == "retry after 1 failed attempts"
    assert runner.retry_token(tmp_path) == token


def test_the_rules_declare_what_later_rules_read():
    """aggregate_results reads curves.csv and per_class.csv of every run; train_run reads the prepared
    source's checksum; evaluate_run reruns after an interrupted attempt."""
    report = (ROOT / "workflows/report.smk").read_text()
    assert 'f"{d}/curves.csv"' in report and 'f"{d}/per_class.csv"' in report and "SHA256SUMS" in report
    assert "prepared.npz.sha256" in (ROOT / "workflows/data.smk").read_text()
    assert "prepared_checksums" in (ROOT / "workflows/train.smk").read_text()
    assert "evaluate_retry_token" in (ROOT / "workflows/evaluate.smk").read_text()


# ------------------------------------------------------------------------------ published sets
def test_the_published_sets_verify_clean(capsys):
    rep = verify.verify(ROOT / "results/published")
    assert len(rep.parts) >= 4 and rep.ok(), rep.format()
    for part in rep.parts:  # their tables are stored gzipped, and the manifest records the .gz
        listed = io.read_manifest(part.path)
        assert all(f"{n}.gz" in listed and not (part.path / n).exists() for n in runner.GZIPPED), part.path


def test_a_corrupted_gzipped_table_is_caught_by_its_checksum(tmp_path, capsys):
    shutil.copytree(ROOT / "results/published/grokking_sc_cpu", tmp_path / "set")
    verify.write_manifest(tmp_path / "set")
    listed = io.read_manifest(tmp_path / "set")
    assert "summary.csv.gz" in listed and not any(n.startswith("report/") for n in listed)
    code, out = _verify(tmp_path / "set", capsys)
    assert code == 0 and verify.verify(tmp_path / "set").ok(strict=True), out
    packed = tmp_path / "set" / "summary.csv.gz"
    blob = bytearray(packed.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte inside the deflate stream
    packed.write_bytes(bytes(blob))
    code, out = _verify(tmp_path / "set", capsys)
    assert code == 1 and f"{packed}: sha256" in out and "SHA256SUMS" in out, out


def _published_plain(tmp_path) -> Path:
    """A copy of a published set as sets were published before publish gzipped the tables."""
    folder = tmp_path / "set"
    shutil.copytree(ROOT / "results/published/grokking_sc_cpu", folder)
    for name in runner.GZIPPED:
        (folder / name).write_bytes(gzip.decompress((folder / f"{name}.gz").read_bytes()))
        (folder / f"{name}.gz").unlink()
    verify.write_manifest(folder)
    return folder


def test_a_set_published_plain_is_compressed_and_reads_the_same(tmp_path, capsys):
    from lossbench import cli
    from lossbench.report import build

    folder = _published_plain(tmp_path)
    plain = {n: (folder / n).read_bytes() for n in runner.GZIPPED}
    before = build.load_results(folder)
    assert verify.verify(folder).ok(strict=True)
    assert cli.main(["publish", "--compress-existing", str(folder)]) == 0
    assert "summary.csv, curves.csv, per_class.csv gzipped" in capsys.readouterr().out
    listed = io.read_manifest(folder)
    for name in runner.GZIPPED:
        assert not (folder / name).exists() and f"{name}.gz" in listed and name not in listed
        assert gzip.decompress((folder / f"{name}.gz").read_bytes()) == plain[name]
    assert verify.verify(folder).ok(strict=True), verify.verify(folder).format()
    after = build.load_results(folder)
    for key in ("summary", "curves", "per_class"):
        pd.testing.assert_frame_equal(before[key], after[key])
    manifest = (folder / io.MANIFEST).read_bytes()
    assert verify.compress_tables(folder) == [] and (folder / io.MANIFEST).read_bytes() == manifest  # done once
    assert cli.main(["publish", "--compress-existing", str(folder), "results/x", "x"]) == 2  # one mode or the other


def test_compressing_refuses_a_set_changed_since_it_was_published(tmp_path, capsys):
    from lossbench import cli

    folder = _published_plain(tmp_path)
    with open(folder / "runs.json", "a") as f:
        f.write("\n")
    with pytest.raises(io.IntegrityError, match="runs.json"):
        verify.compress_tables(folder)
    assert cli.main(["publish", "--compress-existing", str(folder)]) == 1
    assert "runs.json" in capsys.readouterr().err
    assert all((folder / n).exists() and not (folder / f"{n}.gz").exists() for n in runner.GZIPPED)


def test_gzip_writes_are_byte_identical(tmp_path):
    table = b"track,metric,value\n" + b"".join(b"t,m%d,%d\n" % (i, i * i) for i in range(20000))
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_bytes(table)
    os.utime(tmp_path / "b.csv", (1e9, 1e9))  # another name and modification time
    first = io.write_gzip(tmp_path / "a.csv.gz", tmp_path / "a.csv").read_bytes()
    second = io.write_gzip(tmp_path / "out" / "b.csv.gz", tmp_path / "b.csv").read_bytes()
    assert first == second and gzip.decompress(first) == table
    assert first[3] == 0 and first[4:8] == bytes(4)  # no flags (no file name), mtime 0
    assert io.sha256_file(tmp_path / "a.csv.gz", decompressed=True) == io.sha256_file(tmp_path / "a.csv")


def test_a_table_is_read_plain_or_gzipped(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"summary\.csv \(or summary\.csv\.gz\)"):
        io.tidy_path(tmp_path, "summary.csv")
    assert io.tidy_path(tmp_path, "summary.csv", missing_ok=True) is None
    df = pd.DataFrame({"metric": ["a", "b"], "value": [1.5, 2.0]})
    io.write_csv(tmp_path / "plain" / "summary.csv", df)
    io.write_gzip(tmp_path / "packed" / "summary.csv.gz", tmp_path / "plain" / "summary.csv")
    for form, name in (("plain", "summary.csv"), ("packed", "summary.csv.gz")):
        path = io.tidy_path(tmp_path / form, "summary.csv")
        assert path == tmp_path / form / name
        pd.testing.assert_frame_equal(io.read_csv(path), df)
    shutil.copy(tmp_path / "plain" / "summary.csv", tmp_path / "packed")
    with pytest.raises(FileExistsError, match="both"):  # which one is the table?
        io.tidy_path(tmp_path / "packed", "summary.csv")
    (tmp_path / "bad.csv.gz").write_bytes(b"\x1f\x8b\x08\x00 not deflate")
    with pytest.raises(io.CorruptFile, match="bad.csv.gz"):
        io.read_csv(tmp_path / "bad.csv.gz")


# ------------------------------------------------------------------------------ unsafe loads
def test_a_teacher_with_pickled_code_is_refused(tmp_path):
    import torch

    from lossbench.tasks.classification import load_teacher

    torch.save({"model": {"name": "mlp"}, "hook": Path}, tmp_path / "t.pt")  # a class: not weights-only
    with pytest.raises(io.CorruptFile, match="weights-only"):
        load_teacher(tmp_path / "t.pt", "cpu")


def _cifar_archive(path, blob_for):
    import io as pyio
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            blob = blob_for(name)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, pyio.BytesIO(blob))


def test_cifar_reads_the_archive_not_an_extracted_folder(tmp_path):
    import os
    import pickle

    from lossbench.data import cifar

    rng = np.random.default_rng(0)
    batch = lambda name: pickle.dumps({"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),  # noqa: E731
                                       "labels": [1, 2]})
    _cifar_archive(tmp_path / "cifar-10-python.tar.gz", batch)
    first = cifar.prepare({"variant": "cifar10"}, raw_dir=tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(batch("x"))  # replaced after extraction
    again = cifar.prepare({"variant": "cifar10"}, raw_dir=tmp_path)
    np.testing.assert_array_equal(first["x_heldout"], again["x_heldout"])  # read from the archive

    (tmp_path / "cifar-10-python.tar.gz").unlink()  # a folder alone: only with the official MD5s
    with pytest.raises(RuntimeError, match="data_batch_1: MD5"):
        cifar.prepare({"variant": "cifar10"}, raw_dir=tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    _cifar_archive(tmp_path / "evil.tar.gz", lambda name: pickle.dumps({"data": Evil(), "labels": []}))
    shutil.rmtree(tmp_path / "cifar-10-batches-py")
    with pytest.raises(RuntimeError, match="refusing to load"):
        cifar.prepare({"variant": "cifar10"}, raw_dir=tmp_path)


# ------------------------------------------------------------------------------ movable results
def test_lm_eval_task_files_hold_relative_paths(tmp_path):
    from lossbench.data import lm_eval_tasks

    prepared = {"test_texts": np.array(["\n".join(f"line {i} of passage {k}, with some words" for i in range(12))
                                        for k in range(8)])}
    names = lm_eval_tasks.write_lm_eval_tasks(prepared, tmp_path / "a", seed=0, n_docs=4)
    shutil.move(tmp_path / "a", tmp_path / "b")  # a results folder moved elsewhere
    for name in names:
        text = (tmp_path / "b" / f"{name}.yaml").read_text()
        assert str(tmp_path) not in text and "custom_dataset: !function lossbench.data.lm_eval_tasks.load_local" in text
        ds = lm_eval_tasks.load_local(data_file=f"{name}.jsonl", config_source=str(tmp_path / "b" / f"{name}.yaml"),
                                      version=1.0)
        rows = [json.loads(x) for x in (tmp_path / "b" / f"{name}.jsonl").read_text().splitlines()]
        assert ds["test"].num_rows == len(rows) == 4


def test_the_same_weights_give_the_same_bytes(tmp_path):
    # torch.save names its archive after the file written (a random temporary name in an atomic
    # write): the bytes, and so every recorded sha256, must not depend on it
    import torch
    state = {"w": torch.arange(6.0).view(2, 3)}
    io.write_torch(tmp_path / "a.pt", state)
    io.write_torch(tmp_path / "a.pt", state)  # the same file again: a new temporary name
    first = io.sha256_file(tmp_path / "a.pt")
    io.write_torch(tmp_path / "b.pt", state)
    assert io.sha256_file(tmp_path / "b.pt") == first
    assert torch.equal(torch.load(tmp_path / "b.pt", weights_only=True)["w"], state["w"])
