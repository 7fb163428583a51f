"""The kernels benchmark's report section and claim verdicts (report/kernels.py), on hand-made
tables in the benchmark's tidy format, so each expected ratio and verdict is checked by hand."""
import math

import pandas as pd
import pytest

from lossbench.kernels.bench import COLUMNS
from lossbench.report import kernels
from lossbench.report.claims import NOT_REPRODUCED, NOT_TESTABLE, PARTLY, REPRODUCED


def _rows(impl, v, metrics, *, bench="linear_ce", n=8192, d=2304, status="ok", note=""):
    """Tidy rows of one (point, impl): {metric: value}."""
    base = dict(track="kernels", slice="s", bench=bench, impl=impl, device="cpu", dtype="bfloat16", n=n, v=v,
                d=d if bench == "linear_ce" else math.nan, reduction="mean" if bench == "linear_ce" else math.nan,
                ignore_frac=0.0 if bench == "linear_ce" else math.nan, seed=0, unit="", status=status, note=note)
    if status != "ok":
        return [base | {"metric": "status", "value": math.nan}]
    return [base | {"metric": m, "value": x} for m, x in metrics.items()]


def _time(median, low, high, mem, **extra):
    return {"t_fwbw_ms": median, "t_fwbw_ci_low_ms": low, "t_fwbw_ci_high_ms": high, "op_mem_mb": mem,
            "excess_mem_mb": mem - 10, "out_mem_mb": 10.0, "t_bound_ms": 1.0, "roofline_eff": 1.0 / median,
            "bw_frac": 0.5, "flops_frac": 0.4, "tflops": 1.0, **extra}


def _table(*groups):
    df = pd.DataFrame([r for g in groups for r in g])
    return df[["track", *COLUMNS]]


TEST = {"bench": "linear_ce", "where": {"v": 256000, "d": 2304, "n": 8192, "dtype": "bfloat16"},
        "metric": "t_fwbw_ms", "baseline": "ce_eager", "direction": "lower"}


def test_time_claim_needs_separated_cis():
    base = _rows("ce_eager", 256000, _time(200, 195, 210, 28000))
    fast = _table(base, _rows("cce", 256000, _time(135, 130, 140, 1170)))
    row = kernels.claim_row("cce", TEST, {}, fast)
    assert row["verdict"] == REPRODUCED and "1.48×" in row["measured"][0] and row["measured"][0].endswith("✓")
    overlapping = _table(base, _rows("cce", 256000, _time(190, 180, 199, 1170)))  # faster, CIs overlap
    assert kernels.claim_row("cce", TEST, {}, overlapping)["verdict"] == PARTLY
    slower = _table(base, _rows("cce", 256000, _time(300, 290, 310, 1170)))
    row = kernels.claim_row("cce", TEST, {}, slower)
    assert row["verdict"] == NOT_REPRODUCED and "significantly opposite" in row["reason"]


def test_memory_claim_uses_the_factor():
    memory = TEST | {"metric": "excess_mem_mb", "factor": 100}
    base = _rows("ce_eager", 256000, _time(200, 195, 210, 28010))  # excess 28,000 MB
    row = kernels.claim_row("cce", memory, {}, _table(base, _rows("cce", 256000, _time(135, 130, 140, 11))))
    assert row["verdict"] == REPRODUCED and row["measured"][0].startswith("N 8192, V 256000")
    assert ": 1 vs 28,000 (baseline/method 28,000×) ✓" in row["measured"][0]
    only_10x = _table(base, _rows("cce", 256000, _time(135, 130, 140, 2810)))
    assert kernels.claim_row("cce", memory, {}, only_10x)["verdict"] == PARTLY


