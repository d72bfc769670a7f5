"""Corruption robustness (ImageNet-C style): clean error, error per (corruption, severity),
and at table time CE per corruption, mCE, relative mCE and unnormalised mCE against a reference.

Corruptions are generated with ``imagecorruptions`` on a test subset (once, cached, reused by
every pool), or read from official CIFAR-10-C/-100-C (.npy) or ImageNet-C (folders) with
``--corruption-data``. With generated corruptions the reference is a model the suite trains
and evaluates on the same images (``--reference max``); AlexNet's table only applies to the
official ImageNet-C images, where it is the default.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import metrics
from ..canonical import digest
from ..config import cache_dir
from ..data.corruptions import generate_corrupted_set, load_cifar_c, load_imagenet_c
from ..errors import UsageError
from ..registry import canonical_spec
from ..store import make_row
from ..evaluate import predict, predict_dataset
from ..process import file_lock, is_main_process
from .base import ALEXNET, TrainedSuite, train_columns, with_reference

HARSHNESS_NOTE = ("generated corruptions use ImageNet-strength parameters at any size: at 32x32 "
                  "they are harsher than CIFAR-10-C")


CORRUPTION_GROUPS = {"common": metrics.BENCHMARK_CORRUPTIONS, "extra": metrics.EXTRA_CORRUPTIONS,
                     "all": metrics.ALL_CORRUPTIONS}


def corruption_names(spec) -> list[str]:
    """``common`` (15) | ``extra`` (4) | ``all`` (19) | names, as a comma-separated string or a
    list (a list may mix groups and names)."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    names: list[str] = []
    for item in (str(i).strip().lower() for i in items):
        if item:
            names.extend(CORRUPTION_GROUPS.get(item, (item,)))
    names = list(dict.fromkeys(names))
    for n in names:
        if n not in metrics.ALL_CORRUPTIONS:
            close = difflib.get_close_matches(n, metrics.ALL_CORRUPTIONS, n=2)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"unknown corruption {n!r}{hint} (use common, extra, all or names from "
                             f"{', '.join(metrics.ALL_CORRUPTIONS)})")
    return names


def severity_list(spec) -> list[int]:
    if isinstance(spec, str):
        spec = [s for s in spec.replace(" ", "").split(",") if s]
    try:
        out = sorted({int(s) for s in spec})
    except (TypeError, ValueError):
        raise UsageError(f"severities must be integers 1..5, got {spec!r}") from None
    if not out or out[0] < 1 or out[-1] > 5:
        raise UsageError(f"severities must lie in 1..5, got {spec!r}")
    return out


def detect_official_layout(root: str) -> str:
    """'cifar-c' (<corruption>.npy files) or 'imagenet-c' (<corruption>/<severity>/ folders)."""
    path = Path(root)
    if not path.is_dir():
        raise UsageError(f"--corruption-data {root} is not a folder; point it at CIFAR-10-C/-100-C "
                         "(.npy files) or ImageNet-C (<corruption>/<severity>/<class>/ folders)")
    if (path / "labels.npy").exists() or any(path.glob("*.npy")):
        return "cifar-c"
    if any(p.is_dir() and (p / "1").is_dir() for p in path.iterdir()):
        return "imagenet-c"
    raise UsageError(f"--corruption-data {root} holds neither CIFAR-C .npy files nor ImageNet-C "
                     "folders (<corruption>/<severity>/<class>/); check the path")


@dataclass(frozen=True)
class RobustnessOptions:
    """The ``[robustness]`` preset table and its flags.

    ``reference``: the pool whose errors normalise CE (trained and evaluated on the same
    images); default ``alexnet`` with official ImageNet-C data (the published constants), else
    ``max``. ``subset``: the first N test images (0 or None: all). ``corruption_data``: official
    CIFAR-10-C/-100-C (.npy) or ImageNet-C folders instead of generated corruptions.
    """

    subset: int | None = None
    corruptions: tuple[str, ...] = ("common",)
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    reference: str | None = None
    corruption_data: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "subset", self.subset or None)
        object.__setattr__(self, "corruptions", tuple(corruption_names(list(self.corruptions))))
        object.__setattr__(self, "severities", tuple(severity_list(self.severities)))
        official = self.source.startswith("imagenet-c")
        reference = self.reference or (ALEXNET if official else "max")
        if reference != ALEXNET:
            reference = canonical_spec(reference)
        elif not official:
            raise UsageError("--reference alexnet applies only to official ImageNet-C data; "
                             "use a pool (e.g. --reference max) for generated or CIFAR-C corruptions")
        object.__setattr__(self, "reference", reference)

    @property
    def source(self) -> str:
        # official data is identified by layout and folder name, never by a full path
        data = self.corruption_data
        return "generated" if not data else f"{detect_official_layout(data)}:{Path(data).resolve().name}"


