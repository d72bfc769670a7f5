"""Fast checks of the report's inputs: stores merged by cell hash (a conflict is one line),
learning curves and tables grouped by training recipe (never averaged across recipes), and the
page's text escaped."""
from __future__ import annotations

import pandas as pd
import pytest

from poolbench.errors import UsageError
from poolbench.report import build_report
from poolbench.report.context import groups
from poolbench.report.page import inline
from poolbench.report.sections import learning_curves
from poolbench.report.stores import load_stores


def test_the_same_cell_in_two_stores_is_read_once(tmp_path, write_cell):
    a, b = tmp_path / "a", tmp_path / "b"
    shared = write_cell(a, "max", "shapes", 0, 10.0)
    write_cell(b, "max", "shapes", 0, 10.0)                  # the same cell, computed again
    only_b = write_cell(b, "lift", "shapes", 0, 5.0)
    frame, store = load_stores([str(a), str(b)])
    per_cell = frame.groupby("config_hash").size()
    assert set(per_cell.index) == {shared, only_b} and per_cell[shared] == per_cell[only_b] == 3
    assert set(frame.loc[frame["config_hash"] == only_b, "store"]) == {str(b)}
    assert store.of(shared).root == a and store.of(only_b).root == b


def test_merge_names_two_values_of_one_cell_in_one_line(tmp_path, write_cell):
    """A value edited by hand in a file is caught by the store's digest (set aside, issue 24);
    two stores that each verify but hold different values for one hash (another machine, another
    code version under the same hash) are named, never picked from."""
    a, b = tmp_path / "a", tmp_path / "b"
    chash = write_cell(a, "max", "shapes", 0, 10.0)
    assert write_cell(b, "max", "shapes", 0, 12.5) == chash   # top1_error 10.0 vs 12.5
    with pytest.raises(UsageError) as err:
        build_report([str(a), str(b)], str(tmp_path / "out"))
    message = str(err.value)
    assert "\n" not in message
    assert chash[:12] in message and str(a) in message and str(b) in message
    assert "top1_error = 10.0" in message and "12.5" in message
    assert not (tmp_path / "out" / "report.md").exists()


def test_learning_curves_of_two_recipes_are_not_averaged(tmp_path):
    """Regression: the report averaged the learning curves of one pool over every cell, so two
    recipes of ``max`` (2 and 3 epochs) drew one line of their mean."""
    rows, recipes = [], {}
    for chash, epochs, seed, curve in (("h2s0", 2, 0, (40.0, 20.0)), ("h2s1", 2, 1, (30.0, 10.0)),
                                       ("h3s0", 3, 0, (50.0, 30.0, 5.0))):
        recipes[chash] = {"pool": "max", "epochs": epochs, "lr": 0.05}
        rows += [{"config_hash": chash, "pool": "max", "seed": seed, "metric": "curve_test_error",
                  "epoch": e, "value": v} for e, v in enumerate(curve, start=1)]
    rows += [{"config_hash": "a0", "pool": "avg", "seed": 0, "metric": "curve_test_error",
              "epoch": e, "value": v} for e, v in ((1, 9.0), (2, 8.0))]
    recipes["a0"] = {"pool": "avg", "epochs": 2, "lr": 0.05}
    styles = {"max": {"color": "red", "marker": "o"}, "avg": {"color": "blue", "marker": "s"}}
    curves, lines = learning_curves(pd.DataFrame(rows), recipes, styles)
    assert curves == {"curve_test_error": {
        "max (epochs=2)": ([1, 2], [35.0, 15.0]),          # seeds 0 and 1 of one recipe: mean
        "max (epochs=3)": ([1, 2, 3], [50.0, 30.0, 5.0]),
        "avg": ([1, 2], [9.0, 8.0])}}
    assert lines["max (epochs=2)"]["color"] == lines["max (epochs=3)"]["color"] == "red"
    assert lines["max (epochs=2)"]["marker"] != lines["max (epochs=3)"]["marker"]


def test_a_cells_recipe_is_its_training_settings_without_the_seed(tmp_path, write_cell):
    chash = write_cell(tmp_path, "max", "shapes", 1, 10.0, epochs=3)
    _, store = load_stores([str(tmp_path)])
    assert store.recipe("accuracy", chash) == {"pool": "max", "model": "convnet", "dataset": "shapes",
                                               "epochs": 3, "batch_size": 32}


def test_tables_of_two_recipes_are_not_averaged():
    """The same bug in the tables: ``avg`` trained at batch 32 and at batch 64 (seed 0 each) was
    one row, the mean of both, with "1 seed". Each recipe now gets a group of its own, headed
    by what differs; pools with one recipe stay in one group."""
    rows = pd.DataFrame([{"config_hash": h, "pool": p, "model": "convnet", "dataset": "shapes", "value": v}
                         for h, p, v in (("a32", "avg", 12.0), ("a64", "avg", 17.0), ("m32", "max", 4.0))])
    recipes = {"a32": {"pool": "avg", "batch_size": 32, "epochs": 6},
               "a64": {"pool": "avg", "batch_size": 64, "epochs": 6},
               "m32": {"pool": "max", "batch_size": 32, "epochs": 6}}
    split = groups(rows, recipes)
    assert [(label, sorted(sub["config_hash"])) for label, _, sub in split] == [
        ("convnet on shapes, batch_size=32", ["a32", "m32"]),
        ("convnet on shapes, batch_size=64", ["a64"])]
    assert len({suffix for _, suffix, _ in split}) == 2                 # figure names differ
    recipes["a64"]["batch_size"] = 32                                    # one recipe: one table
    assert [(label, len(sub)) for label, _, sub in groups(rows, recipes)] == [(None, 3)]


def test_page_text_is_escaped_and_links_nowhere():
    html = inline("pool `a<b>` **best** <script>alert(1)</script> <http://example.org> [x](http://e.org)")
    assert "<script>" not in html and "&lt;script&gt;" in html and "href" not in html
    assert "<code>a&lt;b&gt;</code>" in html and "<strong>best</strong>" in html
