"""The kernels benchmark (lossbench/kernels/bench.py): analytic limits, measurement helpers and the
tidy output, on a grid small enough for a test."""
import json
import math

import pandas as pd
import pytest
import torch

from lossbench.kernels import bench, roofline
from lossbench.kernels.bench import COLUMNS, METRICS, Grid, Point
from lossbench.kernels.measure import median_iqr, peak_bytes, time_ms

CPU = torch.device("cpu")
TINY = Grid(points=(Point("linear_ce", 64, 300, 16, "float32"),
                    Point("linear_ce", 64, 300, 16, "float32", "none", 0.2),
                    Point("softmax", 16, 500, None, "float32")),
            warmup=1, reps=3, err_tokens=32, copy_bytes=1 << 20, gemm_n=64)


def test_traffic_and_flops_match_the_cards_worked_example():
    # Card, "Physical limits": N = 8,192, V = 256,000, D = 2,304, bf16 -> 3.65 GB and 29.0 TFLOP;
    # the materialising baseline adds >= 4·s·N·V = 16.8 GB of logits traffic.
    n, v, d = 8192, 256_000, 2304
    floor, fused = roofline.linear_ce_bytes(n, v, d, 2, materialises_logits=False)
    _, unfused = roofline.linear_ce_bytes(n, v, d, 2, materialises_logits=True)
    assert floor == fused and round(floor / 1e9, 2) == 3.65
    assert round((unfused - floor) / 1e9, 1) == 16.8
    assert round(roofline.linear_ce_flops(n, v, d) / 1e12, 1) == 29.0
    assert roofline.softmax_bytes(10, 100, 4, (3, 2)) == (8000.0, 20000.0)


