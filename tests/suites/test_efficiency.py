"""Efficiency suite: counts, FLOP formulas, cell design, row columns, memory metric, errors.

Structure, counts and formulas only: timings are never asserted (shared, noisy machine).
"""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import poolbench.measure.bench
from poolbench.config import TrainConfig
from poolbench.errors import UsageError
from poolbench.measure import TensorMemoryTracker, count_flops, module_flops, op_flops
from poolbench.registry import get_pool, list_pools, register_pool, unregister_pool
from poolbench.runner import RunContext, run_cells
from poolbench.suites.efficiency import SUITE
from poolbench.testing import count_parameters

TINY = {"layer_shapes": ["2x8x8x8"], "repeats": 2, "warmup": 0, "model_batch": 2,
        "dtypes": "float32", "formats": "nchw"}


def configs(*pools):
    return [TrainConfig(pool=p) for p in pools]


def run(tmp_path, pools, **options):
    cells = SUITE.cells(configs(*pools), SUITE.options({**TINY, **options}))
    report = run_cells("efficiency", cells, RunContext(results=str(tmp_path / "res"), progress=False))
    return cells, pd.DataFrame(report.rows)


def value(frame, pool, metric, **where):
    sub = frame[(frame["pool"] == pool) & (frame["metric"] == metric)]
    for k, v in where.items():
        sub = sub[sub[k] == v]
    assert len(sub) == 1, f"{pool} {metric} {where}: {len(sub)} rows"
    return sub["value"].iloc[0]


# --- parameters and buffers --------------------------------------------------------------------

@pytest.mark.parametrize("spec, channels, params, buffers", [
    ("skip", 8, 9 * 8 * 8 + 8, 0),          # a stride-2 3x3 conv C -> C with bias
    ("skip", 64, 9 * 64 * 64 + 64, 0),
    ("blur", 8, 0, 16 * 8),                 # binomial 4x4 filter per channel, a buffer
    ("blur:filter_size=3", 8, 0, 9 * 8),
    ("gauss", 64, 6624, 320),
    ("max", 64, 0, 0),
    ("avg", 64, 0, 0),
])
def test_parameter_and_buffer_counts(spec, channels, params, buffers):
    assert count_parameters(get_pool(spec, channels)) == (params, buffers)


def test_rows_count_params_and_buffers_separately(tmp_path):
    _, frame = run(tmp_path, ["skip", "blur"], levels="layer")
    assert value(frame, "skip", "params") == 9 * 8 * 8 + 8
    assert value(frame, "skip", "buffers") == 0
    assert value(frame, "blur", "params") == 0
    assert value(frame, "blur", "buffers") == 16 * 8


# --- FLOPs -------------------------------------------------------------------------------------

def test_max_and_avg_pool_flops_one_op_per_window_element():
    x = torch.randn(1, 1, 4, 4)
    for fn in (lambda: F.max_pool2d(x, 2, 2), lambda: F.avg_pool2d(x, 2, 2)):
        count = count_flops(fn)
        assert count.counted == 0                     # FlopCounterMode gives pooling 0
        assert count.total == 4 * 4                   # 4 outputs x 4 window elements
    assert count_flops(lambda: F.max_pool2d(torch.randn(2, 3, 9, 9), 3, 2)).total == 2 * 3 * 4 * 4 * 9


def test_adaptive_pool_flops_sum_window_sizes():
    # 5 -> 2 along an axis: windows [0, 3) and [2, 5): 3 + 3 elements; 2 channels, 2 axes
    assert count_flops(lambda: F.adaptive_avg_pool2d(torch.randn(1, 2, 5, 5), 2)).total == 2 * 6 * 6
    assert count_flops(lambda: F.adaptive_avg_pool2d(torch.randn(3, 4, 7, 7), 1)).total == 3 * 4 * 49


def test_conv_flops_come_from_flop_counter_mode():
    cin, cout, h = 3, 5, 8
    conv = nn.Conv2d(cin, cout, 3, bias=False)
    count = module_flops(conv, torch.randn(1, cin, h, h))
    ho = h - 2
    assert count.counted == 2 * cin * cout * 9 * ho * ho      # multiply-add = 2 FLOPs
    assert count.extra == 0 and count.total == count.counted


