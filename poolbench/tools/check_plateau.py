"""Was each pool trained long enough? ``poolbench check plateau [--pool P ...] [--preset quick]
[--dataset D] [--seeds 0,1,2] [--factor 2] [--points 1] [--results PATH] [--json PATH]``

Trains every pool with the preset's recipe and with the same recipe ``--factor`` times longer
(the epochs, so the warm-up and the cosine decay stretch with them) at the same seeds, and
compares the final clean error per seed. A pool has reached its plateau at the recipe when the
longer training lowers its mean clean error by no more than ``--points`` (default 1 point, the
criterion of docs/suites.md, "Was every pool trained to a plateau?"); the interval of the
per-seed differences (Student t over the seeds) says how sure that is. This is the test the
last-epoch fall that ``poolbench run`` reports cannot make: under a cosine schedule the error
falls most in the last epochs, as the learning rate goes to zero, whether or not a longer
schedule would end lower. Both trainings are ordinary accuracy cells: the recipe's are the ones
every suite reuses, and a rerun reads everything back. Exit status 1 when a pool is still
learning.
"""
from __future__ import annotations

import json
import math

import click
import pandas as pd
from tabulate import tabulate

from .. import api
from ..config import load_preset, train_config
from ..errors import PoolbenchError, UsageError
from ..metrics.uncertainty import seed_interval
from ..suites.convergence import PLATEAU_POINTS
from ._command import CONTEXT, check_output_path, run_command

DEFAULT_POOLS = ("max", "lift")


def final_errors(rows) -> dict[tuple[str, int], float]:
    """{(pool, seed): clean top-1 error (%)} of an accuracy run's rows."""
    return {(r["pool"], r["seed"]): float(r["value"]) for r in rows
            if r.get("metric") == "top1_error" and r.get("value") is not None}


def compare(short: dict[tuple[str, int], float], long: dict[tuple[str, int], float],
            points: float = PLATEAU_POINTS) -> pd.DataFrame:
    """One row per pool trained at both lengths: the mean error of each, the mean per-seed change
    (longer - recipe; negative: the longer training ended lower) with its seed interval, and
    whether the pool had reached its plateau (the change is no lower than ``-points``)."""
    rows = []
    for pool in dict.fromkeys(p for p, _ in short):
        seeds = sorted(s for p, s in short if p == pool and (p, s) in long)
        if not seeds:
            continue
        change = seed_interval([long[pool, s] - short[pool, s] for s in seeds])
        rows.append({"pool": pool, "seeds": len(seeds),
                     "error": sum(short[pool, s] for s in seeds) / len(seeds),
                     "error longer": sum(long[pool, s] for s in seeds) / len(seeds),
                     "change": change.value, "change lo": change.low, "change hi": change.high,
                     "plateau": bool(change.value >= -points)})
    return pd.DataFrame(rows)


def _interval(value: float, low: float, high: float) -> str:
    if math.isnan(low):
        return f"{value:+.2f}"
    return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def verdict_lines(table: pd.DataFrame, epochs: int, longer: int, points: float) -> list[str]:
    lines = []
    for r in table.to_dict(orient="records"):
        seeds = f"{r['seeds']} seed{'s' if r['seeds'] > 1 else ''}"
        head = (f"{r['pool']}: {epochs} -> {longer} epochs changes clean error by "
                f"{_interval(r['change'], r['change lo'], r['change hi'])} points over {seeds}")
        if r["plateau"]:
            lines.append(f"{head}: plateau (no gain above {points:g} point)")
        else:
            lines.append(f"{head}: still learning; its {epochs}-epoch numbers measure the recipe as "
                         f"much as the pool (train it with --epochs {longer})")
    return lines


@click.command("plateau", context_settings=CONTEXT, help=__doc__.split("\n\n")[1],
               short_help="Would a longer training change a pool's clean error?")
@click.option("--pool", "pools", multiple=True, metavar="SPEC",
              help="pool spec (repeatable; default: max and lift)")
@click.option("--preset", default=None, help="preset of the recipe (default quick)")
@click.option("--dataset", default=None, help="dataset (default: the preset's)")
@click.option("--seeds", default=None, metavar="LIST|COUNT",
              help="training seeds: 0,1,2 or a count (default: the preset's)")
@click.option("--factor", type=float, default=2.0, show_default=True,
              help="the longer training's epochs over the recipe's (above 1)")
@click.option("--points", type=float, default=PLATEAU_POINTS, show_default=True,
              help="clean-error points the longer training may gain at a plateau")
@click.option("--results", default="results", metavar="PATH", help="result store (default ./results)")
@click.option("--json", "json_path", metavar="PATH", default=None, help="also write the table here")
def command(pools, preset, dataset, seeds, factor, points, results, json_path):
    if not factor > 1:
        raise UsageError(f"--factor must be above 1; got {factor:g} (e.g. --factor 2)")
    if not points >= 0:
        raise UsageError(f"--points must be >= 0; got {points:g} (e.g. --points 1)")
    check_output_path("--json", json_path)
    pools = list(pools or DEFAULT_POOLS)
    recipe = train_config(load_preset(preset), pools[0], 0, {"dataset": dataset})
    if recipe.schedule == "step":
        raise UsageError(f"the recipe's step schedule (milestones {list(recipe.milestones)}) does not "
                         "stretch with --epochs; check a preset with a cosine or constant schedule")
    longer = math.ceil(factor * recipe.epochs)
    run_args = dict(preset=preset, dataset=dataset, seeds=seeds, results=results,
                    reference=pools[0], progress=False)
    runs = {epochs: api.run("accuracy", pools=pools, epochs=epochs, **run_args)
            for epochs in (recipe.epochs, longer)}
    for result in runs.values():
        if result.errors:
            raise PoolbenchError(f"a training failed: {result.errors[0]['error']}")
    table = compare(final_errors(runs[recipe.epochs].rows), final_errors(runs[longer].rows), points)
    shown = table.assign(change=[_interval(v, lo, hi) for v, lo, hi in
                                 zip(table["change"], table["change lo"], table["change hi"])])
    shown = shown.drop(columns=["change lo", "change hi"]).rename(
        columns={"error": f"error at {recipe.epochs}", "error longer": f"error at {longer}"})
    click.echo(tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".2f"))
    click.echo("")
    for line in verdict_lines(table, recipe.epochs, longer, points):
        click.echo(line)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"dataset": recipe.dataset, "epochs": recipe.epochs, "longer": longer,
                       "points": points, "rows": table.to_dict(orient="records")}, f, indent=1)
    if not table["plateau"].all():
        raise click.exceptions.Exit(1)


def main(argv=None) -> int:
    """``poolbench check plateau`` on ``argv``: the exit code (1 when a pool is still learning,
    2 for bad input, as one line)."""
    return run_command(command, argv, "poolbench check plateau", "check_plateau")
