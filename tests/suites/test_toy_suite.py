"""A suite is registered once: a toy suite declared in this module alone appears in
`poolbench run`, takes its options from its Options fields (help, range, choices) and runs
through `poolbench.run` like a built-in; a new field shows up in `-h` with no edit to the CLI."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pandas as pd
import pytest

import poolbench
from poolbench import cli
from poolbench.errors import UsageError
from poolbench.options import check_fields, option
from poolbench.store import make_row
from poolbench.suites import list_suites, register_suite, unregister_suite
from poolbench.suites.base import Suite, pool_columns


@dataclass(frozen=True)
class ToyOptions:
    size: int = option(3, "How many things the toy counts.", low=1, high=10)
    flavour: str = option("plain", "Which toy.", choices=("plain", "spicy"))

    def __post_init__(self):
        check_fields(self, "toy")


class ToySuite(Suite):
    """Count things per pool: a suite written in one module."""

    name = "toy"
    Options = ToyOptions
    order = 99

    def cells(self, train_configs, options):
        return [{"pool": cfg.pool, "seed": cfg.seed, "size": options.size, "flavour": options.flavour}
                for cfg in train_configs]

    def run_cell(self, cell, ctx):
        factor = 2 if cell["flavour"] == "spicy" else 1
        return [make_row({**pool_columns(cell["pool"]), "seed": cell["seed"]}, "things",
                         cell["size"] * factor, "count")]

    def error_row(self, cell, ctx, message):
        return make_row(pool_columns(cell["pool"]), "error", None, error=message)

    def table(self, frame, options=None, store=None):
        return frame.pivot_table(index="pool", columns="metric", values="value")


@pytest.fixture
def toy():
    register_suite(ToySuite())
    yield
    unregister_suite("toy")


def _run_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_registered_suite_is_a_command_with_its_options(toy, capsys):
    assert "toy" in list_suites()
    code, out, _ = _run_cli(capsys, "run", "-h")
    assert code == 0 and "toy" in out and "Count things per pool" in out
    code, out, _ = _run_cli(capsys, "run", "toy", "-h")
    assert code == 0
    assert "--size INTEGER" in out and "How many things the toy counts. [default: 3]" in out
    assert "--flavour [plain|spicy]" in out


def test_a_registered_suite_runs_through_the_cli_and_the_api(toy, capsys, tmp_path):
    code, out, _ = _run_cli(capsys, "run", "toy", "--pool", "avg", "--size", "4", "--flavour", "spicy",
                            "--seed", "0", "--results", str(tmp_path), "--json", "--no-progress")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [(r["pool"], r["metric"], r["value"]) for r in rows] == [("avg", "things", 8)]
    result = poolbench.run("toy", ["avg"], size=4, flavour="spicy", seed=0, results=str(tmp_path))
    assert result.computed == 0 and result.skipped == 1  # the same cell, from the store
    assert result.table.loc["avg", "things"] == 8


@pytest.mark.parametrize("args, fragment", [
    (["--size", "11"], "toy size must be in [1, 10], got 11 (--size)"),
    (["--flavour", "sweet"], "'sweet' is not one of 'plain', 'spicy'"),
])
def test_a_registered_suite_checks_its_declared_ranges_and_choices(toy, capsys, tmp_path, args, fragment):
    code, _, err = _run_cli(capsys, "run", "toy", "--results", str(tmp_path), *args)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="toy option flavour must be one of plain, spicy"):
        ToyOptions(flavour="sweet")


def test_a_new_option_field_appears_in_help_without_a_cli_edit(toy, capsys):
    @dataclass(frozen=True)
    class Wider(ToyOptions):
        new_knob: float = option(0.5, "A knob added to the Options only.", low=0)

    register_suite(type("WiderToy", (ToySuite,), {"Options": Wider})())
    code, out, _ = _run_cli(capsys, "run", "toy", "-h")
    assert code == 0 and "--new-knob FLOAT" in out and "A knob added to the Options only." in out
    assert [f.name for f in dataclasses.fields(Wider)][-1] == "new_knob"


def test_the_preset_table_of_a_suite_takes_the_same_keys(toy, tmp_path):
    preset = tmp_path / "toy.toml"
    preset.write_text('[train]\nmodel = "convnet"\n\n[toy]\nsize = 5\n')
    result = poolbench.run("toy", ["max"], preset=str(preset), results=str(tmp_path / "r"))
    assert result.options.size == 5 and result.table.loc["max", "things"] == 5
    preset.write_text('[train]\n\n[toy]\nsise = 5\n')
    with pytest.raises(UsageError, match="unknown toy option sise; accepted: flavour, size"):
        poolbench.run("toy", ["max"], preset=str(preset), results=str(tmp_path / "r"))
    assert isinstance(result.frame, pd.DataFrame)