def test_elementwise_reduction_and_norm_formulas():
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    n = a.numel()
    assert count_flops(lambda: a + b).total == n
    assert count_flops(lambda: torch.sigmoid(a)).total == n
    assert count_flops(lambda: torch.addcmul(a, a, b)).total == 2 * n
    assert count_flops(lambda: a.sum()).total == n
    bn = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        assert count_flops(lambda: bn(a)).total == 2 * n      # x * scale + shift
    z = torch.randn(4, 8, dtype=torch.complex64)
    assert count_flops(lambda: torch.fft.fft(z)).total == 5 * 32 * 3   # 5 n log2 n, n = 8, 4 rows


def test_fused_attention_is_counted_by_hand():
    # E = 4, 2 heads, B = 2, L = S = 3: q, k, v projections 2 * 6 * 4 * 12 = 576, scores and
    # weighted values 2 * 2 * 6 * 3 * 4 = 288, softmax 5 * 2 * 6 * 3 = 180, output projection
    # 2 * 6 * 4 * 4 = 192
    attention = nn.MultiheadAttention(4, 2, batch_first=True).eval()
    x = torch.randn(2, 3, 4)
    with torch.no_grad():
        count = count_flops(lambda: attention(x, x, x, need_weights=False))
    assert count.unmodelled == {} and count.total == 576 + 288 + 180 + 192


def test_relu_conv_block_sums_both_sources():
    block = nn.Sequential(nn.Conv2d(2, 4, 1, bias=False), nn.ReLU())
    count = module_flops(block, torch.randn(1, 2, 3, 3))
    assert count.counted == 2 * 2 * 4 * 9
    assert count.extra == 4 * 9
    assert count.total == count.counted + count.extra


def test_unknown_op_is_listed_not_counted():
    class Fake:
        class overloadpacket:
            __name__ = "some_new_op"
    assert op_flops(Fake, (torch.randn(3),), {}, torch.randn(3)) is None


@pytest.mark.parametrize("spec", sorted(set(list_pools()) | {"lift:impl=reference"}))
def test_every_builtin_pool_forward_is_fully_modelled(spec):
    pool = get_pool(spec, 4)
    count = module_flops(pool, torch.randn(2, 4, 8, 8))
    assert count.unmodelled == {}, f"{spec}: ops without a FLOP formula: {count.unmodelled}"
    assert count.total > 0


# --- cells -------------------------------------------------------------------------------------

def test_cells_one_per_target_dtype_format_with_every_pool_and_the_baseline():
    cells = SUITE.cells(configs("lift", "blur"), SUITE.options({
        "layer_shapes": "32x64x56x56,32x256x14x14", "dtypes": "float32,bf16", "formats": "nchw,cl"}))
    assert len(cells) == (2 + 1) * 2 * 2
    assert json.loads(json.dumps(cells)) == cells                  # JSON-able
    for cell in cells:
        assert cell["pools"] == ["lift", "blur", "max"]            # the baseline is added
        assert cell["baseline"] == "max"
        assert cell["compiled"] is False
    targets = {(c["level"], tuple(c["shape"])) for c in cells}
    assert targets == {("layer", (32, 64, 56, 56)), ("layer", (32, 256, 14, 14)),
                       ("model", (32, 3, 32, 32))}                # convnet, training batch
    assert {(c["dtype"], c["memory_format"]) for c in cells} == {
        ("float32", "nchw"), ("float32", "channels_last"), ("bfloat16", "nchw"),
        ("bfloat16", "channels_last")}


