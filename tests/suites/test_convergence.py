"""The plateau check: which trainings were still learning when their recipe ended."""
from poolbench.suites.base import curve_rows, shared_columns
from poolbench.suites.convergence import last_drops, plateau_note, still_learning


def curve(pool, seed, errors):
    return [{"pool": pool, "seed": seed, "metric": "curve_test_error", "epoch": e + 1, "value": v}
            for e, v in enumerate(errors)]


ROWS = (curve("avg", 0, [80.0, 40.0, 10.0, 8.5])      # fell 1.5 over the last epoch
        + curve("avg", 1, [80.0, 30.0, 9.0, 8.8])     # 0.2: a plateau
        + curve("max", 0, [70.0, 9.0, 7.0, 7.4])      # rose at the end: a plateau
        + [{"pool": "max", "seed": 0, "metric": "top1_error", "value": 7.4}])


def test_last_drops_are_second_to_last_minus_last():
    drops = last_drops(ROWS)
    assert set(drops) == {("avg", 0), ("avg", 1), ("max", 0)}
    assert abs(drops[("avg", 0)] - 1.5) < 1e-12 and abs(drops[("max", 0)] + 0.4) < 1e-12


def test_epochs_are_ordered_by_number_not_by_row_order():
    shuffled = list(reversed(curve("lift", 2, [50.0, 20.0, 12.0])))
    assert abs(last_drops(shuffled)[("lift", 2)] - 8.0) < 1e-12


def test_only_a_fall_beyond_the_tolerance_is_still_learning():
    assert still_learning(ROWS) == {"avg": [(0, 1.5)]}
    assert still_learning(ROWS, points=2.0) == {}
    loose = still_learning(ROWS, points=0.1)
    assert [seed for seed, _ in loose["avg"]] == [0, 1] and set(loose) == {"avg"}


def test_note_names_pool_seed_and_drop_or_is_none():
    note = plateau_note(ROWS)
    assert "avg (seed 0: -1.5)" in note and "max" not in note and "--epochs" in note
    assert "`poolbench check plateau --pool avg`" in note
    assert plateau_note(curve("max", 0, [70.0, 9.0, 8.5])) is None
    assert plateau_note(curve("max", 0, [70.0])) is None   # one point: nothing to compare


def test_curve_rows_carry_every_column_the_cells_rows_share():
    # regression: the learning-curve rows added to a robustness cell lacked its "reference"
    # column, so a view option was missing from some of its rows (KeyError in tests/test_cli_run.py)
    rows = [{"pool": "avg", "seed": 0, "reference": "max", "corruption": c, "metric": "error",
             "value": v, "unit": "%", "n": 32, "predictions": c} for c, v in (("fog", 9.0), ("snow", 7.0))]
    base = shared_columns(rows)
    assert base == {"pool": "avg", "seed": 0, "reference": "max"}   # corruption differs; values are not columns
    curve = curve_rows(base, [{"epoch": 1, "train_loss": 1.0, "lr": 0.1, "test_error": 50.0}])
    assert [(r["metric"], r["reference"], r["epoch"]) for r in curve if r["metric"] == "curve_test_error"] \
        == [("curve_test_error", "max", 1)]
