"""The optimizer axis of a track (optimizer x loss, cards O1-O3) in the report.

Runs of a method on the track's `optimizer_axis` carry the variant `optimizer<name>` and train the
axis model with that optimizer. The main leaderboard shows only the protocol's own optimizer; this
module moves the axis runs into one pseudo-track per (track, loss) — `<track>:<loss>`, with the
optimizer as the "method" and the axis baseline as the baseline — so the same leaderboard code
gives each optimizer's mean, CI and paired difference against the baseline optimizer (same seeds,
same data order, same init), and the claims table can test them (`track: classification:erm`).
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from lossbench.config import OPTIMIZER_KEY, variant_slug

SEP = ":"


def axes(data: Mapping) -> dict[str, dict]:
    """{track: its optimizer_axis} from the provenance."""
    tracks = data["provenance"].get("tracks") or {}
    return {t: info["optimizer_axis"] for t, info in tracks.items() if info.get("optimizer_axis")}


def axis_variant(variant: str, optimizers) -> tuple[str, str] | None:
    """(optimizer name, base variant) of an axis run's variant slug, else None. An axis run's slug
    is its grid point's (lossbench.config.variant_slug) plus `optimizer<name>`: `optimizersgd`
    alone (base `default`), or one `-`-separated part of a swept one (`lr0.01-optimizersgd`)."""
    for name in optimizers:
        part = variant_slug({OPTIMIZER_KEY: name})
        if variant == part:
            return name, "default"
        if variant.startswith(part + "-"):
            return name, variant[len(part) + 1:]
        if variant.endswith("-" + part):
            return name, variant[:-len(part) - 1]
        if f"-{part}-" in variant:
            return name, variant.replace(f"-{part}-", "-", 1)
    return None


def split(data: dict) -> dict[str, dict]:
    """Move every axis run out of data["summary"] (and curves, per_class) into pseudo-tracks;
    returns {pseudo-track: {"track", "loss", "baseline", "optimizers"}} and adds the pseudo-track
    rows to data["axis_summary"], each with its grid point as the variant (`default` without a
    sweep: report/selection.py then picks one per optimizer on validation data)."""
    found, parts = {}, []
    for track, axis in axes(data).items():
        names = list(axis["optimizers"])
        for table in ("summary", "curves", "per_class"):
            df = data.get(table)
            if df is None or "variant" not in df:
                continue
            parsed = [axis_variant(v, names) if t == track else None
                      for t, v in zip(df["track"], df["variant"].astype(str))]
            moved = pd.Series([p is not None for p in parsed], index=df.index, dtype=bool)
            if table == "summary" and moved.any():
                rows = df[moved].copy()
                rows["track"] = rows["track"] + SEP + rows["method"]
                rows["method"] = [p[0] for p in parsed if p is not None]
                rows["variant"] = [p[1] for p in parsed if p is not None]
                parts.append(rows)
            data[table] = df[~moved]
        for loss in axis["methods"]:
            found[f"{track}{SEP}{loss}"] = {"track": track, "loss": loss, "baseline": axis["baseline"],
                                           "optimizers": list(axis["optimizers"]), "model": axis.get("model")}
    data["axis_summary"] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=data["summary"].columns)
    return found


def table(board: pd.DataFrame, pseudo: str, info: Mapping, dataset: str, columns: list[str],
          metrics: Mapping, fmt_row) -> dict | None:
    """An extra table under a dataset's leaderboard: one row per optimizer of one loss."""
    rows = board[(board["track"] == pseudo) & (board["dataset"] == dataset)]
    if rows.empty:
        return None
    body = [fmt_row(rows, opt, columns) for opt in info["optimizers"] if (rows["method"] == opt).any()]
    model = info.get("model")
    return {"title": f"Optimizers × {info['loss']}",
            "caption": (f"{info['loss']} trained once per optimizer"
                        + (f" on {fmt_model(model)}" if model else "")
                        + f"; ▲/▼ against {info['baseline']} on the same seeds, data order and init. "
                          "Optimizer state = bytes held in the optimizer's state at the end of training."),
            "headers": ["optimizer", *[metrics.get(c, {}).get("display", c) for c in columns]],
            "rows": body}


def fmt_model(model: Mapping) -> str:
    return ", ".join(f"{k} {v}" for k, v in model.items())