def test_cells_options():
    cells = SUITE.cells(configs("max"), SUITE.options({**TINY, "baseline": "avg", "compile": True,
                                                       "threads": 2, "levels": "layer"}))
    assert [c["compiled"] for c in cells] == [False, True]
    assert all(c["pools"] == ["max", "avg"] and c["num_threads"] == 2 for c in cells)
    for bad in ({"dtypes": "float8"}, {"formats": "nhwcx"}, {"layer_shapes": "2x8x8"},
                {"levels": "block"}, {"repeats": 0}, {"clock": "thread", "threads": 2},
                {"baseline": "nosuchpool"}):
        with pytest.raises(UsageError):
            SUITE.options({**TINY, **bad})


def test_options_normalised_as_the_cells_record_them():
    opts = SUITE.options({"layer_shapes": [[2, 8, 8, 8], "4X3X5X5"], "dtypes": "bf16,fp32,bfloat16",
                          "formats": ["NHWC", "contiguous"], "baseline": "lift:impl=fast",
                          "levels": "Layer", "table_setting": "2X8X8X8"})
    assert opts.layer_shapes == ("2x8x8x8", "4x3x5x5")
    assert opts.dtypes == ("bfloat16", "float32") and opts.formats == ("channels_last", "nchw")
    assert opts.levels == ("layer",) and opts.table_setting == "2x8x8x8"
    assert opts.baseline == SUITE.options({"baseline": "lift:impl=fast"}).baseline
    assert SUITE.options({}) == SUITE.Options()
    assert SUITE.parallel is False


def test_unknown_option_names_the_accepted_keys():
    with pytest.raises(UsageError) as err:
        SUITE.options({"repeat": 3})
    message = str(err.value)
    assert "\n" not in message and "repeat" in message
    assert "accepted:" in message and "repeats" in message and "layer_shapes" in message


def test_ill_typed_option_fails_in_one_line():
    with pytest.raises(UsageError) as err:
        SUITE.options({"repeats": "many"})
    assert "\n" not in str(err.value) and "repeats" in str(err.value) and "many" in str(err.value)


# --- running -----------------------------------------------------------------------------------

def test_rows_carry_protocol_columns_and_ratios(tmp_path):
    cells, frame = run(tmp_path, ["lift", "max", "avg"], threads=1)
    assert len(cells) == 2
    assert not frame["error"].any()
    for col in ("device", "threads", "dtype", "memory_format", "level", "shape", "compiled",
                "repeats", "pool", "metric", "value", "unit", "config_hash"):
        assert col in frame.columns and frame[col].notna().all(), col
    assert set(frame["device"]) == {"cpu"}
    assert set(frame["threads"]) == {1}
    assert set(frame["dtype"]) == {"float32"} and set(frame["memory_format"]) == {"nchw"}
    assert set(frame["level"]) == {"layer", "model"}
    wanted = {"params", "buffers", "flops_counted", "flops_total", "latency_fwd",
              "latency_fwdbwd", "latency_fwd_ratio", "latency_fwdbwd_ratio",
              "forward_retained_bytes", "fwdbwd_peak_tensor_bytes"}
    for (pool, level), sub in frame.groupby(["pool", "level"]):
        assert wanted <= set(sub["metric"]), (pool, level)
    # one cell per setting holds all the pools: the ratio is median / baseline median there
    for level in ("layer", "model"):
        sub = frame[frame["level"] == level]
        assert sub["config_hash"].nunique() == 1
        assert value(sub, "max", "latency_fwd_ratio") == pytest.approx(1.0)
        ratio = value(sub, "lift", "latency_fwdbwd_ratio")
        expected = value(sub, "lift", "latency_fwdbwd") / value(sub, "max", "latency_fwdbwd")
        assert ratio == pytest.approx(expected)
    lat = frame[frame["metric"] == "latency_fwd"]
    assert (lat["n"] == 2).all() and lat["iqr_ms"].notna().all()
    # model level: the backbone with the pool swapped in (LiftPool adds its parameters)
    model = frame[frame["level"] == "model"]
    assert value(model, "lift", "params") > value(model, "max", "params")
    assert value(model, "max", "flops_counted") > 0
    table = SUITE.table(frame, SUITE.options(TINY))                  # layer 2x8x8x8 by default
    assert {"params", "buffers", "MFLOPs", "fwd ms", "fwd+bwd ms", "fwd x max",
            "fwd+bwd x max", "fwd kept MB"} <= set(table.columns)
    assert list(table.index) == ["lift", "max", "avg"]
    assert table.loc["lift", "params"] == value(frame[frame["level"] == "layer"], "lift", "params")
    model_table = SUITE.table(frame, SUITE.options({**TINY, "table_setting": "model"}))
    assert model_table.loc["lift", "params"] == value(model, "lift", "params")
    assert any("layer 2x8x8x8" in n for n in SUITE.notes(SUITE.options(TINY)))
    assert SUITE.table(frame, None).equals(SUITE.table(frame, SUITE.options({})))   # report time


