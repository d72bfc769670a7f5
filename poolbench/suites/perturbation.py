"""Perturbation stability (ImageNet-P style): flip probability and top-5 distance per
perturbation, and at table time FR/mFR and T5D/mT5D against a reference pool.

Sequences are generated with the CIFAR-P schedules at 32x32 (the ImageNet-P ones at 224),
cached and reused by every pool, or read from official CIFAR-P (.npy) with
``--perturbation-data``. AlexNet's FP table applies to official ImageNet-P only; on generated
sequences FP and T5D are normalised by the reference model run on the same sequences.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..canonical import digest
from ..config import cache_dir
from ..data.perturbations import generate_perturbed_set, load_cifar_p
from ..errors import UsageError
from ..registry import canonical_spec
from ..store import make_row
from ..evaluate import predict
from ..process import file_lock, is_main_process
from .base import TrainedSuite, train_columns, with_reference


def perturbation_names(spec, image_size: int | None = None) -> list[str]:
    """``test`` (CIFAR-P test set at 32x32, ImageNet-P's otherwise) | ``validation`` | ``all`` | names."""
    small = image_size is None or image_size < 128
    groups = {
        "test": metrics.CIFAR_P_TEST_PERTURBATIONS if small else metrics.P_TEST_PERTURBATIONS,
        "validation": metrics.P_VALIDATION_PERTURBATIONS,
        "all": tuple(dict.fromkeys(metrics.ALL_PERTURBATIONS)),
    }
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    names: list[str] = []
    for item in (str(i).strip().lower() for i in items):
        if item:
            names.extend(groups.get(item, (item,)))
    names = list(dict.fromkeys(names))
    for n in names:
        if n not in metrics.ALL_PERTURBATIONS:
            raise UsageError(f"unknown perturbation {n!r}; use test, validation, all or names from "
                             f"{', '.join(dict.fromkeys(metrics.ALL_PERTURBATIONS))}")
    return names


@dataclass(frozen=True)
class PerturbationOptions:
    """The ``[perturbation]`` preset table and its flags.

    ``reference``: the pool whose flip probabilities and top-5 distances normalise FR and T5D,
    run on the same sequences (default ``max``). ``subset``: the first N test images turned
    into sequences (0 or None: all). ``perturbation_data``: official CIFAR-10-P/-100-P (.npy).
    """

    subset: int | None = None
    perturbations: tuple[str, ...] = ("test",)
    reference: str = "max"
    perturbation_data: str | None = None

    def __post_init__(self):
        data = self.perturbation_data
        if data and not Path(data).is_dir():
            raise UsageError(f"--perturbation-data {data} is not a folder; point it at CIFAR-10-P/-100-P "
                             "(<perturbation>.npy files)")
        object.__setattr__(self, "subset", self.subset or None)
        object.__setattr__(self, "perturbations", tuple(perturbation_names(list(self.perturbations))))
        object.__setattr__(self, "reference", canonical_spec(self.reference))

    @property
    def source(self) -> str:
        data = self.perturbation_data
        return "generated" if not data else f"cifar-p:{Path(data).resolve().name}"


class PerturbationSuite(TrainedSuite):
    name = "perturbation"
    Options = PerturbationOptions

    def extra_pools(self, options) -> tuple[str, ...]:
        return (options.reference,)

    def run_settings(self, options) -> dict:
        return {"perturbation_data": options.perturbation_data}

    def cell_options(self, options) -> dict:
        return {"subset": options.subset, "perturbations": list(options.perturbations),
                "perturbation_source": options.source, "reference": options.reference}

    def run_cell(self, cell: dict, ctx) -> list[dict]:
        cfg, bundle, result = self.trained(cell, ctx)
        if not is_main_process():
            return []
        arrays = bundle.eval_arrays(cell["subset"])
        sequences = self._sequences(cell, ctx, bundle, arrays, cfg.seed)
        base = {**train_columns(cfg), "perturbation_source": cell["perturbation_source"],
                "subset": cell["subset"], "schedule": sequences.schedule, "reference": cell["reference"]}
        rows = []
        for p in cell["perturbations"]:
            seq = sequences.get(p)
            if cell["perturbation_source"].startswith("cifar-p"):
                seq = seq[arrays.indices]
            n, frames = seq.shape[:2]
            logits = predict(result.model, seq.reshape(n * frames, *seq.shape[2:]), ctx.device)
            logits = logits.reshape(n, frames, -1).numpy()
            noise = metrics.is_noise_perturbation(p)
            extra = {"perturbation": p, "frames": frames, "noise": noise}
            rows.append(make_row(base, "flip_probability", metrics.flip_probability(logits.argmax(-1), noise),
                                 "", n, **extra))
            rows.append(make_row(base, "top5_distance", metrics.mean_top5_distance(logits, noise), "", n, **extra))
        return rows

    def _sequences(self, cell, ctx, bundle, arrays, seed):
        if cell["perturbation_source"].startswith("cifar-p"):
            return load_cifar_p(ctx.perturbation_data, cell["perturbations"])
        key = digest(bundle.config, 10)
        root = cache_dir()
        with file_lock(root / "perturbations" / f"{bundle.name}-{key}"):
            return generate_perturbed_set(
                arrays.images, arrays.labels, cell["perturbations"], seed=seed, cache_dir=root,
                dataset=f"{bundle.name}-{key}", subset=f"test-{cell['subset'] or 'all'}",
                workers=max(1, ctx.workers), progress=ctx.progress)

    def derived(self, frame: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
        """FR and T5D ratios per perturbation, mFR and mT5D, normalised by the reference each
        row's run recorded (``reference`` given here: by that pool instead)."""
        if frame.empty:
            return pd.DataFrame()
        frame = with_reference(frame, reference)
        group_cols = ["model", "dataset", "seed", "perturbation_source", "subset", "reference"]
        frame["subset"] = frame["subset"].fillna(-1)
        rows = []
        for keys, group in frame.groupby(group_cols, dropna=False, sort=False):
            per_pool = {}
            for pool, g in group.groupby("pool", sort=False):
                fp = g[g["metric"] == "flip_probability"].set_index("perturbation")["value"].to_dict()
                t5 = g[g["metric"] == "top5_distance"].set_index("perturbation")["value"].to_dict()
                per_pool[pool] = (fp, t5)
            reference = keys[-1]
            if reference not in per_pool:
                continue
            ref_fp, ref_t5 = per_pool[reference]
            for pool, (fp, t5) in per_pool.items():
                names = [p for p in fp if p in ref_fp and ref_fp[p] > 0 and ref_t5.get(p, 0) > 0]
                if not names:
                    continue
                info = dict(zip(group_cols, keys), pool=pool)
                for p in names:
                    rows.append({**info, "metric": "FR", "perturbation": p, "value": 100 * fp[p] / ref_fp[p]})
                rows.append({**info, "metric": "mFR", "value": metrics.mfr(fp, ref_fp, names)})
                rows.append({**info, "metric": "mT5D", "value": metrics.mt5d(t5, ref_t5, names)})
                rows.append({**info, "metric": "mean_FP", "value": 100 * float(np.mean([fp[p] for p in names]))})
        return pd.DataFrame(rows)

    def table(self, frame: pd.DataFrame, options=None) -> pd.DataFrame:
        derived = self.derived(frame)
        if derived.empty:
            return pd.DataFrame()
        summary = derived[derived["metric"].isin(["mFR", "mT5D", "mean_FP"])].pivot_table(
            index="pool", columns="metric", values="value", aggfunc="mean", sort=False)
        summary = summary[[c for c in ("mFR", "mT5D", "mean_FP") if c in summary]]
        summary = summary.rename(columns={"mean_FP": "mean FP %"})
        fr = derived[derived["metric"] == "FR"].pivot_table(
            index="pool", columns="perturbation", values="value", aggfunc="mean", sort=False)
        fr.columns = [f"FR {c}" for c in fr.columns]
        return summary.join(fr)


SUITE = PerturbationSuite()
