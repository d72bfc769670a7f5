"""Does the corruption engine change a trained model's numbers? ``poolbench check corrupt
[--pool max] [--preset quick] [--seed 0] [--data-seed 0] [--subset N] [--corruption-params auto]
[--results PATH] [--json PATH]``

The torch engine's images are tested against the reference's pixel by pixel
(``test_corrupt_equivalence.py``); this check asks what a benchmark reader cares about: one
trained model (the suites' cached checkpoint, trained once) is evaluated by the robustness
suite on the corrupted test set of each engine, for every corruption the torch engine
implements and every severity, and the top-1 error on the torch set is compared with the 95%
paired-bootstrap interval of the error on the reference set (``metrics.uncertainty``: the same
resampled images for both; the interval of the difference is printed too). Exit status 1 when a
torch error lies outside its interval. The two evaluations are ordinary cells of the result
store, so a rerun reads them back.
"""
from __future__ import annotations

import json

import click
import numpy as np
import pandas as pd
from tabulate import tabulate

from .. import api
from ..distortions.corruption_torch import IMPLEMENTED
from ..errors import PoolbenchError
from ..metrics.uncertainty import CONFIDENCE, N_RESAMPLES, paired_bootstrap
from ..store import ResultStore
from ..suites.intervals import BOOTSTRAP_SEED, wrong_top1
from ._command import CONTEXT, check_output_path, check_positive, run_command

ENGINES = ("reference", "torch")


def evaluate(engine: str, pool: str, **run_args) -> dict[str, np.ndarray]:
    """The stored per-image predictions of ``pool`` on the set made by ``engine``."""
    result = api.run("robustness", pools=[pool], corruption_engine=engine, **run_args)
    if result.errors:
        raise PoolbenchError(f"the {engine} evaluation failed: {result.errors[0]['error']}")
    hashes = {r["config_hash"] for r in result.rows if r["pool"] == result.pools[0]}
    if len(hashes) != 1:
        raise PoolbenchError(f"{len(hashes)} cells for {pool} where one was expected; pass one seed")
    return ResultStore(result.results).arrays("robustness", hashes.pop())


def compare(reference: dict[str, np.ndarray], torch_set: dict[str, np.ndarray],
            n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """One row per (corruption, severity) present in both: the error (%) on each set, the
    bootstrap interval of the reference error and of the difference torch - reference."""
    if not np.array_equal(reference["labels"], torch_set["labels"]):
        raise ValueError("the two evaluations are not on the same test images")
    rows = []
    for key in sorted(k for k in reference if "/" in k and k in torch_set):
        corruption, severity = key.split("/")
        values = {"reference": wrong_top1(reference, key), "torch": wrong_top1(torch_set, key)}
        est = paired_bootstrap(lambda m: {"reference": 100 * m["reference"], "torch": 100 * m["torch"],
                                          "diff": 100 * (m["torch"] - m["reference"])},
                               values, n_resamples=n_resamples, seed=BOOTSTRAP_SEED)
        ref, tor, diff = est["reference"], est["torch"], est["diff"]
        rows.append({"corruption": corruption, "severity": int(severity),
                     "reference error": ref.value, "reference lo": ref.low, "reference hi": ref.high,
                     "torch error": tor.value, "Δ": diff.value, "Δ lo": diff.low, "Δ hi": diff.high,
                     "inside": bool(ref.low <= tor.value <= ref.high)})
    return pd.DataFrame(rows)


@click.command("corrupt", context_settings=CONTEXT, help=__doc__.split("\n\n")[1],
               short_help="Does the torch corruption engine change a trained model's error?")
@click.option("--pool", default="max", help="pool spec of the trained model (default max)")
@click.option("--preset", default=None, help="preset of the trained model (default quick)")
@click.option("--seed", type=int, default=0, help="training seed of the model (default 0)")
@click.option("--data-seed", type=int, default=None,
              help="seed of the corrupted sets (default 0); another one asks whether a miss recurs")
@click.option("--subset", type=int, default=None, help="test images (default: the preset's)")
@click.option("--corruption-params", default="auto",
              help="parameter set of the generated corruptions: auto, cifar, tinyimagenet or imagenet "
                   "(default auto)")
@click.option("--results", default="results", metavar="PATH", help="result store (default ./results)")
@click.option("--json", "json_path", metavar="PATH", default=None, help="also write the table here")
def command(pool, preset, seed, data_seed, subset, corruption_params, results, json_path):
    check_positive("--subset", subset)
    check_output_path("--json", json_path)
    run_args = dict(preset=preset, seed=seed, data_seed=data_seed, subset=subset, results=results,
                    corruptions=",".join(IMPLEMENTED), corruption_params=corruption_params,
                    reference=pool, progress=False)
    sets = {engine: evaluate(engine, pool, **run_args) for engine in ENGINES}
    table = compare(sets["reference"], sets["torch"])
    shown = table.copy()
    shown["reference error"] = [f"{v:.1f} [{lo:.1f}, {hi:.1f}]" for v, lo, hi in
                                zip(table["reference error"], table["reference lo"], table["reference hi"])]
    shown["Δ"] = [f"{v:+.1f} [{lo:+.1f}, {hi:+.1f}]" for v, lo, hi in zip(table["Δ"], table["Δ lo"], table["Δ hi"])]
    shown = shown.drop(columns=["reference lo", "reference hi", "Δ lo", "Δ hi"])
    click.echo(tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".1f"))
    n = len(sets["reference"]["labels"])
    inside = int(table["inside"].sum())
    click.echo(f"\n{pool}, seed {seed}, data seed {data_seed or 0}, {n} test images: the torch error lies "
               f"inside the {int(CONFIDENCE * 100)}% paired-bootstrap interval ({N_RESAMPLES} resamples) "
               f"of the reference error at {inside} of {len(table)} (corruption, severity); mean |Δ| "
               f"{table['Δ'].abs().mean():.2f} points, largest {table['Δ'].abs().max():.2f}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(table.to_dict(orient="records"), f, indent=1)
    if inside < len(table):
        raise click.exceptions.Exit(1)


def main(argv=None) -> int:
    """``poolbench check corrupt`` on ``argv``: the exit code (1 when a torch error lies outside
    its interval, 2 for bad input, as one line)."""
    return run_command(command, argv, "poolbench check corrupt", "check_corrupt")
