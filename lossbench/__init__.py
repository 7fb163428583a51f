"""lossbench harness: config, data loading, models, training, metrics and results I/O.

The method registry, the dataset recipes and the report builder are the subpackages
lossbench.methods, lossbench.data and lossbench.report (folders methods/, data/, report/ of the
repository).
"""
from __future__ import annotations

import os

__version__ = "0.1.0"

SUBPACKAGES = ("methods", "data", "report")  # kept at the top of the repository, installed under lossbench


def _checkout_of(folder: str) -> str | None:
    """`folder` if it is a lossbench checkout (a Snakefile beside lossbench/__init__.py and the
    subpackage folders), else None."""
    return folder if (os.path.isfile(os.path.join(folder, "Snakefile"))
                      and os.path.isfile(os.path.join(folder, "lossbench", "__init__.py"))
                      and all(os.path.isdir(os.path.join(folder, p)) for p in SUBPACKAGES)) else None


# The checkout this package was imported from; None for an installed wheel (site-packages).
CHECKOUT = _checkout_of(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Why the package's __path__ grows: the repository keeps methods/, data/ and report/ beside
# lossbench/, and the wheel installs them as lossbench/methods etc. (pyproject.toml's package-dir),
# so `lossbench` is the only top-level name the project adds. A checkout used without an install
# (the Snakefile puts the checkout on sys.path; `python -m lossbench` run in it) has no such
# mapping, so Python would find no lossbench.methods: searching the checkout too for lossbench's
# submodules finds <checkout>/methods as lossbench.methods. lossbench/ stays first, so its own
# modules win over any same-named folder of the checkout.
# It also keeps the subpackages with the lossbench/ they belong to. setuptools' editable finder maps
# lossbench.methods to the folder of the checkout that was installed, but it is consulted only after
# this __path__ search: a second checkout on sys.path (its Snakefile, `python -m lossbench` in it)
# that reuses the first checkout's venv imports its own lossbench/ and, through this __path__, its
# own methods/, data/ and report/, never a mix of the two checkouts' code.
if CHECKOUT is not None and CHECKOUT not in __path__:
    __path__.append(CHECKOUT)


def _checkout_around(folder: str) -> str | None:
    """The lossbench checkout holding `folder` (the folder itself or one above it), else None."""
    folder = os.path.abspath(folder)
    while True:
        if _checkout_of(folder):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def check_checkout(cwd: str | None = None) -> None:
    """Exit with one line when the current directory lies in a lossbench checkout other than the one
    this package's code comes from: a second checkout run with the first checkout's venv (its
    editable install, e.g. its `lossbench` console script) would silently run the first checkout's
    code. The CLI calls this first. Nothing happens outside a checkout or when the package is an
    installed wheel (it belongs to no checkout)."""
    if CHECKOUT is None:
        return
    here = _checkout_around(os.getcwd() if cwd is None else cwd)
    if here is None or os.path.realpath(here) == os.path.realpath(CHECKOUT):
        return
    raise SystemExit(f"lossbench: you are in the checkout {here}, but the lossbench code imported here is the "
                     f"checkout {CHECKOUT}'s (its venv's editable install); use {here}'s own venv "
                     f"(`make install` in {here}, then {os.path.join(here, '.venv', 'bin', 'lossbench')})")
