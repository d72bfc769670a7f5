"""Does the corruption engine change a trained model's numbers? ``poolbench check corrupt
[--pool max] [--preset quick] [--seed 0] [--data-seed 0] [--subset N] [--corruption-params auto]
[--results PATH] [--json PATH]``

The torch engine's images are tested against the reference's pixel by pixel
(tests/test_corrupt_equivalence.py); this check asks what a benchmark reader cares about: one
trained model (the suites' cached checkpoint, trained once) is evaluated by the robustness
suite on the corrupted test set of each engine, for every corruption the torch engine
implements and every severity, and the top-1 error on the torch set is compared with the 95%
paired-bootstrap interval of the error on the reference set (``metrics.uncertainty``: the same
resampled images for both; the interval of the difference is printed too). Exit status 1 when a
torch error lies outside its interval. The two evaluations are ordinary cells of the result
store, so a rerun reads them back.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pandas as pd
from tabulate import tabulate

from .. import api
from ..distortions.corruption_torch import IMPLEMENTED
from ..errors import PoolbenchError, one_line
from ..metrics.uncertainty import CONFIDENCE, N_RESAMPLES, paired_bootstrap
from ..store import ResultStore
from ..suites.intervals import BOOTSTRAP_SEED, wrong_top1

ENGINES = ("reference", "torch")


def evaluate(engine: str, pool: str, **run_args) -> dict[str, np.ndarray]:
    """The stored per-image predictions of ``pool`` on the set made by ``engine``."""
    result = api.run("robustness", pools=[pool], corruption_engine=engine, **run_args)
    if result.errors:
        raise SystemExit(f"check_corrupt: the {engine} evaluation failed: {result.errors[0]['error']}")
    hashes = {r["config_hash"] for r in result.rows if r["pool"] == result.pools[0]}
    if len(hashes) != 1:
        raise SystemExit(f"check_corrupt: pass one seed (got {len(hashes)} cells for {pool})")
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="poolbench check corrupt", description=__doc__.split("\n\n")[1])
    ap.add_argument("--pool", default="max")
    ap.add_argument("--preset", default=None, help="preset of the trained model (default quick)")
    ap.add_argument("--seed", type=int, default=0, help="training seed of the model")
    ap.add_argument("--data-seed", type=int, default=None,
                    help="seed of the corrupted sets (default 0); another one asks whether a miss recurs")
    ap.add_argument("--subset", type=int, default=None, help="test images (default: the preset's)")
    ap.add_argument("--corruption-params", default="auto")
    ap.add_argument("--results", default="results")
    ap.add_argument("--json", default=None, help="also write the table here")
    args = ap.parse_args(argv)
    run_args = dict(preset=args.preset, seed=args.seed, data_seed=args.data_seed, subset=args.subset,
                    results=args.results,
                    corruptions=",".join(IMPLEMENTED), corruption_params=args.corruption_params,
                    reference=args.pool, progress=False)
    try:
        sets = {engine: evaluate(engine, args.pool, **run_args) for engine in ENGINES}
    except PoolbenchError as exc:  # bad input: one line, as the CLI prints it
        print(f"check_corrupt: {one_line(exc)}", file=sys.stderr)
        return 2
    table = compare(sets["reference"], sets["torch"])
    shown = table.copy()
    shown["reference error"] = [f"{v:.1f} [{lo:.1f}, {hi:.1f}]" for v, lo, hi in
                                zip(table["reference error"], table["reference lo"], table["reference hi"])]
    shown["Δ"] = [f"{v:+.1f} [{lo:+.1f}, {hi:+.1f}]" for v, lo, hi in zip(table["Δ"], table["Δ lo"], table["Δ hi"])]
    shown = shown.drop(columns=["reference lo", "reference hi", "Δ lo", "Δ hi"])
    print(tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".1f"))
    n = len(sets["reference"]["labels"])
    inside = int(table["inside"].sum())
    print(f"\n{args.pool}, seed {args.seed}, data seed {args.data_seed or 0}, {n} test images: the torch error lies inside the "
          f"{int(CONFIDENCE * 100)}% paired-bootstrap interval ({N_RESAMPLES} resamples) of the "
          f"reference error at {inside} of {len(table)} (corruption, severity); mean |Δ| "
          f"{table['Δ'].abs().mean():.2f} points, largest {table['Δ'].abs().max():.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table.to_dict(orient="records"), f, indent=1)
    return 0 if inside == len(table) else 1


if __name__ == "__main__":
    sys.exit(main())
