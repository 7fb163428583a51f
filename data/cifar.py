"""CIFAR-10 / CIFAR-100 from the official python-pickle archives.

The download and its MD5 check use torchvision's utilities (`download_and_extract_archive`,
`check_integrity`); parsing reads the extracted on-disk format directly, so the same code runs
on a tiny fixture in that format in the tests. Images are kept as uint8 NHWC.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

_LAYOUT = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"], "label_key": "labels", "num_classes": 10},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"],
                 "label_key": "fine_labels", "num_classes": 100},
}


def download(url: str, archive: Path, md5: str, offline: bool = False) -> Path:
    """Fetch `archive` unless a copy with the right MD5 is there; a corrupt file is an error."""
    from torchvision.datasets.utils import check_integrity, download_url

    archive = Path(archive)
    if archive.exists() and check_integrity(str(archive), md5):
        return archive
    if archive.exists():
        raise RuntimeError(f"{archive} exists but its MD5 is not {md5}: corrupt or wrong file; delete it to re-download")
    if offline:
        raise RuntimeError(f"offline (BENCH_OFFLINE=1) and {archive} is missing; place the archive there (MD5 {md5})")
    download_url(url, str(archive.parent), filename=archive.name, md5=md5)
    if not check_integrity(str(archive), md5):
        raise RuntimeError(f"downloaded {archive} fails its MD5 check ({md5})")
    return archive


def _read_batches(folder: Path, names, label_key):
    xs, ys = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(xs).transpose(0, 2, 3, 1), np.concatenate(ys)


def prepare(params: dict, raw_dir=None) -> dict:
    """Parse an extracted archive under `raw_dir` (extracting `raw_dir/*.tar.gz` if needed)."""
    import tarfile

    layout = _LAYOUT[params["variant"]]
    raw_dir = Path(raw_dir)
    folder = raw_dir / layout["folder"]
    if not folder.exists():
        archives = sorted(raw_dir.glob("*.tar.gz"))
        if not archives:
            raise FileNotFoundError(f"no {layout['folder']}/ or archive under {raw_dir}")
        with tarfile.open(archives[0]) as tar:
            tar.extractall(raw_dir, filter="data")
    x_tr, y_tr = _read_batches(folder, layout["train"], layout["label_key"])
    x_te, y_te = _read_batches(folder, layout["test"], layout["label_key"])
    return {"x_train": x_tr, "y_train": y_tr, "x_heldout": x_te, "y_heldout": y_te,
            "num_classes": np.int64(layout["num_classes"])}
