"""Headless-Chromium screenshot of a local HTML page, to eyeball the rendered report.

    python -m lossbench.report.screenshot out/index.html /tmp/shot.png [--width 1400] [--height 4000]

Flags keep Chromium offline and stateless (fresh profile, no sync/updates), so it works in CI.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """Path of the first Chromium-like browser on PATH, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(html: Path | str, png: Path | str, width: int = 1400, height: int = 4000,
               timeout: float = 120) -> Path:
    """Render `html` (a file) to `png`; raises if no browser is installed or nothing is written."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no Chromium found; install it (Debian: apt-get install -y chromium)")
    png = Path(png).resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--screenshot={png}", f"--window-size={width},{height}",
             Path(html).resolve().as_uri()],
            check=True, timeout=timeout, capture_output=True)
    if not png.exists():
        raise RuntimeError(f"{browser} wrote no screenshot to {png}")
    return png


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lossbench.report.screenshot",
                                description=__doc__.split("\n")[0])
    p.add_argument("html", type=Path)
    p.add_argument("png", type=Path)
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=4000)
    a = p.parse_args(argv)
    print(screenshot(a.html, a.png, a.width, a.height))


if __name__ == "__main__":
    main()
