"""`poolbench run SUITE`: tables, JSON, resume from the store, one-line user errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch.nn.functional as F
from torch import nn

from poolbench import registry
from poolbench.cli import main

TINY = ["--train-size", "256", "--test-size", "64", "--epochs", "1", "--batch-size", "64", "--no-progress",
        "--seeds", "1"]


@pytest.fixture
def run(capsys, tmp_path):
    """Run the CLI in-process: (exit code, stdout, stderr)."""

    def _run(*args, results=tmp_path / "results"):
        capsys.readouterr()
        code = main(["run", *args, *TINY, "--results", str(results)])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def table(text: str) -> dict[str, dict[str, str]]:
    """A github-format table as {first column value: {header: cell}}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, text
    split = lambda ln: [c.strip() for c in ln.strip().strip("|").split("|")]  # noqa: E731
    header = split(lines[0])
    return {cells[0]: dict(zip(header, cells)) for cells in map(split, lines[2:])}


def value_of(cell: str) -> float:
    """The value of a printed cell: "89.06 [81.25, 95.31]" (with its interval) or "89.06"."""
    return float(cell.split()[0])


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("poolbench: error: ") and "Traceback" not in err
    return lines[0]


# --- accuracy -------------------------------------------------------------------------------------

@pytest.mark.slow  # trains
def test_accuracy_prints_a_table_and_writes_rows(run, tmp_path):
    code, out, err = run("accuracy", "--pool", "max", "--pool", "avg", "--wide")
    assert code == 0, err
    rows = table(out)
    assert set(rows) == {"max", "avg"}
    for r in rows.values():
        assert 0 <= value_of(r["top-1 err %"]) <= 100 and r["seeds"] == "1"
    assert len(list((tmp_path / "results" / "accuracy").glob("*.json"))) == 2
    assert "accuracy: 2 cells" in err


@pytest.mark.slow  # trains
def test_rerun_comes_from_the_store_with_identical_json(run):
    code, first, err = run("accuracy", "--pool", "max", "--pool", "avg", "--json")
    assert code == 0, err
    code, second, err = run("accuracy", "--pool", "max", "--pool", "avg", "--json")
    assert code == 0 and "2 of 2 cells already in" in err
    a, b = json.loads(first), json.loads(second)
    assert a == b  # every value, timings and provenance included, and the table with its intervals
    assert {(r["pool"], r["metric"]) for r in a["rows"]} >= {("max", "top1_error"), ("avg", "top1_error")}


@pytest.mark.slow  # trains
def test_json_prints_only_json_on_stdout(run):
    code, out, err = run("accuracy", "--pool", "avg", "--json")
    assert code == 0, err
    doc = json.loads(out)  # nothing but the document: the stored rows and the printed table
    rows = doc["rows"]
    assert rows and all(r["suite"] == "accuracy" and r["pool"] == "avg" for r in rows)
    (shown,) = doc["table"]
    assert shown["pool"] == "avg" and shown["top-1 err %"] == pytest.approx(
        next(r["value"] for r in rows if r["metric"] == "top1_error"))
    assert shown["top-1 err % lo"] <= shown["top-1 err %"] <= shown["top-1 err % hi"]
    assert "|" not in out.replace('"|"', "")


@pytest.mark.parametrize("args,needle", [
    (["accuracy", "--pool", "maxx"], "unknown pool 'maxx'; did you mean max?"),
    (["accuracy", "--model", "convnett"], "unknown model 'convnett'"),
    (["accuracy", "--dataset", "shapez"], "unknown classification dataset 'shapez'"),
    (["accuracy", "--preset", "quik"], "unknown preset 'quik'; did you mean quick?"),
    (["accuracy", "--executor", "threads"], "Invalid value for '--executor'"),
    (["robustness", "--corruptions", "fogg"], "unknown corruption 'fogg'"),
    (["robustness", "--severities", "0,9"], "severities must be in [1, 5], got 0 (--severities)"),
    (["perturbation", "--perturbations", "wobble"], "unknown perturbation 'wobble'"),
    (["accuracy", "--checkpoint", "/nonexistent/model.pt"], "not found"),
])
def test_user_errors_exit_2_with_one_line(run, tmp_path, args, needle):
    code, out, err = run(*args)
    assert code == 2 and out == ""
    assert needle in one_error_line(err)
    assert not (tmp_path / "results" / args[0]).exists()  # nothing ran


@pytest.mark.slow  # trains
def test_checkpoint_of_another_model_is_one_line_usage_error(run, tmp_path):
    code, out, _ = run("accuracy", "--pool", "max", "--json")
    assert code == 0
    from poolbench.config import load_preset, train_config
    from poolbench.training.cache import checkpoint_path

    trained = next(r for r in json.loads(out)["rows"] if r["metric"] == "top1_error")
    overrides = {"train_size": 256, "test_size": 64, "epochs": 1, "batch_size": 64,
                 "data_fingerprint": trained["data_fingerprint"]}
    ckpt = checkpoint_path(train_config(load_preset("quick"), "max", 0, overrides))
    code, out, err = run("accuracy", "--pool", "skip", "--checkpoint", str(ckpt))
    assert code == 2 and out == ""
    assert "was trained with pool 'max'" in one_error_line(err)


class NaNPool(nn.Module):
    def forward(self, x):
        return F.max_pool2d(x, 2) * float("nan")


@pytest.fixture
def nan_pool():
    registry.register_pool("test_cli_nan")(lambda channels: NaNPool())
    yield "test_cli_nan"
    registry.unregister_pool("test_cli_nan")


