"""The damage matrix of issue 24 through the command line: max and lift trained once; then for
each damage (rows, predictions, a cached model: truncated, bit-flipped, deleted, hand-edited,
swapped between cells) a rerun on a copy of the store and cache prints exactly the true table,
with one warning line naming the damaged file; --strict refuses in one line; the report never
shows a damaged value. And provenance: rows of a reused model state the thread count it was
trained with, not the reader's. Slow: it trains."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

POOLBENCH = str(Path(sys.executable).with_name("poolbench"))
RUN = ["run", "accuracy", "--pool", "max", "--pool", "lift", "--train-size", "512", "--test-size", "128",
       "--epochs", "1", "--batch-size", "64", "--threads", "1", "--seeds", "1", "--executor", "sequential",
       "--no-progress", "--json"]
TIMING = ("train s", "img/s")  # a model trained again takes another time; every other column is exact


def poolbench(*args, results: Path, cache: Path):
    env = {**os.environ, "POOLBENCH_CACHE": str(cache)}
    return subprocess.run([POOLBENCH, *args, "--results", str(results)], capture_output=True, text=True,
                          env=env, timeout=600)


def table(done) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return [{k: v for k, v in row.items() if k not in TIMING} for row in json.loads(done.stdout)["table"]]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A store and a cache holding max and lift, and the table they print."""
    root = tmp_path_factory.mktemp("pristine")
    done = poolbench(*RUN, results=root / "results", cache=root / "cache")
    return root, table(done)


def _cells(results: Path) -> dict[str, Path]:
    """pool -> its result file."""
    out = {}
    for path in (results / "accuracy").glob("*.json"):
        out[json.loads(path.read_text())["rows"][0]["pool"]] = path
    return out


def _models(cache: Path) -> dict[str, Path]:
    out = {}
    for path in (cache / "checkpoints").glob("*.json"):
        out[json.loads(path.read_text())["config"]["pool"]] = path.with_suffix(".pt")
    return out


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2
    data[at:at + 10] = bytes(b ^ 0xFF for b in data[at:at + 10])
    path.write_bytes(bytes(data))


def _hand_edit(path: Path) -> None:
    data = json.loads(path.read_text())
    for row in data["rows"]:
        if row["metric"] == "top1_error":
            row["value"] = 12.5
    path.write_text(json.dumps(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


# damage -> (what is damaged, how); every one is applied to lift's files, "swap" puts max's there
DAMAGE = {
    "rows hand-edit": ("json", _hand_edit),
    "rows truncate": ("json", _truncate),
    "rows flip": ("json", _flip),
    "rows swap": ("json", "swap"),
    "predictions delete": ("npz", Path.unlink),
    "predictions flip": ("npz", _flip),
    "predictions swap": ("npz", "swap"),
    "model flip": ("pt", _flip),
    "model truncate": ("pt", _truncate),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_every_damage_is_named_in_one_line_and_the_rerun_prints_the_true_table(tmp_path, pristine, case):
    root, truth = pristine
    results, cache = tmp_path / "results", tmp_path / "cache"
    kind, damage = DAMAGE[case]
    if kind != "pt":  # a model is read only where its cells are not stored: a fresh store then
        shutil.copytree(root / "results", results)
    shutil.copytree(root / "cache", cache)
    files = _models(cache) if kind == "pt" else {p: f.with_suffix(f".{kind}") for p, f in _cells(results).items()}
    target = files["lift"]
    if damage == "swap":
        shutil.copyfile(files["max"], target)
    else:
        damage(target)

    strict = poolbench(*RUN, "--strict", results=results, cache=cache)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr, strict.stderr
    refused = [ln for ln in strict.stderr.splitlines() if ln.startswith("poolbench: error:")]
    assert len(refused) == 1 and target.name in refused[0] and "--strict" in refused[0]

    done = poolbench(*RUN, results=results, cache=cache)
    warned = [ln for ln in done.stderr.splitlines() if "DamagedFileWarning" in ln]
    assert len(warned) == 1 and target.name in warned[0], done.stderr
    assert table(done) == truth and "12.5," not in done.stdout
    aside = {p.name for p in (target.parents[1] / ".damaged").rglob("*")}  # results or cache
    assert target.name in aside or (damage is Path.unlink and target.with_suffix(".json").name in aside)


def test_the_report_never_shows_a_damaged_value(tmp_path, pristine):
    root, _ = pristine
    results = tmp_path / "results"
    shutil.copytree(root / "results", results)
    _hand_edit(_cells(results)["lift"])
    env = {**os.environ, "POOLBENCH_CACHE": str(root / "cache")}
    done = subprocess.run([POOLBENCH, "report", "--results", str(results), "--out", str(tmp_path / "r"),
                           "--no-illustrations"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert sum("DamagedFileWarning" in ln for ln in done.stderr.splitlines()) == 1
    assert "12.5" not in (tmp_path / "r" / "report.md").read_text()


def test_rows_of_a_reused_model_state_how_it_was_trained(tmp_path, pristine):
    """A model trained with 2 threads and read by a 1-thread run: its rows say 2 (and eval 1)."""
    cache = tmp_path / "cache"
    args = ["run", "accuracy", "--pool", "avg", "--train-size", "256", "--test-size", "64", "--epochs", "1",
            "--batch-size", "64", "--seed", "0", "--executor", "sequential", "--no-progress", "--json"]
    trained = poolbench(*args, "--threads", "2", results=tmp_path / "first", cache=cache)
    assert trained.returncode == 0, trained.stderr
    reused = poolbench(*args, "--threads", "1", results=tmp_path / "second", cache=cache)
    assert reused.returncode == 0, reused.stderr
    for done in (trained, reused):
        rows = json.loads(done.stdout)["rows"]
        assert {r["threads"] for r in rows} == {2} and {r["device"] for r in rows} == {"cpu"}
        assert {r["dtype"] for r in rows} == {"float32"}
    assert {r["eval_threads"] for r in json.loads(reused.stdout)["rows"]} == {1}
