"""Atomic result writes, reads that name the file they fail on, checksums, and provenance: a killed
job never leaves a half-written file, and a file changed after it was written is found.

Checksums (sha256) are recorded where the file is written and checked where it is read:
  resources/data/<source>/prepared.npz.sha256   the prepare step's sidecar (`sha256sum -c` format)
  train.json  `inputs_sha256` (what the run trained from), `outputs_sha256` (every artefact it wrote)
  run.json    `evaluation_sha256` (metrics.csv, per_class.csv, train.json and what evaluation read)
  SHA256SUMS  the tidy tables of a profile (aggregate) and every file of a published set (publish)
A mismatch raises IntegrityError naming the file and both checksums (lossbench.verify re-checks all).

A published set stores its tidy CSVs gzipped (`summary.csv.gz`; its SHA256SUMS records the .gz bytes):
readers find a table with `tidy_path` (either form), and read_csv reads either."""
from __future__ import annotations

import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import zlib
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "snakemake", "mnist1d", "matplotlib",
            "transformers")


def _atomic(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text: str):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    _atomic(path, write)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class CorruptFile(ValueError):
    """A result or data file that exists but cannot be parsed (truncated, empty, not its format)."""

    def __init__(self, path, why):
        self.path = str(path)
        super().__init__(f"{path}: unreadable ({why}); truncated or not a valid file? "
                         "Rerun the step that writes it")


class IntegrityError(RuntimeError):
    """A file whose sha256 differs from the one recorded when it was written (or whose record is missing)."""

    def __init__(self, path, expected, actual, recorded_in, hint=""):
        self.path, self.expected, self.actual, self.recorded_in = str(path), expected, actual, str(recorded_in)
        found = "missing" if actual is None else f"sha256 {actual}"
        super().__init__(f"{path}: {found}, but {recorded_in} records sha256 {expected}: changed or replaced "
                         f"since it was written{'; ' + hint if hint else ''}")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFile(path, f"{type(e).__name__}: {e}") from None


def read_csv(path, empty_ok=False) -> pd.DataFrame:
    """pd.read_csv (a `.gz` path is decompressed), with an error naming `path` on a truncated or
    malformed file (an empty file is an empty table where `empty_ok`)."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        if empty_ok:
            return pd.DataFrame()
        raise CorruptFile(path, "empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise CorruptFile(path, f"{type(e).__name__}: {e}") from None


GZ = ".gz"


def tidy_path(folder, name, missing_ok=False) -> Path | None:
    """`folder`/`name` or `folder`/`name`.gz, whichever exists (a published set stores its tidy CSVs
    gzipped, a profile's results plainly). Neither: FileNotFoundError naming both, or None where
    `missing_ok`. Both: FileExistsError (which of them is the table?)."""
    plain = Path(folder) / name
    packed = plain.with_name(plain.name + GZ)
    found = [p for p in (plain, packed) if p.is_file()]
    if len(found) == 2:
        raise FileExistsError(f"{plain} and {packed.name} both exist: keep one (a published set keeps the .gz)")
    if found:
        return found[0]
    if missing_ok:
        return None
    raise FileNotFoundError(2, "No such file (nor its gzipped form)", f"{plain} (or {packed.name})")


GZIP_LEVEL = 9


def write_gzip(path, src) -> Path:
    """`src` gzip-compressed into `path`, atomically and byte-for-byte reproducibly (mtime 0, no file
    name in the header, level GZIP_LEVEL), so a manifest's sha256 of it never changes."""
    def write(tmp):
        with open(src, "rb") as f, open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as out:
            shutil.copyfileobj(f, out, 1 << 20)
    _atomic(path, write)
    return Path(path)


def read_npz(path) -> dict:
    """Every array of an .npz (no pickled objects), with an error naming `path` on a bad file."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptFile(path, f"{type(e).__name__}: {e}") from None


def write_csv(path, df: pd.DataFrame):
    _atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def write_npz(path, **arrays):
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    _atomic(path, write)


def write_torch(path, obj):
    """torch.save, atomically (model checkpoints: state dicts and plain config values only). Saved to
    the open file, not its path: given a path, torch.save names the archive's root folder after it
    (here a random temporary name), so the same weights would give different bytes (and sha256)."""
    import torch

    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    _atomic(path, write)


def sha256_file(path, decompressed=False) -> str:
    """sha256 of `path`'s bytes (`decompressed`: of a gzip file's contents)."""
    import hashlib
    h = hashlib.sha256()
    with (gzip.open if decompressed else open)(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path, expected: str, recorded_in, hint="", decompressed=False) -> str:
    """`path`'s sha256 (`decompressed`: of a gzip file's contents), which must be `expected`
    (IntegrityError naming the file and both otherwise)."""
    try:
        actual = sha256_file(path, decompressed)
    except FileNotFoundError:
        actual = None
    if actual != expected:
        raise IntegrityError(path, expected, actual, recorded_in, hint)
    return actual


def check_recorded(folder, recorded: dict, recorded_in, hint="") -> None:
    """Check every {relative name: sha256} in `recorded` against the files under `folder`."""
    for name, sha in sorted(recorded.items()):
        check_sha256(Path(folder) / name, sha, recorded_in, hint)


SIDECAR = ".sha256"  # <file>.sha256 beside a file: "<hex>  <name>", as sha256sum writes it


def sidecar(path) -> Path:
    return Path(str(path) + SIDECAR)


def write_sidecar(path) -> str:
    """Record `path`'s sha256 in its sidecar (the prepare step, right after writing it)."""
    sha = sha256_file(path)
    write_text(sidecar(path), f"{sha}  {Path(path).name}\n")
    return sha


