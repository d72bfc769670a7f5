"""``--recipe tuned``: the choice rule on hand-made errors, the report's comparison on hand-made
rows, and, trained (slow, tiny), that the test set is never read while choosing."""
import json
import math

import pandas as pd
import pytest
import torch

import poolbench
import poolbench.data as data
from poolbench import api, cli, runner, selection
from poolbench.config import TrainConfig
from poolbench.errors import PoolbenchError, UsageError
from poolbench.report.context import groups
from poolbench.report.recipes import _ranking_text, comparison
from poolbench.selection import LR_GRID, SELECTION_SEED, choose, holdout_size
from poolbench.store import ResultStore
from poolbench.suites import base as suites_base

TINY = dict(epochs=1, train_size=256, test_size=64, batch_size=32, progress=False, executor="sequential")


def test_choice_keeps_the_shared_rate_within_the_noise_and_ties_to_the_lower_rate():
    # 11% shared error on 1000 images: 1.96 * sqrt(0.11 * 0.89 / 1000) = 1.9393 points
    factor, margin = choose({0.5: 12.0, 1.0: 11.0, 2.0: 10.0}, 1000)
    assert factor == 1.0 and margin == pytest.approx(1.9393, abs=1e-4)
    assert choose({0.5: 12.0, 1.0: 11.0, 2.0: 9.0}, 1000)[0] == 2.0         # beaten by 2.0 > 1.94
    assert choose({0.5: 5.0, 1.0: 20.0, 2.0: 5.0}, 100)[0] == 0.5           # equal errors: the lower rate
    assert choose({0.5: 40.0, 1.0: 10.0, 2.0: 10.0}, 50)[0] == 1.0          # equal to the shared: shared
    factor, margin = choose({0.5: 30.0, 2.0: 20.0}, 100)                     # the shared rate diverged
    assert factor == 2.0 and math.isnan(margin)
    with pytest.raises(PoolbenchError):
        choose({}, 100)
    assert LR_GRID == (0.5, 1.0, 2.0) and holdout_size(10_000) == 1000 and holdout_size(3) == 1


def _record(pool, chash, chosen, errors):
    base = {"suite": "selection", "config_hash": chash, "pool": pool, "model": "convnet",
            "dataset": "shapes", "seed": SELECTION_SEED, "holdout": 100, "shared_lr": 0.05}
    rows = [{**base, "metric": "validation_error", "value": e, "lr_factor": f, "lr": 0.05 * f,
             "candidate_hash": f"{pool}{f}"} for f, e in errors.items()]
    rows += [{**base, "metric": "candidate_train_time", "value": 2.0, "lr_factor": f, "train_device": "cpu",
              "candidate_hash": f"{pool}{f}"} for f in errors]
    return rows + [{**base, "metric": "chosen_lr", "value": 0.05 * chosen, "lr_factor": chosen}]


def test_report_puts_shared_and_tuned_side_by_side_and_names_rank_changes():
    recipe = {"pool": "max", "model": "convnet", "dataset": "shapes", "lr": 0.05}
    recipes = {"rec-max": recipe, "rec-lift": {**recipe, "pool": "lift"},
               "max-shared": recipe, "lift-shared": {**recipe, "pool": "lift"},
               "lift-tuned": {**recipe, "pool": "lift", "lr": 0.1}}
    records = pd.DataFrame(_record("max", "rec-max", 1.0, {0.5: 12, 1.0: 10, 2.0: 11})
                           + _record("lift", "rec-lift", 2.0, {0.5: 20, 1.0: 15, 2.0: 9}))
    acc = pd.DataFrame([{"suite": "accuracy", "metric": "top1_error", "config_hash": h, "seed": s, "value": v}
                        for h, values in (("max-shared", (10, 12)), ("lift-shared", (14, 16)),
                                          ("lift-tuned", (8, 9))) for s, v in enumerate(values)])
    table = comparison(records, acc, recipes).set_index("pool")
    assert table.loc["max", "shared"] == table.loc["max", "tuned"] == {0: 10.0, 1: 12.0}  # the same cells
    assert table.loc["lift", "shared"] == {0: 14.0, 1: 16.0}
    assert table.loc["lift", "tuned"] == {0: 8.0, 1: 9.0}
    assert table.loc["lift", "lr"] == pytest.approx(0.1) and table.loc["lift", "new_trainings"] == 2
    assert table.loc["max", "new_trainings"] == 0
    assert table.loc["lift", "validation"] == {0.5: 20.0, 1.0: 15.0, 2.0: 9.0}
    text = _ranking_text({"max": 1, "lift": 2}, {"lift": 1, "max": 2})
    assert "`lift` (2 -> 1)" in text and "`max` (1 -> 2)" in text
    assert "no pool's rank" in _ranking_text({"max": 1, "lift": 2}, {"max": 1, "lift": 2})


