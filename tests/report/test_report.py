"""The markdown report: tables (best in bold, reference marked), plots, skips, csv, determinism.

Rows are hand-made and written through ResultStore, so the best pool of every column is known.
"""
from __future__ import annotations

import hashlib
import json
import re

import pandas as pd
import pytest

from poolbench.errors import UsageError
from poolbench.report import build_report
from poolbench.report.tables import direction, to_markdown
from poolbench.store import ResultStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIME = "2025-01-01T00:00:00+00:00"


def _base(suite, pool, **extra):
    return {"suite": suite, "pool": pool, "pool_options": "", "pool_source": "built-in",
            "pool_version": "0.1.0", "model": "convnet", "dataset": "shapes", "seed": 0,
            "device": "cpu", "threads": 1, "dtype": "float32", "memory_format": "channels_last",
            "torch_version": "2.0.0", "poolbench_version": "0.1.0", "git_commit": "abc123def456",
            "time": TIME, "error": "", **extra}


def _write(store, suite, pool, rows, tag=""):
    chash = hashlib.sha256(f"{suite}/{pool}/{tag}".encode()).hexdigest()
    rows = [{**_base(suite, pool), "config_hash": chash, **r} for r in rows]
    store.write(suite, chash, {"pool": pool}, rows)
    return len(rows)


# Accuracy: lift best top-1 (8), max best top-5 (20); params equal for max/avg (no bold).
ACCURACY = {"max": (10.0, 20.0, 100, 5.0), "avg": (12.0, 22.0, 100, 6.0), "lift": (8.0, 21.0, 120, 9.0)}
# Robustness (reference max: 40 and 60 everywhere): CE gaussian avg 80 = lift 80 (tie),
# defocus lift 90 best, fog all 100 (no bold); mCE max 100, avg 100, lift 90 (best).
ROBUST = {
    "max": {"gaussian_noise": (40, 60), "defocus_blur": (40, 60), "fog": (40, 60)},
    "avg": {"gaussian_noise": (30, 50), "defocus_blur": (50, 70), "fog": (40, 60)},
    "lift": {"gaussian_noise": (35, 45), "defocus_blur": (40, 50), "fog": (45, 55)},
}
CLEAN = {"max": 10.0, "avg": 12.0, "lift": 8.0}
# Perturbation (reference max): FR avg 50/100 -> mFR 75 (best); lift 150/50 -> mFR 100.
FLIPS = {"max": (0.2, 0.1), "avg": (0.1, 0.1), "lift": (0.3, 0.05)}
# Shift: lift the most consistent under both protocols (crop 90, circular 92).
CONSISTENCY = {"max": (80.0, 88.0), "avg": (85.0, 90.0), "lift": (90.0, 92.0)}


def make_results(root) -> int:
    """A small results folder (accuracy, shift, robustness, perturbation, one failed cell);
    returns the number of rows written."""
    store = ResultStore(root)
    n = 0
    for pool, (top1, top5, params, seconds) in ACCURACY.items():
        n += _write(store, "accuracy", pool, [
            {"metric": "top1_error", "value": top1, "unit": "%", "n": 100},
            {"metric": "top5_error", "value": top5, "unit": "%", "n": 100},
            {"metric": "params", "value": params, "unit": "count"},
            {"metric": "train_time", "value": seconds, "unit": "s"},
        ])
    n += _write(store, "accuracy", "gauss", [
        {"metric": "error", "value": None, "error": "training diverged at epoch 1; lower lr"}])
    for pool, (crop, circ) in CONSISTENCY.items():
        rows = [{"metric": "consistency", "value": crop, "unit": "%", "n": 50, "shift_kind": "crop",
                 "max_shift": 2, "passes": 3, "subset": 50},
                {"metric": "consistency", "value": circ, "unit": "%", "n": 50, "shift_kind": "circular",
                 "passes": 3, "subset": 50, "offset_range": "[-3, 2]"}]
        for s in range(3):
            rows.append({"metric": "top1_accuracy", "value": 90.0 - s - len(pool), "unit": "%", "n": 50,
                         "shift_kind": "diagonal_crop", "shift": s, "subset": 50})
            rows.append({"metric": "true_class_probability", "value": 0.8 - 0.01 * s, "unit": "", "n": 50,
                         "shift_kind": "diagonal_crop", "shift": s, "subset": 50})
        n += _write(store, "shift", pool, rows)
    for pool, table in ROBUST.items():
        rows = [{"metric": "clean_error", "value": CLEAN[pool], "unit": "%", "n": 40,
                 "corruption_source": "generated", "subset": 40}]
        for corruption, errors in table.items():
            for severity, value in enumerate(errors, start=1):
                rows.append({"metric": "error", "value": float(value), "unit": "%", "n": 40,
                             "corruption": corruption, "severity": severity,
                             "corruption_source": "generated", "subset": 40})
        n += _write(store, "robustness", pool, rows)
    for pool, fps in FLIPS.items():
        rows = []
        for p, fp in zip(("gaussian_noise", "translate"), fps):
            extra = {"perturbation": p, "frames": 31, "noise": p == "gaussian_noise", "n": 20,
                     "perturbation_source": "generated", "subset": 20, "schedule": "cifar-p"}
            rows.append({"metric": "flip_probability", "value": fp, "unit": "", **extra})
            rows.append({"metric": "top5_distance", "value": 10 * fp, "unit": "", **extra})
        n += _write(store, "perturbation", pool, rows)
    return n


