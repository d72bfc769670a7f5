"""`poolbench.run`: typed options at the boundary, suite rules, flags win, same table as the CLI."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
from tabulate import tabulate

import poolbench
from poolbench import api
from poolbench.cli import main
from poolbench.errors import UsageError
from poolbench.report import build_report
from poolbench.runner import RunReport
from poolbench.suites import get_suite, list_suites
from poolbench.suites.base import build_options, with_reference

TINY = {"epochs": 1, "train_size": 256, "test_size": 64, "batch_size": 64, "seeds": "1"}


@pytest.fixture
def cells_of(monkeypatch, tmp_path):
    """poolbench.run without running: the cells it would hand to the runner."""
    seen = {}

    def fake_run_cells(suite, cells, ctx, executor="sequential", log=None):
        seen["cells"], seen["ctx"], seen["executor"] = cells, ctx, executor
        return RunReport(rows=[], computed=len(cells), skipped=0, failed=0)

    monkeypatch.setattr(api, "run_cells", fake_run_cells)

    def _cells(suite, **kwargs):
        result = poolbench.run(suite, results=str(tmp_path / "results"), **kwargs)
        _cells.ctx = seen["ctx"]
        return seen["cells"], result

    return _cells


# --- options ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Opts:
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    names: tuple[str, ...] = ()
    sizes: tuple[int, ...] = (1,)
    label: str | None = None


def test_build_options_coerces_to_the_field_types():
    o = build_options(_Opts, {"count": "3", "rate": 1, "flag": "yes", "names": "a, b", "sizes": [2, "4"],
                              "label": None}, "demo")
    assert o == _Opts(count=3, rate=1.0, flag=True, names=("a", "b"), sizes=(2, 4), label=None)
    assert isinstance(o.rate, float)


@pytest.mark.parametrize("values, fragment", [
    ({"cuont": 2}, "unknown demo option cuont; accepted: count, flag, label, names, rate, sizes"),
    ({"count": 1.5}, "demo option 'count' must be int, got 1.5"),
    ({"count": True}, "demo option 'count' must be int"),
    ({"flag": "maybe"}, "demo option 'flag' must be bool"),
    ({"sizes": "1,x"}, "demo option 'sizes' must be int, got 'x'"),
])
def test_build_options_rejects_bad_input_in_one_line(values, fragment):
    with pytest.raises(UsageError) as info:
        build_options(_Opts, values, "demo")
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_every_suite_rejects_an_unknown_option_naming_the_accepted_keys():
    for name in list_suites():
        suite = get_suite(name)
        with pytest.raises(UsageError, match=f"unknown {name} option no_such_key; accepted: "):
            suite.options({"no_such_key": 1})


def test_run_rejects_an_unknown_suite_option_before_any_work(cells_of):
    with pytest.raises(UsageError, match=r"unknown shift option passs; did you mean passes\? \(shift options: max_shift, passes, reference, subset; "):
        cells_of("shift", passs=3)


def test_run_rejects_an_unknown_executor_in_one_line(cells_of):
    with pytest.raises(UsageError, match="run option executor must be one of auto, sequential, process, slurm, got 'cluster' \\(--executor\\)"):
        cells_of("accuracy", executor="cluster")


# --- suite rules and flags ----------------------------------------------------------------

def test_robustness_trains_its_reference_and_records_it_in_every_cell(cells_of):
    cells, result = cells_of("robustness", pools=["lift"], reference="avg", seed=0)
    assert [c["train"]["pool"] for c in cells] == ["lift", "avg"]
    assert {c["reference"] for c in cells} == {"avg"}
    assert result.pools == ["lift", "avg"]


def test_robustness_reference_comes_from_the_preset(cells_of, tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('[train]\nseeds = [0]\n[robustness]\nreference = "blur"\n')
    cells, _ = cells_of("robustness", pools=["lift"], preset=str(preset))
    assert {c["reference"] for c in cells} == {"blur"}
    cells, _ = cells_of("robustness", pools=["lift"], preset=str(preset), reference="max")  # flag wins
    assert {c["reference"] for c in cells} == {"max"}


def test_alexnet_reference_needs_official_imagenet_c(cells_of):
    with pytest.raises(UsageError, match="alexnet applies only to official ImageNet-C"):
        cells_of("robustness", pools=["lift"], reference="alexnet")


def test_seed_flag_wins_over_the_segmentation_seeds_of_the_preset(cells_of):
    # regression: `poolbench run segmentation --seed 0` trained the quick preset's three seeds
    cells, _ = cells_of("segmentation", seed=0, variants="max_unpool")
    assert {c["seed"] if "seed" in c else c["train"]["seed"] for c in cells} == {0}
    cells, _ = cells_of("segmentation", variants="max_unpool")
    assert {c["seed"] if "seed" in c else c["train"]["seed"] for c in cells} == {0, 1, 2}


def test_segmentation_recipe_flags_set_the_segnet_recipe(cells_of):
    cells, _ = cells_of("segmentation", seed=0, variants="max_unpool", epochs=2, train_size=64,
                          batch_size=32)
    train = [c["train"] for c in cells if c.get("kind") == "train"]
    assert train and all(t["epochs"] == 2 and t["train_size"] == 64 for t in train)


def test_efficiency_refuses_parallel_executors(cells_of):
    with pytest.raises(UsageError, match="use --executor sequential"):
        cells_of("efficiency", executor="process")


def test_checkpoint_takes_exactly_one_pool(cells_of):
    with pytest.raises(UsageError, match="pass exactly one --pool"):
        cells_of("accuracy", pools=["max", "avg"], checkpoint="model.pt")


# --- reference as a view option read from the rows ----------------------------------------

def _rob_rows(reference: str) -> list[dict]:
    rows = []
    for pool, errs, clean in (("a", [10.0, 20.0], 5.0), ("b", [20.0, 40.0], 10.0)):
        base = {"suite": "robustness", "pool": pool, "model": "m", "dataset": "d", "seed": 0,
                "corruption_source": "generated", "subset": 8, "reference": reference,
                "time": f"2026-01-0{1 if reference == 'a' else 2}"}
        rows.append({**base, "metric": "clean_error", "value": clean})
        rows += [{**base, "metric": "error", "corruption": "gaussian_noise", "severity": s, "value": v}
                 for s, v in zip((1, 2), errs)]
    return rows


def test_robustness_view_normalises_by_the_reference_the_rows_record():
    suite = get_suite("robustness")
    mce = suite.table(pd.DataFrame(_rob_rows("b")))["mCE"]
    assert mce["b"] == pytest.approx(100.0) and mce["a"] == pytest.approx(100 * 30 / 60)
    mce = suite.table(pd.DataFrame(_rob_rows("a")))["mCE"]
    assert mce["a"] == pytest.approx(100.0) and mce["b"] == pytest.approx(100 * 60 / 30)


def test_an_explicit_reference_counts_each_measurement_once():
    both = pd.DataFrame(_rob_rows("a") + _rob_rows("b"))   # the same values stored by two runs
    frame = with_reference(both, "b")
    assert len(frame) == len(both) // 2 and set(frame["reference"]) == {"b"}
    mce = get_suite("robustness").table(frame)["mCE"]
    assert mce["a"] == pytest.approx(50.0)


# --- end to end -----------------------------------------------------------------------------

@pytest.mark.slow
def test_run_returns_the_table_the_cli_prints(tmp_path, capsys):
    options = {"subset": 32, "corruptions": "gaussian_noise", "severities": "1,2"}
    result = poolbench.run("robustness", pools=["lift"], results=str(tmp_path / "py"), progress=False,
                           **TINY, **options)
    capsys.readouterr()
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, **options}.items()]
    assert main(["run", "robustness", "--pool", "lift", "--results", str(tmp_path / "cli"),
                 "--no-progress", *flags]) == 0
    out = capsys.readouterr().out
    shown = tabulate(result.narrow, headers="keys", tablefmt="github", floatfmt=".2f")
    assert out.strip() == "\n".join([shown, *result.verdicts]).strip()
    assert result.verdicts and result.verdicts[0].startswith("lift vs max, ")
    assert list(result.table.index) == ["lift", "max"] and result.table.loc["max", "mCE"] == pytest.approx(100)


@pytest.mark.slow
def test_on_the_fly_corruptions_give_the_cached_runs_numbers_and_cache_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    options = {"subset": 32, "corruptions": "gaussian_noise,contrast,glass_blur", "severities": "2"}
    live = poolbench.run("robustness", pools=["avg"], results=str(tmp_path / "live"), progress=False,
                         on_the_fly=True, **TINY, **options)
    assert not (tmp_path / "cache" / "corruptions").exists()
    cached = poolbench.run("robustness", pools=["avg"], results=str(tmp_path / "cached"), progress=False,
                           **TINY, **options)
    assert (tmp_path / "cache" / "corruptions").is_dir()
    def values(result):
        return sorted((r["pool"], r["metric"], r.get("corruption"), r["value"], r["config_hash"])
                      for r in result.rows)
    assert values(live) == values(cached)
    assert {(r["pool"], r.get("corruption")) for r in live.rows if r["metric"] == "error"} == \
        {(p, c) for p in ("avg", "max") for c in ("gaussian_noise", "contrast", "glass_blur")}


@pytest.mark.slow
def test_a_preset_reference_avg_gives_a_report_normalised_by_avg(tmp_path, capsys):
    # regression: the report read --reference from commands.log and normalised by max
    preset = tmp_path / "avg.toml"
    preset.write_text("[train]\nseeds = [0]\n[robustness]\nsubset = 32\ncorruptions = \"contrast\"\n"
                      "severities = [1]\nreference = \"avg\"\n")
    results = tmp_path / "results"
    result = poolbench.run("robustness", pools=["lift"], preset=str(preset), results=str(results),
                           progress=False, **TINY)
    assert {r["reference"] for r in result.rows} == {"avg"}
    assert result.table.loc["avg", "mCE"] == pytest.approx(100)
    report = build_report(str(results), str(tmp_path / "report"), illustrations=False).read_text()
    assert "CE and mCE normalised by `avg`" in report
    assert "normalised by `max`" not in report


def test_a_segmentation_checkpoint_replaces_the_variants_segnet(cells_of):
    # regression: --pool lift --checkpoint was matched against "lift", but the SegNet's
    # down-pool is "lift:bands=LL", so the file was silently ignored and a model trained
    cells, _ = cells_of("segmentation", pools=["lift"], seed=0, checkpoint="segnet.pt")
    train = [c for c in cells if c.get("kind") == "train"]
    assert train and {c["train"]["pool"] for c in train} == {"lift:bands=LL"}
    assert {cells_of.ctx.checkpoint_for(c) for c in train} == {"segnet.pt"}
    assert {cells_of.ctx.checkpoint_for(c) for c in cells if c.get("kind") != "train"} == {None}


# --- seeds ------------------------------------------------------------------------------------

def test_seeds_are_a_list_or_a_count():
    from poolbench.api import parse_seeds

    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds([4, 7]) == [4, 7]
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds(2) == [0, 1]
    for bad, message in (("0", "seeds must be >= 1"), ("1,-1", "seeds must be >= 0"), ("1,1", "repeat"),
                         ("a,b", "a count")):
        with pytest.raises(UsageError, match=message):
            parse_seeds(bad)


def test_training_seeds_share_one_data_seed(cells_of):
    cells, _ = cells_of("robustness", seeds="0,1,2", pools=["avg"])
    trains = [c["train"] for c in cells]
    assert sorted({t["seed"] for t in trains}) == [0, 1, 2] and {t["data_seed"] for t in trains} == {0}
    cells, _ = cells_of("robustness", seeds="0,1", data_seed=5, pools=["avg"])
    assert {c["train"]["data_seed"] for c in cells} == {5}
    with pytest.raises(UsageError, match="not both"):
        cells_of("accuracy", seed=1, seeds="0,1")