def read_sidecar(path) -> str | None:
    """The sha256 recorded for `path` in its sidecar, or None when there is no sidecar."""
    try:
        text = sidecar(path).read_text()
    except FileNotFoundError:
        return None
    parts = text.split()
    if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]) or parts[1].lstrip("*") != Path(path).name:
        raise CorruptFile(sidecar(path), f"expected '<sha256>  {Path(path).name}', got {text[:100]!r}")
    return parts[0]


def check_sidecar(path, actual: str | None = None) -> str | None:
    """Check `path` against its sidecar (`actual`: its sha256 if already computed); returns the
    sha256, or None where there is no sidecar (files made outside the pipeline)."""
    expected = read_sidecar(path)
    if expected is None:
        return None
    if actual is None:
        return check_sha256(path, expected, sidecar(path), "rerun the step that writes it")
    if actual != expected:
        raise IntegrityError(path, expected, actual, sidecar(path), "rerun the step that writes it")
    return actual


MANIFEST = "SHA256SUMS"  # a folder's checksums, one "<hex>  <relative path>" a line (sha256sum -c reads it)


def write_manifest(folder, names) -> Path:
    """SHA256SUMS in `folder` for the files `names` (relative to it)."""
    folder = Path(folder)
    lines = [f"{sha256_file(folder / n)}  {Path(n).as_posix()}\n" for n in sorted(map(str, names))]
    write_text(folder / MANIFEST, "".join(lines))
    return folder / MANIFEST


def read_manifest(folder) -> dict | None:
    """{relative path: sha256} from `folder`/SHA256SUMS, or None if there is none."""
    path = Path(folder) / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    out = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m:
            raise CorruptFile(path, f"line {i} is not '<sha256>  <path>': {line[:100]!r}")
        out[m.group(2)] = m.group(1)
    return out


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(cwd=None) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"git_commit": None, "git_dirty": None}


def hardware() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    desc = f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()} {platform.release()}"
    if torch.cuda.is_available():
        desc += f"; GPU: {torch.cuda.get_device_name(0)}"
    return desc
