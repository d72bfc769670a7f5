"""``poolbench bench lift``, ``poolbench bench corrupt`` and ``poolbench check corrupt`` as click
commands: their help, bad input refused as a poolbench UsageError before any work (exit code 2
through ``main``), and the smallest LiftPool timing run."""
import json

import click
import pytest
from click.testing import CliRunner

from poolbench.errors import UsageError
from poolbench.tools import bench, bench_corrupt, bench_lift, check, check_corrupt

# as the top-level CLI adds them, without depending on it
ROOT = click.Group(commands=[bench, check])


def invoke(*args):
    return CliRunner().invoke(ROOT, list(args))


@pytest.mark.parametrize("args, options", [
    (("bench", "lift"), ["--threads", "--repeats", "--warmup", "--shapes", "--layouts", "--pools",
                         "--clock", "--json", "--train"]),
    (("bench", "corrupt"), ["--threads", "--sizes", "--images", "--severity", "--device", "--json"]),
    (("check", "corrupt"), ["--pool", "--preset", "--seed", "--data-seed", "--subset",
                            "--corruption-params", "--results", "--json"]),
    (("check", "plateau"), ["--pool", "--preset", "--dataset", "--seeds", "--factor", "--points",
                            "--results", "--json"]),
])
def test_help_shows_every_option(args, options):
    result = invoke(*args, "-h")
    assert result.exit_code == 0, result.output
    assert all(o in result.output for o in options), result.output


def test_groups_list_their_commands():
    assert set(bench.commands) == {"lift", "corrupt"} and set(check.commands) == {"corrupt", "plateau"}
    assert "lift" in invoke("bench", "-h").output and "corrupt" in invoke("check", "-h").output


@pytest.mark.parametrize("args, message", [
    (("bench", "lift", "--threads", "0"), "--threads must be >= 1"),
    (("bench", "lift", "--repeats", "0"), "--repeats must be >= 1"),
    (("bench", "lift", "--shapes", "1x4x6"), "must look like NxCxHxW"),
    (("bench", "lift", "--layouts", "nhwc"), "--layouts takes nchw, cl or both"),
    (("bench", "lift", "--pools", ";"), "--pools names no pool"),
    (("bench", "lift", "--json", "no/such/folder/rows.json"), "does not exist"),
    (("bench", "corrupt", "--threads", "0"), "--threads must be >= 1"),
    (("bench", "corrupt", "--severity", "6"), "--severity takes 1 to 5"),
    (("bench", "corrupt", "--sizes", "32,x"), "--sizes takes a comma list"),
    (("bench", "corrupt", "--device", "gpu"), "--device takes cpu or cuda"),
    (("check", "corrupt", "--subset", "0"), "--subset must be >= 1"),
])
def test_bad_values_are_usage_errors(args, message):
    result = invoke(*args)
    assert isinstance(result.exception, UsageError), result.output
    assert message in str(result.exception)


@pytest.mark.parametrize("main, argv, prefix", [
    (bench_lift.main, ["--threads", "0"], "bench_lift: --threads must be >= 1"),
    (bench_corrupt.main, ["--severity", "0"], "bench_corrupt: --severity takes 1 to 5"),
    (check_corrupt.main, ["--subset", "-3"], "check_corrupt: --subset must be >= 1"),
    (bench_lift.main, ["--threads", "one"], "bench_lift: Invalid value for '--threads'"),
])
def test_main_gives_exit_code_2_and_one_line(main, argv, prefix, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(prefix) and "\n" not in err


def test_bench_lift_smallest_run_takes_a_comma_list_and_repeats(tmp_path):
    rows_path = tmp_path / "rows.json"
    result = invoke("bench", "lift", "--shapes", "1x2x4x4,1x2x6x6", "--shapes", "1x2x8x8",
                    "--layouts", "nchw", "--repeats", "1", "--warmup", "0", "--pools", "lift;max",
                    "--json", str(rows_path))
    assert result.exit_code == 0, result.output
    assert "threads=1" in result.output and "lift/max" in result.output
    rows = json.loads(rows_path.read_text())["rows"]
    assert {r["shape"] for r in rows} == {"1x2x4x4", "1x2x6x6", "1x2x8x8"}
    assert {r["pool"] for r in rows} == {"lift", "max"}
