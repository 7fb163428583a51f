"""Source recipes: embedded sources generate offline; the CIFAR download/parse path runs on a tiny
fixture written in the official python-pickle on-disk format."""
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest

from lossbench import data
from lossbench.data import cifar, digits, mnist1d


def test_mnist1d_generates_offline():
    arrays = mnist1d.prepare({"num_samples": 500, "seed": 42})
    assert arrays["x_train"].shape == (400, 40) and arrays["x_heldout"].shape == (100, 40)
    assert set(np.unique(arrays["y_train"])) == set(range(10))
    again = mnist1d.prepare({"num_samples": 500, "seed": 42})
    np.testing.assert_array_equal(arrays["x_train"], again["x_train"])


def test_digits_split_is_stratified():
    arrays = digits.prepare({"test_fraction": 0.3, "seed": 0})
    assert arrays["x_train"].shape[1] == 64 and arrays["x_train"].max() <= 1.0
    assert len(arrays["y_train"]) + len(arrays["y_heldout"]) == 1797
    assert np.bincount(arrays["y_heldout"]).min() >= 50


def _pickle_batch(n, rng, label_key):
    return pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         label_key: rng.integers(0, 10, n).tolist(), "batch_label": "fixture"})


@pytest.fixture
def cifar10_archive(tmp_path):
    """A tiny archive laid out like cifar-10-python.tar.gz (5 train batches, 1 test batch)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "downloads" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name in names:
            blob = _pickle_batch(4, rng, "labels")
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_archive_checked_and_parsed(cifar10_archive):
    path, md5 = cifar10_archive
    assert cifar.download("https://example.invalid/x.tar.gz", path, md5, offline=True) == path
    arrays = cifar.prepare({"variant": "cifar10"}, raw_dir=path.parent)
    assert arrays["x_train"].shape == (20, 32, 32, 3) and arrays["x_train"].dtype == np.uint8
    assert arrays["x_heldout"].shape == (4, 32, 32, 3) and int(arrays["num_classes"]) == 10


def test_cifar_channel_order(cifar10_archive):
    """The pickle stores each image as 1024 red, then green, then blue bytes (row-major)."""
    path, _ = cifar10_archive
    arrays = cifar.prepare({"variant": "cifar10"}, raw_dir=path.parent)
    with open(path.parent / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"][0]
    np.testing.assert_array_equal(arrays["x_train"][0, :, :, 1].ravel(), raw[1024:2048])


def test_corrupt_archive_is_caught(cifar10_archive):
    path, md5 = cifar10_archive
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(RuntimeError, match="MD5"):
        cifar.download("https://example.invalid/x.tar.gz", path, md5, offline=True)


def test_offline_missing_archive_fails_clearly(tmp_path):
    with pytest.raises(RuntimeError, match="offline"):
        cifar.download("https://example.invalid/x.tar.gz", tmp_path / "missing.tar.gz", "0" * 32, offline=True)


def test_download_source_rejects_embedded_sources():
    with pytest.raises(ValueError, match="nothing to download"):
        data.download_source("mnist1d", "unused")