class RobustnessSuite(TrainedSuite):
    name = "robustness"
    Options = RobustnessOptions

    def extra_pools(self, options) -> tuple[str, ...]:
        return () if options.reference == ALEXNET else (options.reference,)

    def run_settings(self, options) -> dict:
        return {"corruption_data": options.corruption_data}

    def cell_options(self, options) -> dict:
        return {"subset": options.subset, "corruptions": list(options.corruptions),
                "severities": list(options.severities), "corruption_source": options.source,
                "reference": options.reference}

    # --- evaluation -------------------------------------------------------------------------

    def run_cell(self, cell: dict, ctx) -> list[dict]:
        cfg, bundle, result = self.trained(cell, ctx)
        if not is_main_process():
            return []
        source = cell["corruption_source"]
        base = {**train_columns(cfg), "corruption_source": source, "subset": cell["subset"],
                "reference": cell["reference"]}
        model = result.model
        if source.startswith("imagenet-c"):
            return self._imagenet_c(cell, ctx, bundle, model, base)
        arrays = bundle.eval_arrays(cell["subset"])
        labels = arrays.labels
        n = len(labels)
        clean = metrics.top1_error(predict(model, arrays.images, ctx.device), labels)
        rows = [make_row(base, "clean_error", 100 * clean, "%", n)]
        corrupted = self._corrupted_set(cell, ctx, bundle, arrays, cfg.seed)
        for c in cell["corruptions"]:
            for s in cell["severities"]:
                images = corrupted.get(c, s)
                if source.startswith("cifar-c"):
                    images = images[arrays.indices]
                err = metrics.top1_error(predict(model, images, ctx.device), labels)
                rows.append(make_row(base, "error", 100 * err, "%", n, corruption=c, severity=s))
        return rows

    def _corrupted_set(self, cell, ctx, bundle, arrays, seed):
        if cell["corruption_source"].startswith("cifar-c"):
            clean_labels = bundle.eval_arrays(None).labels if len(bundle.test) <= 10000 else None
            return load_cifar_c(ctx.corruption_data, cell["corruptions"], cell["severities"],
                                num_test=len(bundle.test), clean_labels=clean_labels)
        key = digest(bundle.config, 10)
        root = cache_dir()
        with file_lock(root / "corruptions" / f"{bundle.name}-{key}"):
            return generate_corrupted_set(
                arrays.images, arrays.labels, cell["corruptions"], cell["severities"], seed=seed,
                cache_dir=root, dataset=f"{bundle.name}-{key}", subset=f"test-{cell['subset'] or 'all'}",
                workers=max(1, ctx.workers), progress=ctx.progress)

    def _imagenet_c(self, cell, ctx, bundle, model, base):
        logits, labels = predict_dataset(model, bundle.test, ctx.device, progress=ctx.progress, desc="clean")
        rows = [make_row(base, "clean_error", 100 * metrics.top1_error(logits, labels), "%", len(labels))]
        classes = getattr(bundle, "class_names", None)
        transform = getattr(bundle.test, "transform", None)
        for c in cell["corruptions"]:
            for s in cell["severities"]:
                data = load_imagenet_c(ctx.corruption_data, c, s, transform=transform,
                                       classes=list(classes) if classes else None)
                logits, labels = predict_dataset(model, data, ctx.device, progress=ctx.progress, desc=f"{c} s{s}")
                rows.append(make_row(base, "error", 100 * metrics.top1_error(logits, labels), "%",
                                     len(labels), corruption=c, severity=s))
        return rows

    def notes(self, options) -> list[str]:
        return [] if options.corruption_data else [HARSHNESS_NOTE]

    # --- derived metrics (a view over stored rows; never stored) ------------------------------

    def derived(self, frame: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
        """CE per corruption, mCE, relative mCE and unnormalised mCE for every pool in ``frame``.

        Each row is normalised by the reference its run recorded (column ``reference``: a pool
        measured on the same images, or ``alexnet`` for official ImageNet-C only); a
        ``reference`` given here re-normalises every row by that pool instead.
        """
        rows = []
        if frame.empty:
            return pd.DataFrame()
        frame = with_reference(frame, reference)
        group_cols = ["model", "dataset", "seed", "corruption_source", "subset", "reference"]
        for col in group_cols:
            if col not in frame.columns:
                frame[col] = None
        frame["subset"] = frame["subset"].fillna(-1)
        for keys, group in frame.groupby(group_cols, dropna=False, sort=False):
            source = group["corruption_source"].iloc[0] or "generated"
            reference = keys[-1]
            use_alexnet = reference == ALEXNET
            if use_alexnet and not str(source).startswith("imagenet-c"):
                raise UsageError("--reference alexnet applies only to official ImageNet-C data; "
                                 "use a pool (e.g. --reference max) for generated or CIFAR-C corruptions")
            tables = {pool: self._errors(g) for pool, g in group.groupby("pool", sort=False)}
            if use_alexnet:
                ref_err = {c: [v * 100 for v in metrics.ALEXNET_ERR[c]] for c in metrics.ALL_CORRUPTIONS}
                ref_clean = 100 * metrics.ALEXNET_CLEAN_ERR
            elif reference in tables:
                ref_clean, ref_err = tables[reference]
            else:
                continue
            for pool, (clean, errs) in tables.items():
                corr = [c for c in errs if c in ref_err and len(errs[c]) == len(ref_err[c])]
                common = [c for c in metrics.BENCHMARK_CORRUPTIONS if c in corr] or corr
                if not common:
                    continue
                info = dict(zip(group_cols, keys), pool=pool)
                for c in corr:
                    rows.append({**info, "metric": "CE", "corruption": c,
                                 "value": _undefined_as_nan(lambda: 100 * metrics.corruption_error(errs[c], ref_err[c]))})
                rows.append({**info, "metric": "mCE", "value": _undefined_as_nan(lambda: metrics.mce(errs, ref_err, common))})
                rows.append({**info, "metric": "relative_mCE", "value": _undefined_as_nan(
                    lambda: metrics.relative_mce(errs, clean, ref_err, ref_clean, common))})
                rows.append({**info, "metric": "unnormalized_mCE", "value": metrics.unnormalized_mce(errs, common)})
                rows.append({**info, "metric": "clean_error", "value": clean})
        return pd.DataFrame(rows)

    @staticmethod
    def _errors(group: pd.DataFrame):
        clean_rows = group[group["metric"] == "clean_error"]["value"]
        clean = float(clean_rows.mean()) if len(clean_rows) else float("nan")
        errs = group[group["metric"] == "error"]
        table = {}
        for c, g in errs.groupby("corruption", sort=False):
            table[c] = [float(v) for v in g.sort_values("severity")["value"]]
        return clean, table

    def table(self, frame: pd.DataFrame, options=None) -> pd.DataFrame:
        derived = self.derived(frame)
        if derived.empty:
            return pd.DataFrame()
        names = {"clean_error": "clean err %", "mCE": "mCE", "relative_mCE": "rel. mCE",
                 "unnormalized_mCE": "unnorm. mCE %"}
        summary = derived[derived["metric"] != "CE"].pivot_table(
            index="pool", columns="metric", values="value", aggfunc="mean", sort=False, dropna=False)
        summary = summary[[c for c in names if c in summary]].rename(columns=names)
        ce = derived[derived["metric"] == "CE"].pivot_table(
            index="pool", columns="corruption", values="value", aggfunc="mean", sort=False, dropna=False)
        order = [c for c in metrics.ALL_CORRUPTIONS if c in ce.columns]
        ce = ce[order]
        ce.columns = [f"CE {short_name(c)}" for c in order]
        return summary.join(ce)


def _undefined_as_nan(compute) -> float:
    """A ratio whose reference denominator is zero is undefined: NaN in the table, not a crash."""
    try:
        return float(compute())
    except UsageError:
        return float("nan")


def short_name(corruption: str) -> str:
    return {"gaussian_noise": "gauss", "shot_noise": "shot", "impulse_noise": "impulse",
            "defocus_blur": "defocus", "glass_blur": "glass", "motion_blur": "motion",
            "zoom_blur": "zoom", "brightness": "bright", "elastic_transform": "elastic",
            "jpeg_compression": "jpeg", "speckle_noise": "speckle", "gaussian_blur": "gblur",
            "contrast": "contrast"}.get(corruption, corruption)


SUITE = RobustnessSuite()
