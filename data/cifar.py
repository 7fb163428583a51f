"""CIFAR-10 / CIFAR-100 from the official python-pickle archives.

The download and its MD5 check use torchvision's utilities (`download_url`, `check_integrity`).
Parsing reads the batches straight from that verified archive (an extracted copy beside it is never
trusted: anything could have replaced it), with an unpickler that builds only the plain values and
numpy arrays a CIFAR batch holds, so a tampered file cannot run code. Without an archive, an extracted
folder is read only if each batch file has the official MD5. The same code runs on a tiny fixture in
the archive's format in the tests. Images are kept as uint8 NHWC.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

_LAYOUT = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"], "label_key": "labels", "num_classes": 10},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"],
                 "label_key": "fine_labels", "num_classes": 100},
}
# The official batch files' MD5s (as torchvision's CIFAR10/CIFAR100 check them): an extracted folder
# without its archive is read only if every batch matches.
_BATCH_MD5 = {
    "cifar10": {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"},
    "cifar100": {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch (a dict of bytes, lists, ints and uint8 arrays) and refuses any other
    global, so a tampered batch cannot run code."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def __init__(self, file, name):
        super().__init__(file, encoding="latin1")
        self.name = name

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{self.name}: refusing to load {module}.{name} (a CIFAR batch holds only "
                                     "arrays, lists and strings)")


def _load_batch(blob: bytes, name: str) -> dict:
    try:
        return _BatchUnpickler(io.BytesIO(blob), name).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise RuntimeError(f"{name}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None


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


def _read_batches(blobs: dict, names, label_key):
    xs, ys = [], []
    for name in names:
        batch = _load_batch(blobs[name], name)
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(xs).transpose(0, 2, 3, 1), np.concatenate(ys)


def _from_archive(archive: Path, layout: dict) -> dict:
    """{batch name: bytes} read from the archive itself (the file the download step verified)."""
    out = {}
    with tarfile.open(archive) as tar:
        for name in layout["train"] + layout["test"]:
            member = f"{layout['folder']}/{name}"
            try:
                f = tar.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise RuntimeError(f"{archive}: no {member} in the archive")
            out[name] = f.read()
    return out


def _from_folder(folder: Path, variant: str, layout: dict) -> dict:
    """{batch name: bytes} of an extracted folder with no archive beside it, each checked against
    the official MD5 (a folder that differs is refused, never unpickled)."""
    out = {}
    for name in layout["train"] + layout["test"]:
        path = folder / name
        blob = path.read_bytes()
        md5 = hashlib.md5(blob).hexdigest()
        if md5 != _BATCH_MD5[variant][name]:
            raise RuntimeError(f"{path}: MD5 {md5} is not the official {_BATCH_MD5[variant][name]}: corrupt or not "
                               f"CIFAR; place the verified archive in {folder.parent} instead")
        out[name] = blob
    return out


def prepare(params: dict, raw_dir=None) -> dict:
    """Parse the archive `raw_dir/*.tar.gz` (read in place; also extracted beside it, for looking at,
    if not yet), or without one an extracted folder whose batches have the official MD5s."""
    variant = params["variant"]
    layout = _LAYOUT[variant]
    raw_dir = Path(raw_dir)
    folder = raw_dir / layout["folder"]
    archives = sorted(raw_dir.glob("*.tar.gz"))
    if archives:
        blobs = _from_archive(archives[0], layout)
        if not folder.exists():
            with tarfile.open(archives[0]) as tar:
                tar.extractall(raw_dir, filter="data")
    elif folder.exists():
        blobs = _from_folder(folder, variant, layout)
    else:
        raise FileNotFoundError(f"no {layout['folder']}/ or archive under {raw_dir}")
    x_tr, y_tr = _read_batches(blobs, layout["train"], layout["label_key"])
    x_te, y_te = _read_batches(blobs, layout["test"], layout["label_key"])
    return {"x_train": x_tr, "y_train": y_tr, "x_heldout": x_te, "y_heldout": y_te,
            "num_classes": np.int64(layout["num_classes"])}
