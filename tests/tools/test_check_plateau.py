"""The recipe-length check (``poolbench check plateau``): the comparison against hand-computed
cases, one-line refusals, and end to end on tiny trainings."""
import json

import pytest

from poolbench import api
from poolbench.tools import check_plateau


def test_compare_on_hand_computed_cases():
    short = {("max", 0): 10.0, ("max", 1): 12.0, ("lift", 0): 20.0, ("lift", 1): 22.0, ("avg", 0): 30.0}
    long = {("max", 0): 9.5, ("max", 1): 12.5, ("lift", 0): 15.0, ("lift", 1): 19.0, ("avg", 0): 29.5}
    table = check_plateau.compare(short, long, points=1.0).set_index("pool")
    # max: changes -0.5 and +0.5: mean 0, sd sqrt(0.5), standard error 0.5; t(0.975, 1 dof) =
    # 12.7062, so the interval is 0 +- 6.3531
    half = 6.3531
    assert table.loc["max", "change"] == 0.0 and table.loc["max", "plateau"]
    assert table.loc["max", "change lo"] == pytest.approx(-half, abs=1e-3)
    assert table.loc["max", "change hi"] == pytest.approx(half, abs=1e-3)
    # lift: -5 and -3, mean -4: still learning; its errors are the means at each length
    assert table.loc["lift", "change"] == -4.0 and not table.loc["lift", "plateau"]
    assert (table.loc["lift", "error"], table.loc["lift", "error longer"]) == (21.0, 17.0)
    # one seed: no interval, and a gain of exactly `points` is still a plateau
    assert table.loc["avg", "change"] == -0.5 and table.loc["avg", "plateau"]
    assert check_plateau.compare({("a", 0): 5.0}, {("a", 0): 4.0}, points=1.0)["plateau"].item()
    assert not check_plateau.compare({("a", 0): 5.0}, {("a", 0): 3.9}, points=1.0)["plateau"].item()


def test_seeds_trained_at_one_length_only_are_left_out():
    table = check_plateau.compare({("max", 0): 10.0, ("max", 1): 11.0, ("lift", 0): 9.0},
                                  {("max", 1): 8.0})
    assert list(table["pool"]) == ["max"] and table["seeds"].item() == 1 and table["change"].item() == -3.0


@pytest.mark.parametrize("argv, message", [
    (["--factor", "1"], "--factor must be above 1"),
    (["--points", "-1"], "--points must be >= 0"),
    (["--preset", "cifar100-vgg13"], "step schedule"),
    (["--pool", "nosuch"], "unknown pool 'nosuch'"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    assert check_plateau.main(argv + ["--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("check_plateau: ") and message in err and "\n" not in err


@pytest.mark.slow  # trains 2 pools at 1 and 2 epochs
def test_longer_cells_are_the_runs_of_the_longer_recipe_and_a_rerun_trains_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    preset = tmp_path / "tiny.toml"
    preset.write_text('[train]\nmodel = "convnet"\ndataset = "shapes"\ntrain_size = 256\ntest_size = 64\n'
                      'epochs = 1\nbatch_size = 64\nlr = 0.05\nschedule = "cosine"\nseeds = [0]\n')
    calls, original = [], api.run

    def run(*args, **kwargs):
        result = original(*args, **kwargs, executor="sequential", threads=1)
        calls.append(result.computed)
        return result
    monkeypatch.setattr(check_plateau.api, "run", run)
    args = ["--preset", str(preset), "--pool", "max", "--pool", "skip", "--points", "100",
            "--results", str(tmp_path / "res"), "--json", str(tmp_path / "t.json")]
    assert check_plateau.main(args) == 0
    out = capsys.readouterr().out
    assert "max: 1 -> 2 epochs changes clean error by" in out and "plateau" in out
    table = json.loads((tmp_path / "t.json").read_text())
    assert (table["epochs"], table["longer"]) == (1, 2)
    # the longer cells are exactly what `poolbench run accuracy --epochs 2` computes and stores
    direct = original("accuracy", pools=["max", "skip"], preset=str(preset), epochs=2, reference="max",
                     results=str(tmp_path / "res"), progress=False)
    assert direct.computed == 0
    errors = check_plateau.final_errors(direct.rows)
    for row in table["rows"]:
        assert row["error longer"] == pytest.approx(errors[row["pool"], 0])
    assert calls == [2, 2]
    assert check_plateau.main(args) == 0 and calls[2:] == [0, 0]
    capsys.readouterr()
    # from near chance, a second epoch lowers the error: with no gain allowed, that pool is named
    # as still learning and the status is 1
    gains = [r["pool"] for r in table["rows"] if r["change"] < 0]
    assert gains
    assert check_plateau.main(args[:-6] + ["--points", "0", "--results", str(tmp_path / "res")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"{gains[0]}: 1 -> 2 epochs") and "still learning" in line for line in lines)