def test_a_table_of_pools_with_different_recipes_says_which():
    frame = pd.DataFrame([{"model": "convnet", "dataset": "shapes", "pool": p, "config_hash": h}
                          for p, h in (("max", "a"), ("lift", "b"), ("lift", "b2"))])
    tuned = {"a": {"pool": "max", "lr": 0.025, "epochs": 1}, "b": {"pool": "lift", "lr": 0.1, "epochs": 1},
             "b2": {"pool": "lift", "lr": 0.1, "epochs": 1}}
    [(label, _, rows)] = groups(frame, tuned)
    assert label == "convnet on shapes, recipe per pool: lift lr=0.1; max lr=0.025" and len(rows) == 3
    shared = {h: {**r, "lr": 0.05} for h, r in tuned.items()}
    assert groups(frame, shared)[0][0] is None                              # one recipe: no heading


def _fake_trainings(monkeypatch, errors: dict, calls: list):
    """run_cells as the runner does it (rows stored under each cell's hash), without training:
    the candidate at lr factor f scores ``errors[f]`` (None: its training diverged)."""
    def run_cells(suite, cells, ctx, executor, log=None):
        calls.append(len(cells))
        out = []
        for cell in cells:
            chash = runner.cell_hash(suite, cell)
            factor = cell["train"]["lr"] / 0.05
            base = {"suite": suite, "config_hash": chash, "pool": cell["train"]["pool"], "device": "cpu",
                    "error": "", "split": "validation"}
            rows = ([{**base, "metric": "top1_error", "value": errors[factor], "n": 100},
                     {**base, "metric": "train_time", "value": 1.5}] if errors[factor] is not None
                    else [{**base, "metric": "error", "value": None, "error": "training diverged"}])
            ResultStore(ctx.results).write(suite, chash, {"suite": suite, **cell}, rows)
            out += rows
        return runner.RunReport(rows=out, computed=len(cells), skipped=0, failed=0)

    monkeypatch.setattr(selection, "run_cells", run_cells)


def test_choice_is_recorded_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    calls = []
    _fake_trainings(monkeypatch, {0.5: 30.0, 1.0: 25.0, 2.0: None}, calls)
    configs = [TrainConfig(pool="max", epochs=1, train_size=64, test_size=16, seed=s) for s in (0, 1)]
    ctx = runner.RunContext(results=str(tmp_path))
    prepare = lambda cells: api.with_data(cells, None, {})  # noqa: E731
    first = selection.select(configs, ctx, "sequential", prepare)
    assert calls == [3] and first.chosen == {"max": 0.05} and first.cost()["computed"] == 3
    rows = {(r["metric"], r.get("lr_factor")): r for r in first.rows}
    assert rows[("validation_error", 2.0)]["error"] == "training diverged"   # kept, and left out
    assert rows[("chosen_lr", 1.0)]["margin"] == pytest.approx(100 * 1.96 * math.sqrt(0.25 * 0.75 / 100))
    assert first.seconds == {"cpu": 3.0} and len(list((tmp_path / "selection").glob("*.json"))) == 1
    again = selection.select(configs, ctx, "sequential", prepare)           # the failed one too: read back
    assert calls == [3] and again.rows == first.rows and again.cost()["reused"] == 3


def test_no_choice_while_candidates_are_still_running(tmp_path, monkeypatch):
    monkeypatch.setattr(selection, "run_cells", lambda *a, **k: runner.RunReport([], 0, 0, 0, submitted=3))
    configs = [TrainConfig(pool="max", epochs=1, train_size=64, test_size=16)]
    with pytest.raises(UsageError) as err:
        selection.select(configs, runner.RunContext(results=str(tmp_path)), "slurm",
                         lambda cells: api.with_data(cells, None, {}))
    assert "3 candidate trainings" in str(err.value) and not (tmp_path / "selection").exists()


def test_tuned_is_refused_where_no_classifier_trains():
    with pytest.raises(UsageError) as err:
        api.cells_of("efficiency", ["max"], recipe="tuned")
    assert "--recipe tuned" in str(err.value) and "\n" not in str(err.value)


def test_a_preset_chooses_the_recipe_and_status_lists_the_candidates(tmp_path):
    preset, results = tmp_path / "tuned.toml", str(tmp_path / "results")
    preset.write_text('[train]\nrecipe = "tuned"\nepochs = 1\ntrain_size = 64\ntest_size = 16\n'
                      'seeds = [0, 1]\n')
    assert api.cells_of("efficiency", ["max"], preset=str(preset))[0]     # not applied: nothing trains
    pairs, _ = api.status_cells("shift", ["max"], preset=str(preset), results=results)
    # applied: the candidates (accuracy cells), no final cell before the choice is stored
    assert [(s, c["train"]["holdout"], c["train"]["seed"]) for s, c in pairs] == [("accuracy", 6, 1000)] * 3
    assert sorted(c["train"]["lr"] for _, c in pairs) == [0.025, 0.05, 0.1]
    shared = api.cells_of("shift", ["max"], preset=str(preset), recipe="shared", results=results)[0]
    assert [c["train"]["seed"] for c in shared] == [0, 1]                  # the flag wins
    preset.write_text('[train]\nrecipe = "best"\n')
    with pytest.raises(UsageError) as err:
        api.cells_of("accuracy", ["max"], preset=str(preset))
    assert "key recipe in [train]" in str(err.value) and "shared, tuned" in str(err.value)