@pytest.mark.slow  # trains
def test_diverged_training_reports_one_clear_line(run, nan_pool):
    code, out, err = run("accuracy", "--pool", nan_pool)
    lines = [ln for ln in err.splitlines() if ln.startswith("poolbench:")]
    assert len(lines) == 1 and lines[0].startswith(f"poolbench: {nan_pool}: training {nan_pool}")
    assert "lower --lr" in lines[0] and "Traceback" not in err and "Warning" not in err


@pytest.mark.slow  # trains
def test_diverged_training_exits_1(run, nan_pool):
    code, _, _ = run("accuracy", "--pool", nan_pool)
    assert code == 1


# --- robustness, perturbation, shift ---------------------------------------------------------------

@pytest.mark.slow  # trains
def test_robustness_mce_against_max(run):
    args = ["robustness", "--pool", "avg", "--subset", "32", "--corruptions", "gaussian_noise,fog",
            "--severities", "1,3"]
    code, out, err = run(*args, "--wide")
    assert code == 0, err
    rows = table(out)
    assert set(rows) == {"avg", "max"}  # the reference is added and trained on the same images
    assert {"CE gauss", "CE fog", "clean err %"} <= set(rows["avg"])

    code, out, err = run(*args, "--json")
    assert code == 0 and "2 of 2 cells already in" in err
    data = json.loads(out)["rows"]
    errors = {(r["pool"], r["corruption"], r["severity"]): r["value"] for r in data if r["metric"] == "error"}
    assert {(c, s) for _, c, s in errors} == {("gaussian_noise", 1), ("gaussian_noise", 3), ("fog", 1), ("fog", 3)}
    assert all(r["n"] == 32 for r in data if r["metric"] in ("error", "clean_error"))
    assert {r["reference"] for r in data} == {"max"}  # the view option is in every row
    ce = [sum(errors["avg", c, s] for s in (1, 3)) / sum(errors["max", c, s] for s in (1, 3))
          for c in ("gaussian_noise", "fog")]
    assert value_of(rows["avg"]["mCE"]) == pytest.approx(100 * np.mean(ce), abs=0.006)
    assert value_of(rows["avg"]["CE fog"]) == pytest.approx(100 * ce[1], abs=0.006)


@pytest.mark.slow  # trains
def test_perturbation_mfr_against_max(run):
    args = ["perturbation", "--pool", "avg", "--subset", "32", "--perturbations", "translate,gaussian_noise"]
    code, out, err = run(*args)
    assert code == 0, err
    rows = table(out)
    assert set(rows) == {"avg", "max"}

    code, out, _ = run(*args, "--json")
    data = json.loads(out)["rows"]
    fp = {(r["pool"], r["perturbation"]): r["value"] for r in data if r["metric"] == "flip_probability"}
    assert {p for _, p in fp} == {"translate", "gaussian_noise"}
    assert all(0 <= v <= 1 for v in fp.values())
    assert {r["reference"] for r in data} == {"max"}
    used = [p for p in ("translate", "gaussian_noise") if fp["max", p] > 0]
    assert used, "the reference never flipped: mFR is undefined on these sequences"
    expected = 100 * np.mean([fp["avg", p] / fp["max", p] for p in used])
    assert value_of(rows["avg"]["mFR"]) == pytest.approx(expected, abs=0.006)


@pytest.mark.slow  # trains
def test_shift_consistency(run):
    code, out, err = run("shift", "--pool", "avg", "--subset", "32", "--passes", "2", "--max-shift", "2")
    assert code == 0, err
    rows = table(out)
    assert set(rows) == {"avg"}
    for col in ("consistency crop %", "consistency circular %", "clean acc %"):
        assert 0 <= value_of(rows["avg"][col]) <= 100

    code, out, _ = run("shift", "--pool", "avg", "--subset", "32", "--passes", "2", "--max-shift", "2", "--json")
    data = json.loads(out)["rows"]
    kinds = sorted(r["shift_kind"] for r in data if r["metric"] == "consistency")
    assert kinds == ["circular", "crop"]
    for kind in ("diagonal_crop", "diagonal_roll"):   # the published sweep and the circular one
        diag = sorted(r["shift"] for r in data if r["metric"] == "top1_accuracy" and r["shift_kind"] == kind)
        assert diag == [0, 1, 2]
    probs = [r for r in data if r["metric"] == "true_class_probability"]
    assert all(r["unit"] == "%" and 0 <= r["value"] <= 100 for r in probs)
    # no shift at all: the crop of the padded image at offset k is the image itself
    at0 = {r["shift_kind"]: r["value"] for r in data if r["metric"] == "top1_accuracy" and r["shift"] == 0}
    assert at0["diagonal_crop"] == at0["diagonal_roll"]
    acc0 = at0["diagonal_crop"]
    assert value_of(rows["avg"]["clean acc %"]) == pytest.approx(acc0, abs=0.006)


def test_run_all_tuned_runs_suites_without_a_classifier_on_the_shared_recipe(monkeypatch, capsys):
    from poolbench import cli
    from poolbench.suites import get_suite, list_suites
    from poolbench.suites.base import TrainedSuite

    ran = {}
    monkeypatch.setattr(cli, "execute_suite",
                        lambda name, pools, as_json, wide, options: ran.setdefault(name, options["recipe"]))
    assert main(["run", "all", "--pool", "lift", "--recipe", "tuned"]) == 0
    trained = {n for n in list_suites() if isinstance(get_suite(n), TrainedSuite)}
    assert trained and {n for n, r in ran.items() if r == "tuned"} == trained
    others = set(list_suites()) - trained
    assert others and all(ran[n] is None for n in others)
    err = capsys.readouterr().err
    assert all(f"note: {n} trains no classifier, so --recipe tuned does not apply" in err for n in others)
