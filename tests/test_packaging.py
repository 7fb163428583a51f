"""Packaging: `lossbench` is the only top-level name the project installs. methods/, data/ and report/
stay at the top of the repository and install as lossbench.methods, lossbench.data and
lossbench.report (pyproject.toml's package-dir); the same imports work from the wheel, from the
editable install and from a checkout on sys.path without any install (lossbench/__init__.py)."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

import lossbench

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"lossbench": "lossbench", "methods": "lossbench/methods", "data": "lossbench/data",
           "report": "lossbench/report"}  # repository folder -> where the wheel puts it
# The project's dependencies (torch, ...) without the venv's .pth files: no editable finder, which would
# quietly supply a subpackage the wheel lacks from the checkout.
DEPS = os.pathsep.join(dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]))


def _python(*args, cwd, path, timeout=300):
    """Run the venv's interpreter without site (-S: no .pth processing, so no editable finder) and
    with only `path` and the dependencies importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), DEPS])
    return subprocess.run([sys.executable, "-S", "-s", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# What each installation must import: every registered method through the namespace, the dataset
# registry and its modules, the report builder and its package data; printed as JSON.
PROBE = textwrap.dedent("""
    import importlib, json, sys
    import lossbench
    from lossbench import methods
    from lossbench import data as datasets
    from lossbench.report import build, claims, tables
    from lossbench.data import lm_eval_tasks

    specs = [methods.get(n) for n in methods.REGISTRY]
    datasets.check_registry()
    loader = lm_eval_tasks.LOADER.rpartition(".")
    assert getattr(importlib.import_module(loader[0]), loader[2]) is lm_eval_tasks.load_local
    print(json.dumps({
        "checkout": lossbench.CHECKOUT,
        "files": sorted(m.__file__ for n, m in list(sys.modules.items())
                        if n.split(".")[0] == "lossbench" and getattr(m, "__file__", None)),
        "top_level_clash": sorted(n for n in ("methods", "data", "report") if n in sys.modules),
        "specs": len(specs), "registry": len(methods.REGISTRY),
        "sources": sorted(e["module"] for e in datasets.registry()["sources"].values()),
        "data_files": {str(p): p.is_file() for p in (datasets.REGISTRY_PATH, claims.CLAIMS_PATH, tables.LAYOUT_PATH,
                                                     build.TEMPLATES / "index.html.j2")},
    }))
""")


def _probe(cwd, path):
    script = Path(cwd) / "probe.py"
    script.write_text(PROBE)
    out = _python(str(script), cwd=cwd, path=path)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_probe(got, home: Path):
    assert got["specs"] == got["registry"] > 0
    assert got["top_level_clash"] == []
    assert all(s.startswith("lossbench.data.") for s in got["sources"]), got["sources"]
    assert all(got["data_files"].values()), got["data_files"]
    outside = [f for f in got["files"] if not Path(f).resolve().is_relative_to(home.resolve())]
    assert not outside, f"lossbench modules imported from outside {home}: {outside[:5]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the sources (the build writes build/ and *.egg-info beside them)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("lossbench-*.whl")
    return whl, src


@pytest.mark.slow
def test_wheel_installs_lossbench_only(wheel):
    whl, src = wheel
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert z.read(info).decode().split() == ["lossbench"]
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"lossbench"}
    # every source and data file of the four folders, where the namespace puts it (a subpackage
    # missing from pyproject.toml's `packages` list fails here)
    want = {f"{FOLDERS[folder]}/{p.relative_to(src / folder).as_posix()}"
            for folder in FOLDERS for p in (src / folder).rglob("*")
            if p.is_file() and p.suffix in (".py", ".yaml", ".j2", ".c")}
    assert want - set(names) == set()
    assert {"lossbench/data/registry.yaml", "lossbench/report/templates/index.html.j2",
            "lossbench/report/leaderboard.yaml", "lossbench/report/claims.yaml"} <= set(names)


@pytest.mark.slow
def test_wheel_imports_through_the_namespace(wheel, tmp_path):
    """Installed from the wheel and run outside the checkout, with no editable finder: every method,
    the dataset registry (its `module:` entries and lm-eval's loader by name) and the report builder
    with its templates import from the installed package alone."""
    whl, _ = wheel
    site = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile", "-q",
                          "--target", str(site), str(whl)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == ["bin", "lossbench"]
    run = tmp_path / "elsewhere"
    run.mkdir()
    got = _probe(run, [site])
    assert got["checkout"] is None
    _check_probe(got, site / "lossbench")


@pytest.mark.slow
def test_checkout_on_sys_path_without_install(tmp_path):
    """A checkout on sys.path (what the Snakefile does), no install at all: lossbench.methods is the
    checkout's methods/ through the package's __path__."""
    got = _probe(tmp_path, [ROOT])
    assert got["checkout"] == str(ROOT)
    _check_probe(got, ROOT)


def _fake_checkout(root: Path, marker: str) -> Path:
    """A minimal second checkout: this lossbench/__init__.py, a Snakefile, marked subpackages."""
    (root / "lossbench").mkdir(parents=True)
    shutil.copy(ROOT / "lossbench" / "__init__.py", root / "lossbench")
    (root / "Snakefile").write_text("")
    for sub in lossbench.SUBPACKAGES:
        (root / sub).mkdir()
        (root / sub / "__init__.py").write_text(f"WHERE = {marker!r}\n")
    return root


def test_second_checkout_gets_its_own_subpackages(tmp_path):
    """A second checkout run with this checkout's venv (whose editable finder maps lossbench.methods to
    this checkout's methods/) imports its own lossbench/ and its own methods/, data/, report/."""
    other = _fake_checkout(tmp_path / "other", "other")
    code = ("import json, lossbench.methods, lossbench.data, lossbench.report as r; "
            "print(json.dumps([lossbench.__file__, lossbench.methods.WHERE, lossbench.data.WHERE, r.WHERE]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=other, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    init, *where = json.loads(out.stdout)
    assert Path(init).resolve() == (other / "lossbench" / "__init__.py").resolve()
    assert where == ["other"] * 3


def test_check_checkout_names_the_installed_checkout(tmp_path):
    other = _fake_checkout(tmp_path / "other", "other")
    (other / "results").mkdir()
    assert lossbench.CHECKOUT == str(ROOT)  # conftest puts this checkout on sys.path
    lossbench.check_checkout(str(ROOT))
    lossbench.check_checkout(str(ROOT / "tests"))
    lossbench.check_checkout(str(tmp_path))  # no checkout: nothing to say
    with pytest.raises(SystemExit) as e:
        lossbench.check_checkout(str(other / "results"))
    msg = str(e.value)
    assert "\n" not in msg and str(other) in msg and str(ROOT) in msg and "make install" in msg
    # `python -m lossbench` started in the other checkout, this checkout's code imported: one line, exit 1
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "lossbench", "list"], cwd=other / "results", env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == msg