def test_time_ms_runs_warmup_and_reps_with_before_each():
    calls = []
    times = time_ms(lambda: calls.append("fn"), CPU, warmup=2, reps=3, before=lambda: calls.append("before"))
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert calls == ["before", "fn"] * 5
    assert median_iqr([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, 2.0)


def test_cpu_peak_memory_sees_torch_allocations():
    def fn():
        a = torch.ones(1 << 20)  # 4 MiB, alive together with b
        b = a * 2
        return b.sum()

    peak = peak_bytes(fn, CPU)
    assert 2 * 4 * (1 << 20) <= peak < 3 * 4 * (1 << 20)


def test_run_gives_tidy_rows_with_statuses():
    rows = pd.DataFrame(bench.run(TINY, "cpu", seed=3, log=lambda s: None), columns=COLUMNS)
    assert set(rows.metric) <= set(METRICS) and rows.unit.notna().all()
    ok = rows[rows.status == "ok"]
    assert not ok.duplicated(["bench", "impl", "dtype", "n", "v", "d", "reduction", "ignore_frac", "metric"]).any()
    by = ok.set_index(["impl", "reduction", "metric"]).value
    for red in ("mean", "none"):
        assert by["ce_eager", red, "err_loss_rel"] < 1e-5 and by["lce_chunked", red, "err_dC_rel"] < 1e-5
        assert by["ce_eager", red, "t_fwbw_ms"] > 0 and by["ce_eager", red, "cos_dE"] > 0.99999
        assert by["ce_eager", red, "op_mem_mb"] > 0 or math.isnan(by["ce_eager", red, "op_mem_mb"])
    for name in ("softmax_3p_recompute", "softmax_3p_reload", "softmax_2p_extexp", "softmax_2p_online"):
        assert by[name, "", "err_rel"] < 1e-6 and by[name, "", "err_rowsum"] < 1e-6
    # the traffic model follows the pass counts: reload (5 passes) moves 5/3 of the two-pass bytes
    assert by["softmax_3p_reload", "", "bytes_model"] / by["softmax_2p_online", "", "bytes_model"] == 5 / 3
    not_run = rows[rows.status != "ok"].set_index("impl")
    assert not_run.loc["cce"].note.iloc[0] == "cce runs on cuda only"
    assert "--compile" in not_run.loc["ce_compiled"].note.iloc[0]
    device = rows[rows.bench == "device"].set_index("metric").value
    assert device["copy_gbps"] > 0 and device["gemm_tflops"] > 0


def test_inputs_are_seeded():
    a = bench.linear_ce_inputs(8, 20, 4, torch.float32, 0.5, CPU, seed=1)
    b = bench.linear_ce_inputs(8, 20, 4, torch.float32, 0.5, CPU, seed=1)
    c = bench.linear_ce_inputs(8, 20, 4, torch.float32, 0.5, CPU, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    assert torch.allclose(a[3].sum(), torch.tensor(1.0), atol=0.6)  # weights average 1 over valid tokens


TINY_CONFIG = """
track: kernels
version: 1
task: kernels
baselines: {linear_ce: ce_eager, softmax: softmax_3p_recompute}
measure: {warmup: 1, reps: 3, err_tokens: 32, copy_bytes: 1048576, gemm_n: 64}
slices:
  ce: {bench: linear_ce, n: [64], v: [300], d: [16], dtype: [float32]}
  sm: {bench: softmax, n: [16], v: [500], dtype: [float32]}
"""


def test_main_writes_csv_and_provenance(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    out = tmp_path / "kernels.csv"
    bench.main(["--config", str(cfg), "--out", str(out), "--impls", "ce_eager,softmax_2p_online",
                "--tokens", "16", "--reps", "2"])
    df = pd.read_csv(out)
    assert tuple(df.columns) == COLUMNS and set(df.impl.dropna()) == {"softmax_2p_online"}  # N=16: softmax only
    assert set(df.slice) == {"sm"}
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["config"] == "kernels" and meta["reps"] == 2 and meta["warmup"] == 1
    assert "torch" in meta["versions"] and "copy_gbps" in meta["metrics"]
    assert "softmax_2p_online" in capsys.readouterr().out
    with pytest.raises(KeyError, match="Valid: ce_eager"):
        bench.main(["--config", str(cfg), "--out", str(out), "--impls", "naive"])
    with pytest.raises(KeyError, match="valid: ce, sm"):
        bench.main(["--config", str(cfg), "--out", str(out), "--slices", "c"])


def test_run_slice_writes_one_slice_and_keeps_the_threads(tmp_path):
    from lossbench import config

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG.replace("gemm_n: 64}", "gemm_n: 64, threads: 1, chunk_size: 16}"))
    track = config.load_benchmark(cfg)
    before = torch.get_num_threads()
    bench.run_slice(track, "ce", "cpu", tmp_path / "ce.csv", log_path=tmp_path / "ce.log")
    assert torch.get_num_threads() == before
    df = pd.read_csv(tmp_path / "ce.csv")
    assert set(df.slice) == {"ce"} and set(df[df.bench != "device"].bench) == {"linear_ce"}
    ok = df[(df.status == "ok") & (df.impl == "lce_chunked")].set_index("metric").value
    assert ok["err_loss_rel"] < 1e-5 and ok["t_fwbw_ci_low_ms"] <= ok["t_fwbw_ms"] <= ok["t_fwbw_ci_high_ms"]
    assert json.loads((tmp_path / "ce.json").read_text())["chunk_size"] == 16
    assert "linear_ce n=64" in (tmp_path / "ce.log").read_text()


def test_benchmark_config_errors_name_the_valid_choices(tmp_path):
    from lossbench import config

    bad = {"impls: [ce_eager, softmax_2p_online, cce_fast]": "unknown kernel implementation 'cce_fast'",
           "baselines: {linear_ce: softmax_2p_online, softmax: softmax_3p_recompute}": "linear_ce baseline",
           "slices: {x: {bench: softmax, n: [4], v: [8], d: [2], dtype: [float32]}}": "softmax slice takes",
           "slices: {x: {bench: linear_ce, n: [4], v: [8], dtype: [float32]}}": "needs vd pairs",
           "measure: {warmup: 1, reps: 2}": "reps"}
    for line, message in bad.items():  # TINY_CONFIG with one top-level entry replaced by `line`
        key = line.split(":")[0]
        drop = ("slices", "  ce:", "  sm:") if key == "slices" else (key,)
        cfg = tmp_path / "bad.yaml"
        cfg.write_text("\n".join(ln for ln in TINY_CONFIG.splitlines() if not ln.startswith(drop)) + f"\n{line}\n")
        with pytest.raises(config.ConfigError, match=message):
            config.load_benchmark(cfg)


def test_median_ci_is_the_order_statistics_interval():
    from lossbench.kernels.measure import median_ci

    # n = 9: (x2, x8) covers the median with 1 - 2·10/512 = 96.1% >= 95%; (x3, x7) only 82%
    assert median_ci(list(range(1, 10))) == (2.0, 8.0)
    assert median_ci([5.0, 1.0, 3.0]) == (1.0, 5.0)  # too few calls: the full range
    assert median_ci(list(range(1, 51))) == (18.0, 33.0)  # n = 50: 96.7% (19-32 would be 93.5%)


def test_full_grid_is_the_cards():
    from lossbench import config

    points = bench.grid_of(config.load_benchmark(bench.GRID_CONFIGS["full"])).points
    ce = [p for p in points if p.bench == "linear_ce"]
    assert {(p.v, p.d) for p in ce} == {(50257, 768), (32000, 4096), (128256, 2048), (128256, 4096), (256000, 2304)}
    assert {p.n for p in ce} == {4096, 8192, 16384, 32768, 65536}
    assert {p.dtype for p in ce} == {"bfloat16", "float16", "float32"}
    assert {(p.reduction, p.ignore_frac) for p in ce} == {("mean", 0.0), ("none", 0.0), ("mean", 0.2)}
    assert {(p.n, p.v) for p in points if p.bench == "softmax"} == {(8192, 32768), (8192, 262144)}