def test_memory_metric_positive_and_larger_for_lift_than_avg(tmp_path):
    _, frame = run(tmp_path, ["lift", "avg"], levels="layer")
    lift = value(frame, "lift", "forward_retained_bytes")
    avg = value(frame, "avg", "forward_retained_bytes")
    assert avg > 0 and lift > avg
    assert value(frame, "lift", "fwdbwd_peak_tensor_bytes") >= lift
    # avg keeps only its output (the input is allocated before): 2*8*4*4 floats
    assert avg == 2 * 8 * 4 * 4 * 4


def test_tensor_memory_tracker_live_and_peak():
    with TensorMemoryTracker() as tracker:
        a = torch.randn(1000)          # 4000 bytes
        b = a * 2                      # 4000 bytes
        a.add_(1)                      # in place: no allocation
        del a
        live = tracker.live
    assert live == 4000 and tracker.peak == 8000
    del b


def test_bfloat16_cell_works_or_records_unsupported(tmp_path):
    @register_pool("test_fp32_only", override=True)
    def fp32_only(channels: int):
        class Only(nn.Module):
            def forward(self, x):
                if x.dtype != torch.float32:
                    raise TypeError(f"only float32, got {x.dtype}")
                return F.max_pool2d(x, 2)
        return Only()

    try:
        _, frame = run(tmp_path, ["avg", "test_fp32_only"], dtypes="bfloat16", levels="layer")
    finally:
        unregister_pool("test_fp32_only")
    assert set(frame["dtype"]) == {"bfloat16"}
    assert not frame["error"].any()                  # not a failure: a skip with a note
    assert value(frame, "avg", "latency_fwd") > 0
    note = frame[(frame["pool"] == "test_fp32_only") & (frame["metric"] == "unsupported")]["note"]
    assert len(note) == 1 and "bfloat16 not supported" in note.iloc[0] and "only float32" in note.iloc[0]
    assert "latency_fwd" not in set(frame[frame["pool"] == "test_fp32_only"]["metric"])


def test_compile_failure_is_an_error_row(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nlong traceback text")

    monkeypatch.setattr(torch, "compile", broken)
    cells = [c for c in SUITE.cells(configs("avg"), SUITE.options({**TINY, "compile": True, "levels": "layer"}))
             if c["compiled"]]
    report = run_cells("efficiency", cells, RunContext(results=str(tmp_path / "r"), progress=False))
    frame = pd.DataFrame(report.rows)
    errors = frame[frame["metric"] == "error"]
    assert set(errors["pool"]) == {"avg", "max"}
    assert all(e == "torch.compile failed (fwd): RuntimeError: no C++ compiler found"
               for e in errors["error"])
    assert (frame["compiled"] == True).all()  # noqa: E712


def test_a_crash_inside_a_cell_becomes_an_error_row(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("timer exploded\nmore")

    monkeypatch.setattr(poolbench.measure.bench, "time_interleaved", boom)
    cells = SUITE.cells(configs("avg"), SUITE.options({**TINY, "levels": "layer"}))
    report = run_cells("efficiency", cells, RunContext(results=str(tmp_path / "r"), progress=False))
    assert [(r["metric"], r["error"]) for r in report.rows] == [
        ("error", "cell failed: RuntimeError: timer exploded")]
    assert report.rows[0]["threads"] == 1 and report.rows[0]["dtype"] == "float32"
