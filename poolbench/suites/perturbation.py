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
from ..distortions.cache import dataset_dir
from ..distortions.perturbations import ENGINES, SCHEDULES, engine_for, generate_perturbed_set, load_cifar_p
from ..errors import UsageError
from ..metrics.rates import ratio
from ..options import check_fields, option
from ..process import file_lock
from ..registry import canonical_spec
from ..store import Measured, make_row
from ..training.evaluate import predict, top_classes
from . import register_suite
from .base import (
    TrainedSuite,
    expand_names,
    generator_options,
    headline_table,
    train_columns,
    with_item_columns,
    with_reference,
)
from .intervals import METHOD_NOTE, add_metric_intervals, one_reference, per_image


def perturbation_names(spec, image_size: int | None = None) -> list[str]:
    """``test`` (CIFAR-P test set at 32x32, ImageNet-P's otherwise) | ``validation`` | ``all`` | names."""
    small = image_size is None or image_size < 128
    groups = {
        "test": metrics.CIFAR_P_TEST_PERTURBATIONS if small else metrics.P_TEST_PERTURBATIONS,
        "validation": metrics.P_VALIDATION_PERTURBATIONS,
        "all": tuple(dict.fromkeys(metrics.ALL_PERTURBATIONS)),
    }
    return expand_names(spec, groups, metrics.ALL_PERTURBATIONS, "perturbation")


@dataclass(frozen=True)
class PerturbationOptions:
    """The ``[perturbation]`` preset table and its flags.

    ``reference``: the pool whose flip probabilities and top-5 distances normalise FR and T5D,
    run on the same sequences (default ``max``). ``subset``: the first N test images turned
    into sequences (0 or None: all). ``perturbation_data``: official CIFAR-10-P/-100-P (.npy).
    ``perturbation_engine``: the generator of generated sequences (auto: torch for the
    perturbations tested equal to the reference, the numpy generator for the rest).
    """

    subset: int | None = option(None, "Test images turned into sequences: the first N (0: all).", low=0)
    perturbations: tuple[str, ...] = option(("test",), "test | validation | all | NAME,NAME...")
    reference: str = option("max", "Pool that normalises FP and T5D.")
    perturbation_data: str | None = option(None, "Official CIFAR-10-P/-100-P (.npy files) instead of "
                                           "generated sequences.")
    corruption_params: str = option("auto", "Schedule of generated sequences (auto: CIFAR-P's near 32 px, "
                                    "Tiny-ImageNet-P's near 64, ImageNet-P's near 224).",
                                    choices=("auto", *SCHEDULES))
    difficulty: int = option(1, "ImageNet-P's temporal step: frames compared d apart (noise: vs frame 0).",
                             low=1, high=3)
    perturbation_engine: str = option("auto", "Generator (auto: torch for the perturbations tested equal "
                                      "to the reference).", choices=ENGINES)

    def __post_init__(self):
        check_fields(self, "perturbation")
        data = self.perturbation_data
        if data and not Path(data).is_dir():
            raise UsageError(f"--perturbation-data {data} is not a folder; point it at CIFAR-10-P/-100-P "
                             "(<perturbation>.npy files)")
        object.__setattr__(self, "subset", self.subset or None)
        object.__setattr__(self, "perturbations", tuple(perturbation_names(list(self.perturbations))))
        noisy = [q for q in self.perturbations if metrics.is_noise_perturbation(q)]
        if self.difficulty > 1 and noisy:
            raise UsageError(f"--difficulty {self.difficulty} applies to the temporal perturbations; the "
                             f"noise ones ({', '.join(noisy)}) are harder only as ImageNet-P's separate "
                             f"<noise>_{self.difficulty} sequences: drop them or use --difficulty 1")
        object.__setattr__(self, "reference", canonical_spec(self.reference))

    @property
    def source(self) -> str:
        data = self.perturbation_data
        return "generated" if not data else f"cifar-p:{Path(data).resolve().name}"


