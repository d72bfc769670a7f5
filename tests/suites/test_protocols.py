"""Protocol fixes against crafted inputs: severities paired by label, undefined rates named,
the unnormalised-mCE convention, intervals from stored predictions."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest

from poolbench.cli import main
from poolbench.errors import UsageError
from poolbench.suites import get_suite
from poolbench.suites.robustness import RobustnessOptions


def _rows(pool, errors: dict, clean: float, reference: str = "ref", seed: int = 0) -> list[dict]:
    base = {"suite": "robustness", "pool": pool, "model": "m", "dataset": "d", "seed": seed,
            "corruption_source": "generated", "subset": 8, "reference": reference}
    rows = [{**base, "metric": "clean_error", "value": clean}]
    for corruption, by_severity in errors.items():
        rows += [{**base, "metric": "error", "corruption": corruption, "severity": s, "value": v}
                 for s, v in by_severity.items()]
    return rows


def test_ce_pairs_severities_by_label_not_position():
    # the reference at severities 3,4,5 and the pool at 1,2,3: only severity 3 is shared
    frame = pd.DataFrame(_rows("ref", {"fog": {3: 40.0, 4: 50.0, 5: 60.0}}, 10.0)
                         + _rows("pool", {"fog": {1: 10.0, 2: 20.0, 3: 30.0}}, 10.0))
    table = get_suite("robustness").table(frame)
    assert table.loc["pool", "mCE"] == pytest.approx(100 * 30 / 40)   # not (10+20+30)/(40+50+60)
    notes = table.attrs["notes"]
    assert any("fog uses only the severities it shares with the reference ref" in n for n in notes)


def test_ce_of_sets_without_a_shared_severity_is_left_out():
    frame = pd.DataFrame(_rows("ref", {"fog": {5: 40.0}, "contrast": {1: 20.0}}, 10.0)
                         + _rows("pool", {"fog": {1: 10.0}, "contrast": {1: 30.0}}, 10.0))
    table = get_suite("robustness").table(frame)
    assert table.loc["pool", "mCE"] == pytest.approx(150.0) and np.isnan(table.loc["pool", "CE fog"])


def test_unnormalised_mce_over_the_benchmark_15_or_all_as_the_official_script():
    errors = {"fog": {1: 20.0}, "speckle_noise": {1: 60.0}}   # speckle is one of the 4 extra
    frame = pd.DataFrame(_rows("ref", errors, 10.0) + _rows("pool", errors, 10.0))
    suite = get_suite("robustness")
    benchmark = suite.table(frame, RobustnessOptions(unnormalized_over="benchmark"))
    everything = suite.table(frame, RobustnessOptions(unnormalized_over="all"))
    assert benchmark.loc["pool", "unnorm. mCE %"] == pytest.approx(20.0)
    assert everything.loc["pool", "unnorm. mCE %"] == pytest.approx(40.0)
    with pytest.raises(UsageError, match="--unnormalized-over"):
        RobustnessOptions(unnormalized_over="some")
    notes = get_suite("robustness").notes(RobustnessOptions(unnormalized_over="all"))
    assert any("official script" in n for n in notes)


def _p_rows(pool, fp: dict, t5d: dict) -> list[dict]:
    base = {"suite": "perturbation", "pool": pool, "model": "m", "dataset": "d", "seed": 0,
            "perturbation_source": "generated", "subset": 8, "reference": "ref", "difficulty": 1}
    return ([{**base, "metric": "flip_probability", "perturbation": p, "value": v} for p, v in fp.items()]
            + [{**base, "metric": "top5_distance", "perturbation": p, "value": v} for p, v in t5d.items()])


def test_mfr_names_a_perturbation_the_reference_never_flipped_on():
    frame = pd.DataFrame(_p_rows("ref", {"brightness": 0.1, "tilt": 0.0}, {"brightness": 1.0, "tilt": 0.5})
                         + _p_rows("pool", {"brightness": 0.05, "tilt": 0.2}, {"brightness": 0.5, "tilt": 0.4}))
    table = get_suite("perturbation").table(frame)
    assert table.loc["pool", "mFR"] == pytest.approx(50.0)          # brightness only, and said so
    assert any("leave out tilt" in n and "never flipped" in n for n in table.attrs["notes"])


def test_difficulty_above_1_refuses_noise_perturbations():
    from poolbench.suites.perturbation import PerturbationOptions

    assert PerturbationOptions(perturbations=("brightness",), difficulty=3).difficulty == 3
    with pytest.raises(UsageError, match="noise ones"):
        PerturbationOptions(perturbations=("gaussian_noise",), difficulty=2)


class _Store:
    """The store's ``arrays`` for crafted cells: per-image top-5 predictions and labels."""

    def __init__(self, cells):
        self.cells = cells

    def arrays(self, suite, chash):
        return self.cells[chash]