class NanImages(torch.utils.data.Dataset):
    """A test split whose every pixel is NaN (what a broken test file would give)."""

    def __init__(self, like):
        self.like = like
        self.transform = like.transform  # the test transform; the images are what is broken

    def __len__(self):
        return len(self.like)

    def __getitem__(self, i):
        x, y = self.like[i]
        return torch.full_like(x, float("nan")), y


def _tuned(tmp_path, name, monkeypatch, nan: bool):
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / f"cache-{name}"))  # every model trained anew
    suites_base._bundle.cache_clear()  # the datasets this process loaded for the other run
    if nan:
        real = data.load_shapes

        def nan_test(**kw):  # the data layer: what the loader returns, before any holdout
            bundle = real(**kw)
            return type(bundle)(**{**bundle.__dict__, "test": NanImages(bundle.test)})

        monkeypatch.setattr(data, "load_shapes", nan_test)
    return poolbench.run("accuracy", ["max"], recipe="tuned", seed=0, results=str(tmp_path / name), **TINY)


@pytest.fixture
def fresh_bundles():
    """No dataset loaded by another test (or run) of this process, none left for the next."""
    suites_base._bundle.cache_clear()
    yield
    suites_base._bundle.cache_clear()


@pytest.mark.slow
def test_selection_never_reads_the_test_set(tmp_path, monkeypatch, fresh_bundles):
    clean = _tuned(tmp_path, "clean", monkeypatch, nan=False)
    with pytest.raises(UsageError) as err:
        _tuned(tmp_path, "nan", monkeypatch, nan=True)
    text = str(err.value)
    assert "\n" not in text and text.startswith("shapes test split holds images with non-finite pixels")
    # the selection ran to its end before the final evaluation failed: the same choice, the
    # same validation errors, from candidates trained again (another model cache)
    records = [json.loads(p.read_text()) for p in (tmp_path / "nan" / "selection").glob("*.json")]
    assert len(records) == 1
    rows = {(r["metric"], r.get("lr_factor")): r["value"] for r in records[0]["rows"]}
    picked = clean.selection["chosen"]["max"]
    assert {f"{f:g}": rows[("validation_error", f)] for f in LR_GRID} == picked["validation_error"]
    assert rows[("chosen_lr", picked["lr_factor"])] == picked["lr"]
    assert all(math.isfinite(v) for v in picked["validation_error"].values())
    assert clean.selection["cost"]["computed"] == 3


@pytest.mark.slow
def test_cli_tuned_run_reuses_everything_and_reports_both(tmp_path, monkeypatch, capsys, fresh_bundles):
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    results = str(tmp_path / "results")
    args = ["run", "accuracy", "--pool", "max", "--pool", "avg", "--epochs", "1", "--train-size", "256",
            "--test-size", "64", "--seeds", "2", "--results", results, "--no-progress",
            "--executor", "sequential"]
    assert cli.main(args + ["--recipe", "tuned", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    chosen = first["selection"]["chosen"]
    assert set(chosen) == {"max", "avg"} and first["selection"]["cost"]["trainings"] == 6
    assert {r["recipe"] for r in first["rows"]} == {"tuned"}
    assert {(r["pool"], r["lr"]) for r in first["rows"]} == {(p, c["lr"]) for p, c in chosen.items()}
    assert all(t["recipe"].startswith("tuned: lr ") for t in first["table"])
    assert cli.main(args + ["--recipe", "tuned", "--json"]) == 0            # a rerun trains nothing
    again = json.loads(capsys.readouterr().out)
    assert again["selection"]["cost"] == {**first["selection"]["cost"], "computed": 0, "reused": 6}
    assert again["selection"]["chosen"] == chosen
    assert cli.main(["status", *args[1:], "--recipe", "tuned", "--json"]) == 0   # candidates and finals
    status = json.loads(capsys.readouterr().out)
    assert len(status) == 10 and {r["state"] for r in status} == {"done"}
    assert cli.main(args) == 0                                                # the shared recipe
    out = capsys.readouterr()
    # where the shared rate was chosen, the tuned cells were the shared ones: read back
    new = 2 * sum(c["lr_factor"] != 1.0 for c in chosen.values())
    assert f"accuracy: 4 cells ({new} computed, {4 - new} from the store)" in out.err
    assert "recipe" not in out.out.splitlines()[0]
    assert cli.main(["report", "--results", results, "--out", str(tmp_path / "report"),
                     "--no-illustrations"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    section = md[md.index("## Recipe selection: shared and tuned"):]
    assert "| avg" in section and "| max" in section and "Cost: the selection trained 6 candidates" in section
    assert "Ranking" in section
    assert "Recipe selection: shared and tuned" in (tmp_path / "report" / "report.html").read_text()
    clean = md[md.index("## Clean accuracy"):md.index("## Recipe selection")]
    assert "validation" not in clean and "holdout" not in clean               # candidates stay out