class PerturbationSuite(TrainedSuite):
    """Perturbation stability: flip probability, FR/mFR and T5D/mT5D against a reference pool."""

    name = "perturbation"
    title = "Perturbation stability"
    order = 40
    Options = PerturbationOptions
    GROUP = ("model", "dataset", "seed", "perturbation_source", "schedule", "subset", "difficulty", "reference")
    COLUMNS = {"mFR": "mFR", "mT5D": "mT5D", "mean_FP": "mean FP %"}

    def extra_pools(self, options) -> tuple[str, ...]:
        return (options.reference,)

    def run_settings(self, options) -> dict:
        return {"perturbation_data": options.perturbation_data}

    def cell_options(self, options) -> dict:
        return {"subset": options.subset, "perturbations": list(options.perturbations),
                "perturbation_source": options.source, "reference": options.reference,
                "difficulty": options.difficulty,
                **generator_options(options, "perturbation_engines", options.perturbations, engine_for,
                                    options.perturbation_engine)}

    def evaluate(self, cell: dict, ctx, cfg, bundle, result) -> Measured | list[dict]:
        arrays = bundle.eval_arrays(cell["subset"])
        sequences = self._sequences(cell, ctx, bundle, arrays, cfg.data_seed)  # the same for every seed
        step = int(cell.get("difficulty", 1))
        base = {**train_columns(cfg), "perturbation_source": cell["perturbation_source"],
                "subset": cell["subset"], "schedule": sequences.schedule, "reference": cell["reference"],
                "difficulty": step}
        rows, preds = [], {}
        for p in cell["perturbations"]:
            seq = sequences.get(p)
            if cell["perturbation_source"].startswith("cifar-p"):
                seq = seq[arrays.indices]
            n, frames = seq.shape[:2]
            logits = predict(result.model, seq.reshape(n * frames, *seq.shape[2:]), ctx.device)
            top5 = top_classes(logits).reshape(n, frames, -1)
            preds[p] = top5
            noise = metrics.is_noise_perturbation(p)
            extra = {"perturbation": p, "frames": frames, "noise": noise, "predictions": p}
            if p in sequences.engines:  # generated: which engine made the sequences
                extra["perturbation_engine"] = sequences.engines[p]
            fp, t5d = self.per_sequence(top5, noise, step)
            rows.append(make_row(base, "flip_probability", fp.mean(), "", n, **extra))
            rows.append(make_row(base, "top5_distance", t5d.mean(), "", n, **extra))
        return Measured(rows, preds)

    @staticmethod
    def per_sequence(top5: np.ndarray, noise: bool, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Each sequence's flip probability and mean top-5 distance (FP and T5D are their means)."""
        return (metrics.flips_per_sequence(top5[..., 0], noise, step),
                metrics.top5_distances_per_sequence(top5, noise, step))

    def _sequences(self, cell, ctx, bundle, arrays, seed):
        if cell["perturbation_source"].startswith("cifar-p"):
            return load_cifar_p(ctx.perturbation_data, cell["perturbations"])
        key = digest(bundle.config, 10)
        root = cache_dir()
        with file_lock(dataset_dir(root, "perturbations", f"{bundle.name}-{key}")):
            return generate_perturbed_set(
                arrays.images, arrays.labels, cell["perturbations"], seed=seed, cache_dir=root,
                dataset=f"{bundle.name}-{key}", subset=f"test-{cell['subset'] or 'all'}",
                workers=max(1, ctx.workers), progress=ctx.progress,
                schedule=cell.get("corruption_params", "auto"),
                engine=cell.get("perturbation_engines") or "reference",
                strict=bool(ctx.extra.get("strict")))

    def derived(self, frame: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
        """FR and T5D ratios per perturbation, mFR and mT5D, normalised by the reference each
        row's run recorded (``reference`` given here: by that pool instead)."""
        if frame.empty:
            return pd.DataFrame()
        frame = with_reference(frame, reference)
        group_cols = list(self.GROUP)
        for col in ("schedule", "difficulty"):
            if col not in frame.columns:
                frame[col] = None if col == "schedule" else 1
        frame["difficulty"] = frame["difficulty"].fillna(1)
        frame["subset"] = frame["subset"].fillna(-1)
        rows, undefined = [], set()
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
            zero = sorted(p for p in ref_fp if not (ref_fp[p] > 0 and ref_t5.get(p, 0) > 0))
            undefined.update(zero)
            for pool, (fp, t5) in per_pool.items():
                names = [p for p in fp if p in ref_fp and p not in zero]
                if not names:
                    continue
                info = dict(zip(group_cols, keys), pool=pool)
                for p in names:
                    rows.append({**info, "metric": "FR", "perturbation": p, "value": 100 * fp[p] / ref_fp[p]})
                rows.append({**info, "metric": "mFR", "value": metrics.mfr(fp, ref_fp, names)})
                rows.append({**info, "metric": "mT5D", "value": metrics.mt5d(t5, ref_t5, names)})
                rows.append({**info, "metric": "mean_FP", "value": 100 * float(np.mean([fp[p] for p in names]))})
        out = pd.DataFrame(rows)
        out.attrs["notes"] = ([f"mFR, mT5D and mean FP leave out {', '.join(sorted(undefined))}: the reference "
                               "never flipped (FP or T5D 0), so its rate is undefined"] if undefined else [])
        return out

    def table(self, frame: pd.DataFrame, options=None, store=None) -> pd.DataFrame:
        derived = self.derived(frame)
        if derived.empty:
            return pd.DataFrame()
        summary = self._with_intervals(headline_table(derived, self.COLUMNS), derived, frame, store)
        return with_item_columns(summary, derived, "FR", "perturbation")

    def _with_intervals(self, summary, derived, frame, store):
        reference = one_reference(derived, "difficulty")
        if reference is None:
            return summary
        step = int(derived["difficulty"].iloc[0])
        used = sorted(set(derived.loc[derived["metric"] == "FR", "perturbation"]))
        rows = frame[(frame["metric"] == "flip_probability") & frame["perturbation"].isin(used)]

        def per_sequence(arrays, key):
            fp, t5d = self.per_sequence(arrays[key], metrics.is_noise_perturbation(key), step)
            return np.stack([fp, t5d])

        stacked = per_image(rows, store, self.name, per_sequence,
                            lambda r: (r["pool"], int(r["seed"]), r["perturbation"]))
        values = {(*k, kind): v[i] for k, v in stacked.items() for i, kind in enumerate(("fp", "t5d"))}

        def boot(m):
            out = {k: {} for k in self.COLUMNS}
            ref_seeds = sorted({k[1] for k in values if k[0] == reference})
            for pool in {k[0] for k in values}:
                per_seed = {k: [] for k in out}
                for seed in sorted({k[1] for k in values if k[0] == pool}):
                    rs = [seed] if seed in ref_seeds else ref_seeds
                    ref = {(q, kind): np.mean([m[(reference, r, q, kind)] for r in rs], axis=0)
                           for q in used for kind in ("fp", "t5d")}
                    for metric, kind in (("mFR", "fp"), ("mT5D", "t5d")):
                        per_seed[metric].append(100 * np.mean([ratio(m[(pool, seed, q, kind)], ref[(q, kind)])
                                                               for q in used], axis=0))
                    per_seed["mean_FP"].append(100 * np.mean([m[(pool, seed, q, "fp")] for q in used], axis=0))
                for metric, vals in per_seed.items():
                    out[metric][pool] = np.mean(vals, axis=0)
            return out

        return add_metric_intervals(summary, derived, self.COLUMNS, boot, values, reference, ("mFR", "mT5D"))

    def notes(self, options) -> list[str]:
        return [METHOD_NOTE]


SUITE = register_suite(PerturbationSuite())