def test_robustness_intervals_come_from_the_stored_predictions():
    n = 400
    labels = np.zeros(n, dtype=np.int16)

    def preds(wrong):   # top-5 lists whose first class is wrong for the first `wrong` images
        top = np.tile(np.arange(5, dtype=np.int16), (n, 1))
        top[:wrong, 0] = 7
        return top

    cells = {"r": {"labels": labels, "clean": preds(40), "fog/1": preds(200)},
             "p": {"labels": labels, "clean": preds(40), "fog/1": preds(100)}}
    rows = []
    for pool, chash, fog in (("ref", "r", 50.0), ("pool", "p", 25.0)):
        for row in _rows(pool, {"fog": {1: fog}}, 10.0):
            row.update(config_hash=chash, predictions="clean" if row["metric"] == "clean_error" else "fog/1")
            rows.append(row)
    table = get_suite("robustness").table(pd.DataFrame(rows), None, _Store(cells))
    assert table.loc["pool", "mCE"] == pytest.approx(50.0)
    assert table.loc["pool", "mCE lo"] < 50.0 < table.loc["pool", "mCE hi"]
    assert table.loc["pool", "Δ mCE"] == pytest.approx(-50.0) and table.loc["pool", "Δ mCE sig"] == "*"
    # the same images misclassified on clean data: the paired difference has no spread at all
    assert (table.loc["pool", "Δ clean err % lo"], table.loc["pool", "Δ clean err % hi"]) == (0.0, 0.0)
    assert table.loc["pool", "mCE rank"] == 1 and table.loc["ref", "mCE rank"] == 2


@pytest.mark.slow  # trains 4 small models
def test_two_seeds_cost_one_generation_and_show_both_intervals(tmp_path, monkeypatch):
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    args = ["run", "robustness", "--pool", "avg", "--seeds", "2", "--epochs", "1", "--train-size", "256",
            "--test-size", "64", "--batch-size", "64", "--subset", "48", "--corruptions", "fog,contrast",
            "--severities", "1,2", "--no-progress", "--json", "--results", str(tmp_path / "r")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    doc = json.loads(out.getvalue())
    sets = list((tmp_path / "cache" / "corruptions").rglob("*.npy"))
    assert len(sets) == 2 * 2        # (fog, contrast) x (1, 2): one set for 2 pools x 2 seeds
    table = {r["pool"]: r for r in doc["table"]}
    for pool in ("avg", "max"):
        row = table[pool]
        assert row["mCE seeds lo"] is not None and row["clean err % lo"] <= row["clean err %"] <= row["clean err % hi"]
    assert table["avg"]["Δ mCE lo"] <= table["avg"]["Δ mCE"] <= table["avg"]["Δ mCE hi"]
    seeds = {(r["pool"], r["seed"]) for r in doc["rows"]}
    assert seeds == {("avg", 0), ("avg", 1), ("max", 0), ("max", 1)}
    assert len(list((tmp_path / "r" / "robustness").glob("*.npz"))) == 4