def test_claim_without_runs_is_not_testable_with_the_reason():
    table = _table(_rows("ce_eager", 256000, _time(200, 195, 210, 28000)),
                   _rows("cce", 256000, {}, status="skipped", note="cce runs on cuda only"))
    row = kernels.claim_row("cce", TEST, {}, table)
    assert row["verdict"] == NOT_TESTABLE and row["reason"] == "cce did not run: cce runs on cuda only"
    other_point = _table(_rows("ce_eager", 1000, _time(2, 1, 3, 5)), _rows("cce", 1000, _time(1, 0.5, 1.5, 1)))
    row = kernels.claim_row("cce", TEST, {}, other_point)
    assert row["verdict"] == NOT_TESTABLE and "v 256000" in row["reason"]
    assert kernels.claim_row("cce", TEST, {}, None)["reason"] == "no kernels benchmark in this profile"
    # an entry's own reason wins over the computed verdict, and the measurement is still shown
    fast = _table(_rows("ce_eager", 256000, _time(200, 195, 210, 28000)), _rows("cce", 256000, _time(1, 1, 1, 1)))
    row = kernels.claim_row("cce", TEST, {"not_testable_reason": "why"}, fast)
    assert row["verdict"] == NOT_TESTABLE and row["reason"] == "why" and row["measured"]


def test_section_tables_ratios_and_figures(tmp_path):
    sweep = [_rows(impl, v, _time(t * v / 1000, t * v / 1100, t * v / 900, m * v / 1000))
             for v in (1000, 4000) for impl, t, m in (("ce_eager", 2.0, 40.0), ("lce_chunked", 3.0, 20.0))]
    softmax = [_rows(impl, 4096, {"t_fw_ms": t, "t_fw_ci_low_ms": t, "t_fw_ci_high_ms": t, "gbps": 1.0,
                                  "bw_frac": 0.1, "t_bound_ms": 0.1, "roofline_eff": 0.1 / t, "op_mem_mb": 1.0,
                                  "out_mem_mb": 1.0, "err_rel": 1e-7, "err_rowsum": 1e-7},
                     bench="softmax", n=64) for impl, t in (("softmax_3p_recompute", 2.0), ("softmax_2p_online", 1.0))]
    device = [dict(track="kernels", slice="s", bench="device", impl="", device="cpu", dtype=dt, n="", v="", d="",
                   reduction="", ignore_frac="", seed=0, metric=m, value=x, unit="", status="ok", note="")
              for dt, m, x in (("", "copy_gbps", 10.0), ("float32", "gemm_tflops", 0.1))]
    skipped = _rows("cce", 1000, {}, status="skipped", note="cce runs on cuda only")
    df = _table(*sweep, *softmax, device, skipped)
    meta = {"baselines": {"kernels": {"linear_ce": "ce_eager", "softmax": "softmax_3p_recompute"}},
            "slices": {"kernels": {"s": {"device_name": "test cpu", "torch_threads": 1, "wall_s": 3.0}}}}
    ctx = kernels.section(df, meta, tmp_path)
    ce = {(r["cells"][0], r["impl"]): r["cells"] for r in ctx["linear_ce"]["rows"]}
    chunked = ce[("N 8192, V 4000, D 2304, bfloat16", "lce_chunked")]
    assert chunked[3] == "1.5" and chunked[7] == "0.5"  # × baseline time and memory
    sm = {r["impl"]: r["cells"] for r in ctx["softmax"]["rows"]}
    assert sm["softmax_2p_online"][2] == "2 r + 1 w" and sm["softmax_2p_online"][4] == "0.5"
    assert ctx["ceilings"]["rows"] == [["s", "test cpu", "1", "10", "float32: 0.1", "—", "3"]]
    assert ctx["not_run"]["rows"] == [["cce", "skipped", "cce runs on cuda only", "1"]]
    distance = {r[2]: r for r in ctx["distance"]["rows"]}
    assert distance["ce_eager"][4] == "5×"  # t / t_bound is 2 at V = 1000 and 8 at V = 4000
    (caption, path), = [f for f in ctx["figures"] if f[1].endswith(".png") and "linear_ce" in f[1]]
    assert (tmp_path / path).exists() and "bound" in caption
    assert "## Distance from the bound" in kernels.markdown(ctx)


@pytest.mark.parametrize("where,count", [({"v": 1000}, 2), ({"v": 1000, "dtype": "float32"}, 0), ({}, 4)])
def test_where_filters_points(where, count):
    df = _table(*[_rows(i, v, _time(1, 1, 1, 1)) for v in (1000, 4000) for i in ("a", "b")])
    assert len(kernels._matches(kernels.wide(df), where)) == count