def row_of(section: str, pool: str) -> str:
    """The table line of ``pool`` in the first table of ``section``."""
    for line in section.splitlines():
        if re.match(rf"\|\s*{re.escape(pool)}\s*\|", line):
            return line
    raise AssertionError(f"no row for {pool!r} in:\n{section}")


def section(md: str, title: str) -> str:
    start = md.index(f"## {title}\n")
    end = md.find("\n## ", start + 1)
    return md[start:end if end >= 0 else None]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def cell(md: str, pool: str, column: str) -> str:
    """``pool``'s entry under ``column`` in the first table of ``md`` (a section)."""
    return cells(row_of(md, pool))[cells(row_of(md, "pool")).index(column)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two builds of the same results (illustrations included) and the number of rows."""
    root = tmp_path_factory.mktemp("results")
    n_rows = make_results(root)
    (root / "commands.log").write_text(
        "poolbench run accuracy --pool max --pool avg --pool lift\n"
        "poolbench run accuracy --pool max --pool avg --pool lift\n"
        "poolbench run robustness --pool avg --pool lift --reference max\n")
    out_a = tmp_path_factory.mktemp("report") / "a"
    out_b = tmp_path_factory.mktemp("report") / "b"
    path_a = build_report(str(root), str(out_a), title="Test report")
    build_report(str(root), str(out_b), title="Test report")
    return {"root": root, "rows": n_rows, "a": out_a, "b": out_b, "md": path_a.read_text(),
            "path": path_a}


def test_returns_report_path_and_writes_tables(built):
    assert built["path"] == built["a"] / "report.md"
    md = built["md"]
    assert md.startswith("# Test report\n")
    for title in ("Clean accuracy", "Shift consistency", "Corruption robustness", "Perturbation stability"):
        assert f"## {title}" in md
        assert "| pool" in section(md, title)


def test_best_value_is_bold_per_column(built):
    acc = section(built["md"], "Clean accuracy")
    header = cells(row_of(acc, "pool"))
    lift, mx, avg = (cells(row_of(acc, p)) for p in ("lift", "max †", "avg"))
    top1, top5, params = (header.index(c) for c in ("top-1 err %", "top-5 err %", "params"))
    assert lift[top1] == "**8.00**" and mx[top1] == "10.00" and avg[top1] == "12.00"
    assert mx[top5] == "**20.00**" and lift[top5] == "21.00"
    assert "**" not in "".join(row[params] for row in (lift, mx, avg))  # counts: no best
    assert lift[params] == "120"

    shift = section(built["md"], "Shift consistency")
    assert cell(shift, "lift", "consistency crop %") == "**90.00**"  # higher is better
    assert cell(shift, "avg", "consistency crop %") == "85.00"


def test_robustness_mce_bold_ties_and_reference(built):
    rob = section(built["md"], "Corruption robustness")
    assert cell(rob, "lift", "mCE") == "**90.00**"
    assert cell(rob, "max †", "mCE") == "100.00"
    assert "† `max`: reference pool" in rob
    # CE per corruption: pools are columns, best per row; ties all bold; all equal: none
    ce_header = cells(row_of(rob, "corruption"))
    assert ce_header == ["corruption", "avg", "lift", "max †"]
    gaussian = cells(row_of(rob, "gaussian_noise"))
    assert gaussian[1] == gaussian[2] == "**80.00**" and gaussian[3] == "100.00"
    assert cells(row_of(rob, "defocus_blur"))[2] == "**90.00**"
    assert "**" not in row_of(rob, "fog")


def test_perturbation_mfr(built):
    per = section(built["md"], "Perturbation stability")
    assert cell(per, "avg", "mFR") == "**75.00**"
    assert cell(per, "lift", "mFR") == "100.00"
    assert "max †" in per


def test_environment_and_commands(built):
    md = built["md"]
    env = section(md, "Environment")
    assert "abc123def456" in env and "2.0.0" in env and "| threads" in env and "cpu" in env
    commands = section(md, "Commands")
    assert commands.count("poolbench run accuracy --pool max --pool avg --pool lift") == 1
    assert "--reference max" in commands


def test_missing_suites_noted_and_failures_listed(built):
    md = built["md"]
    assert "No segmentation results in this folder" in section(md, "Segmentation and up-pooling")
    assert "No efficiency results in this folder" in section(md, "Efficiency")
    failed = section(md, "Failed cells")
    assert "gauss" in failed and "training diverged" in failed
    assert not re.search(r"^\| gauss", section(md, "Clean accuracy"), re.M)


def test_plots_are_valid_pngs(built):
    from PIL import Image

    md = built["md"]
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    expected = {"fig-accuracy-vs-consistency.png", "fig-shift-sweep.png", "fig-ce-per-corruption.png",
                "fig-error-vs-severity.png", "fig-fr-per-perturbation.png", "fig-lift-subbands.png",
                "fig-up-pooling-reconstruction.png"}
    assert expected <= set(linked)
    for name in linked:
        data = (built["a"] / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert b"tEXt" not in data and b"tIME" not in data      # no Software tag, no timestamp
        with Image.open(built["a"] / name) as image:
            image.verify()
    assert sorted(p.name for p in built["a"].glob("*.png")) == sorted(set(linked))


def test_results_csv_holds_every_row(built):
    frame = pd.read_csv(built["a"] / "results.csv")
    assert len(frame) == built["rows"]
    assert list(frame.columns[:3]) == ["suite", "pool", "pool_options"]
    records = json.loads((built["a"] / "results.json").read_text())     # the same rows, in order
    assert [(r["suite"], r["pool"], r["metric"], r.get("value")) for r in records] == \
        [(s, p, m, None if pd.isna(v) else v) for s, p, m, v in
         frame[["suite", "pool", "metric", "value"]].itertuples(index=False)]


def test_two_builds_are_identical(built):
    names = sorted(p.name for p in built["a"].iterdir())
    assert names == sorted(p.name for p in built["b"].iterdir())
    for name in names:
        assert (built["a"] / name).read_bytes() == (built["b"] / name).read_bytes(), name


def test_missing_or_empty_results_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no results") as info:
        build_report(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert "\n" not in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no result rows") as info:
        build_report(str(tmp_path / "empty"), str(tmp_path / "out"))
    assert "\n" not in str(info.value)


def test_reference_from_the_rows_and_other_suites(tmp_path):
    """The reference the rows record picks the normalising pool (commands.log is a record,
    never read for it); efficiency and segmentation rows get their sections; a missing
    reference is a note, not an error."""
    root = tmp_path / "results"
    store = ResultStore(root)
    for pool, fps in FLIPS.items():
        rows = []
        for p, fp in zip(("gaussian_noise", "translate"), fps):
            extra = {"perturbation": p, "frames": 31, "noise": False, "n": 20,
                     "perturbation_source": "generated", "subset": 20, "reference": "avg"}
            rows += [{"metric": "flip_probability", "value": fp, **extra},
                     {"metric": "top5_distance", "value": 10 * fp, **extra}]
        _write(store, "perturbation", pool, rows)
    for pool, (top1, *_rest) in ACCURACY.items():
        _write(store, "accuracy", pool, [{"metric": "top1_error", "value": top1, "unit": "%"}])
        _write(store, "efficiency", pool, [
            {"metric": "latency_forward", "value": {"max": 1.0, "avg": 0.8, "lift": 3.0}[pool], "unit": "ms"}])
    _write(store, "robustness", "lift", [{"metric": "clean_error", "value": 8.0, "n": 40},
                                         {"metric": "error", "value": 30.0, "corruption": "fog",
                                          "severity": 1, "n": 40}])
    for variant, miou in (("max_unpool", 40.0), ("lift", 55.0)):
        _write(store, "segmentation", variant, [
            {"metric": "miou", "value": miou, "unit": "%", "n": 10, "up_pool": variant,
             "upsample": "paired", "model": "segnet", "dataset": "shapes-seg"}])
    # regression: the report took the reference from this log, not from the rows
    (root / "commands.log").write_text("poolbench run perturbation --pool lift --reference max\n")
    md = build_report(str(root), str(tmp_path / "out"), illustrations=False).read_text()

    per = section(md, "Perturbation stability")
    assert "avg †" in per and "max †" not in per
    # normalised by avg: mFR max (200 + 100) / 2 = 150, lift (300 + 50) / 2 = 175, avg 100 (best)
    assert cells(row_of(per, "avg †"))[1] == "**100.00**"
    assert cells(row_of(per, "max"))[1] == "150.00"

    eff = section(md, "Efficiency")
    assert "fig-latency-vs-accuracy.png" in eff and (tmp_path / "out" / "fig-latency-vs-accuracy.png").is_file()
    assert "**0.80**" in row_of(eff, "avg")                 # lowest latency in bold

    seg = section(md, "Segmentation and up-pooling")
    assert "**55.00**" in row_of(seg, "lift")

    rob = section(md, "Corruption robustness")
    assert "has no rows on these images" in rob              # reference max missing: noted
    assert "LiftPool illustrations" not in md


def test_direction_rules():
    lower = ["top-1 err %", "mCE", "rel. mCE", "mFR", "mT5D", "CE gauss", "FR translate",
             "mean FP %", "train s", "latency forward ms", "peak memory MiB", "acc range diagonal_crop",
             "flip_probability"]
    higher = ["clean acc %", "consistency crop %", "mIoU %", "pixel acc %", "PSNR float64 dB", "img/s"]
    assert all(direction(c) == "min" for c in lower), [c for c in lower if direction(c) != "min"]
    assert all(direction(c) == "max" for c in higher), [c for c in higher if direction(c) != "max"]
    assert direction("params") is None and direction("seeds") is None


def test_to_markdown_marks_reference_rows_and_columns():
    frame = pd.DataFrame({"top-1 err %": [5.0, 3.0]}, index=pd.Index(["max", "lift"], name="pool"))
    text = to_markdown(frame, reference="max")
    assert "| max †" in text and "**3.00**" in text
    wide = frame.T
    text = to_markdown(wide, reference="max", along="rows", index_name="metric", how="min")
    assert "max †" in text.splitlines()[0] and "**3.00**" in text


def test_one_table_and_figure_set_per_model_and_dataset(tmp_path):
    root = tmp_path / "results"
    store = ResultStore(root)
    for dataset, shift in (("shapes", 0.0), ("cifar10", 30.0)):
        for pool, (top1, *_rest) in ACCURACY.items():
            _write(store, "accuracy", pool, [{"metric": "top1_error", "value": top1 + shift,
                                              "dataset": dataset}], tag=dataset)
            crop, circ = CONSISTENCY[pool]
            _write(store, "shift", pool, [
                {"metric": "consistency", "value": crop - shift, "shift_kind": "crop", "n": 10,
                 "dataset": dataset}], tag=dataset)
    out = tmp_path / "out"
    md = build_report(str(root), str(out), illustrations=False).read_text()
    acc = section(md, "Clean accuracy")
    assert acc.index("### convnet on cifar10") < acc.index("### convnet on shapes")
    assert "**38.00**" in acc and "**8.00**" in acc
    assert (out / "fig-accuracy-vs-consistency-convnet-cifar10.png").is_file()
    assert (out / "fig-accuracy-vs-consistency-convnet-shapes.png").is_file()


def test_efficiency_tables_per_input_ratio_matrices_and_model_level_latency(tmp_path):
    """One table per measured input, the ratio matrices with the lowest ratio per setting in
    bold, and the latency-vs-accuracy points taken from the model level (fp32, eager)."""
    from poolbench.report.efficiency import latency_vs_accuracy

    root = tmp_path / "results"
    store = ResultStore(root)
    # fwd ms per (pool, level): avg is the fastest layer op, lift the fastest model (made up)
    fwd = {("max", "layer"): 2.0, ("avg", "layer"): 1.0, ("lift", "layer"): 6.0,
           ("max", "model"): 10.0, ("avg", "model"): 12.0, ("lift", "model"): 9.0}
    for pool, (top1, *_rest) in ACCURACY.items():
        _write(store, "accuracy", pool, [{"metric": "top1_error", "value": top1, "unit": "%"}])
        rows = []
        for level, shape in (("layer", "2x4x8x8"), ("model", "4x3x32x32")):
            for dtype, scale in (("float32", 1.0), ("bfloat16", 3.0)):
                ms = fwd[(pool, level)] * scale
                ratio = ms / (fwd[("max", level)] * scale)
                common = {"level": level, "shape": shape, "dtype": dtype, "memory_format": "nchw",
                          "compiled": False, "baseline": "max"}
                rows += [{"metric": "latency_fwd", "value": ms, "unit": "ms", **common},
                         {"metric": "latency_fwd_ratio", "value": ratio, "unit": "x", **common},
                         {"metric": "latency_fwdbwd_ratio", "value": 2 * ratio, "unit": "x", **common},
                         {"metric": "params", "value": {"lift": 24}.get(pool, 0), "unit": "count", **common}]
        _write(store, "efficiency", pool, rows)
    md = build_report(str(root), str(tmp_path / "out"), illustrations=False).read_text()
    eff = section(md, "Efficiency")
    assert "### Layer level, input 2x4x8x8, float32, nchw" in eff
    assert "### Model level (convnet, input 4x3x32x32), float32, nchw" in eff
    model_table = eff[eff.index("### Model level"):]
    assert "**9.00**" in row_of(model_table, "lift")              # fastest model in bold
    ratio_rows = [ln for ln in eff.splitlines() if ln.startswith("| 2x4x8x8 bf16 NCHW")]
    assert len(ratio_rows) == 2                                   # forward and forward+backward
    assert cells(ratio_rows[0])[1:] == ["**0.50**", "3.00", "1.00"]   # avg, lift, max † (sorted)
    first_matrix = eff[eff.index("Forward latency / the baseline's"):eff.index("Forward+backward latency")]
    settings = [cells(ln)[0] for ln in first_matrix.splitlines() if ln.startswith(("| 2x4", "| model"))]
    assert settings == ["2x4x8x8 fp32 NCHW", "2x4x8x8 bf16 NCHW", "model 4x3x32x32 fp32 NCHW",
                        "model 4x3x32x32 bf16 NCHW"]
    assert (tmp_path / "out" / "fig-latency-ratios-fwd.png").is_file()
    assert (tmp_path / "out" / "fig-latency-ratios-fwdbwd.png").is_file()
    from poolbench.store import load_results

    frame = load_results(root)
    points, metric, _ = latency_vs_accuracy(frame[frame["suite"] == "efficiency"],
                                            frame[frame["suite"] == "accuracy"])
    assert metric == "latency_fwd"
    assert points == {"avg": (12.0, 88.0), "lift": (9.0, 92.0), "max": (10.0, 90.0)}


def test_three_seeds_give_the_seed_interval_of_each_difference(tmp_path):
    # lift - max top-1 error per seed: 1, 3, 2 -> Δ 2.00, 95% t interval 2 -+ 4.3027/sqrt(3)
    store = ResultStore(tmp_path / "r")
    for pool, errors in {"max": (9.0, 9.0, 12.0), "lift": (10.0, 12.0, 14.0)}.items():
        for seed, err in enumerate(errors):
            _write(store, "accuracy", pool, [{"metric": "top1_error", "value": err, "unit": "%",
                                              "n": 100, "seed": seed}], tag=str(seed))
    md = build_report(str(tmp_path / "r"), str(tmp_path / "out"), title="seeds").read_text()
    sure = section(md, "Clean accuracy").split("How sure")[1]
    header = cells(next(l for l in sure.splitlines() if l.startswith("| pool")))
    lift = dict(zip(header, cells(row_of(sure, "lift"))))
    assert lift["Δ top-1 err % seeds"] == "[-0.48, 4.48]" and lift["top-1 err % seeds"] != ""
    assert "Student-t interval of the per-seed differences" in md  # the forest plot's caption
