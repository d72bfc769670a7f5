"""Corruption robustness (ImageNet-C style): clean error, error per (corruption, severity),
and at table time CE per corruption, mCE, relative mCE and unnormalised mCE against a reference.

Corruptions are generated with ``imagecorruptions`` on a test subset (once, cached, reused by
every pool), or read from official CIFAR-10-C/-100-C (.npy) or ImageNet-C (folders) with
``--corruption-data``. With generated corruptions the reference is a model the suite trains
and evaluates on the same images (``--reference max``); AlexNet's table only applies to the
official ImageNet-C images, where it is the default.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..canonical import digest
from ..config import cache_dir
from ..distortions.cache import dataset_dir
from ..distortions.corruptions import (
    ENGINES,
    PARAM_SETS,
    engine_for,
    generate_corrupted_set,
    load_cifar_c,
    load_imagenet_c,
    resolve_params,
)
from ..errors import UsageError
from ..options import check_fields, option
from ..process import file_lock
from ..registry import canonical_spec
from ..store import Measured, make_row
from ..training.evaluate import predict, predict_dataset, top_classes
from . import register_suite
from .base import (
    ALEXNET,
    TrainedSuite,
    bundle_for,
    expand_names,
    generator_options,
    headline_table,
    train_columns,
    train_config_of,
    with_item_columns,
    with_reference,
)
from .corruption_metrics import CorruptionMetrics
from .intervals import METHOD_NOTE, add_metric_intervals, one_reference, per_image, wrong_top1

UNNORMALIZED_OVER = {"benchmark": "the 15 benchmark corruptions",
                     "all": "all corruptions evaluated (the official script's mean over 19)"}
HARSHNESS_NOTE = ("generated corruptions use the parameter set of the benchmark's authors for the "
                  "image size (column corruption_params: cifar = CIFAR-10-C's at 32x32, tinyimagenet "
                  "= Tiny-ImageNet-C's at 64x64, imagenet = ImageNet-C's at 224) unless "
                  "--corruption-params names one; column corruption_engine says which engine made "
                  "each corruption")


CORRUPTION_GROUPS = {"common": metrics.BENCHMARK_CORRUPTIONS, "extra": metrics.EXTRA_CORRUPTIONS,
                     "all": metrics.ALL_CORRUPTIONS}


def corruption_names(spec) -> list[str]:
    """``common`` (15) | ``extra`` (4) | ``all`` (19) | names, as a comma-separated string or a
    list (a list may mix groups and names)."""
    return expand_names(spec, CORRUPTION_GROUPS, metrics.ALL_CORRUPTIONS, "corruption")


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

    subset: int | None = option(None, "Test images to corrupt: the first N (0: all; default from the "
                                "preset).", low=0)
    corruptions: tuple[str, ...] = option(("common",), "common (15) | extra (4) | all (19) | NAME,NAME...")
    severities: tuple[int, ...] = option((1, 2, 3, 4, 5), "Comma-separated severities.", low=1, high=5)
    reference: str | None = option(None, "Pool that normalises CE (default max; alexnet only with "
                                   "official ImageNet-C).")
    corruption_data: str | None = option(None, "Official CIFAR-10-C/-100-C (.npy) or ImageNet-C "
                                         "(folders) instead of generated.")
    corruption_params: str = option("auto", "Parameter set of generated corruptions (auto: CIFAR-10-C's "
                                    "near 32 px, Tiny-ImageNet-C's near 64, ImageNet-C's near 224).",
                                    choices=("auto", *PARAM_SETS))
    corruption_engine: str = option("auto", "Generator (auto: torch for the corruptions tested equal "
                                    "to the reference).", choices=ENGINES)
    unnormalized_over: str = option("benchmark", "Unnormalised mCE over the 15 benchmark corruptions "
                                    "or all evaluated (the official script's mean over 19).",
                                    choices=tuple(UNNORMALIZED_OVER))
    # the same bytes either way, so it is a run setting, not part of the cell
    on_the_fly: bool = option(False, "Generate each corrupted set inside the evaluation (torch engine "
                              "on --device), cache nothing: for sets too large for the disk.")

    def __post_init__(self):
        check_fields(self, "robustness")
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
    """Corruption robustness: clean error, CE per corruption, mCE, relative and unnormalised mCE."""

    name = "robustness"
    title = "Corruption robustness"
    order = 30
    verdict_metric = "mCE"
    Options = RobustnessOptions

    def extra_pools(self, options) -> tuple[str, ...]:
        return () if options.reference == ALEXNET else (options.reference,)

    def run_settings(self, options) -> dict:
        return {"corruption_data": options.corruption_data, "corruption_on_the_fly": options.on_the_fly}

    def cell_options(self, options) -> dict:
        return {"subset": options.subset, "corruptions": list(options.corruptions),
                "severities": list(options.severities), "corruption_source": options.source,
                "reference": options.reference,
                **generator_options(options, "corruption_engines", options.corruptions, engine_for,
                                    options.corruption_engine)}

    # --- evaluation -------------------------------------------------------------------------

    def evaluate(self, cell: dict, ctx, cfg, bundle, result) -> Measured | list[dict]:
        source = cell["corruption_source"]
        base = {**train_columns(cfg), "corruption_source": source, "subset": cell["subset"],
                "reference": cell["reference"]}
        model = result.model
        if source.startswith("imagenet-c"):
            return self._imagenet_c(cell, ctx, bundle, model, base)
        arrays = bundle.eval_arrays(cell["subset"])
        labels = arrays.labels
        n = len(labels)
        if "corruption_params" in cell:  # generated: the set is a column of every row
            base["corruption_params"] = resolve_params(cell["corruption_params"], arrays.images.shape[1:3])
        preds = {"labels": np.asarray(labels), "clean": top_classes(predict(model, arrays.images, ctx.device))}
        rows = [make_row(base, "clean_error", 100 * wrong_top1(preds, "clean").mean(), "%", n,
                         predictions="clean")]
        # one data seed for every training seed: the same corrupted images, generated once
        corrupted = self._corrupted_set(cell, ctx, bundle, arrays, cfg.data_seed)
        for c in cell["corruptions"]:
            engine = {"corruption_engine": corrupted.engines[c]} if c in corrupted.engines else {}
            for s in cell["severities"]:
                images = corrupted.get(c, s)
                if source.startswith("cifar-c"):
                    images = images[arrays.indices]
                key = f"{c}/{s}"
                preds[key] = top_classes(predict(model, images, ctx.device))
                rows.append(make_row(base, "error", 100 * wrong_top1(preds, key).mean(), "%", n, corruption=c,
                                     severity=s, predictions=key, **engine))
        return Measured(rows, preds)

    def prepare(self, cells, ctx) -> None:
        """The generated corrupted sets of ``cells``, into the cache: a worker whose first model
        is trained then reads the set, where it would generate it (the other worker waiting)."""
        made = set()
        for cell in cells:
            if cell["corruption_source"] != "generated" or ctx.corruption_on_the_fly:
                continue
            cfg = train_config_of(cell)
            bundle = bundle_for(cfg, ctx.data_root)
            key = (id(bundle), digest({k: v for k, v in cell.items() if k != "train"}))
            if key not in made:
                made.add(key)
                self._corrupted_set(cell, ctx, bundle, bundle.eval_arrays(cell["subset"]), cfg.data_seed)

    def _corrupted_set(self, cell, ctx, bundle, arrays, seed):
        if cell["corruption_source"].startswith("cifar-c"):
            clean_labels = bundle.eval_arrays(None).labels if len(bundle.test) <= 10000 else None
            return load_cifar_c(ctx.corruption_data, cell["corruptions"], cell["severities"],
                                num_test=len(bundle.test), clean_labels=clean_labels)
        key = digest(bundle.config, 10)
        root = cache_dir()
        generate = partial(
            generate_corrupted_set, arrays.images, arrays.labels, cell["corruptions"], cell["severities"],
            seed=seed, dataset=f"{bundle.name}-{key}", subset=f"test-{cell['subset'] or 'all'}",
            workers=max(1, ctx.workers), progress=ctx.progress, params=cell.get("corruption_params", "auto"),
            engine=cell.get("corruption_engines") or "reference", strict=bool(ctx.extra.get("strict")))
        if ctx.corruption_on_the_fly:
            return generate(on_the_fly=True, device=ctx.device)
        with file_lock(dataset_dir(root, "corruptions", f"{bundle.name}-{key}")):
            return generate(cache_dir=root)

    def _imagenet_c(self, cell, ctx, bundle, model, base):
        logits, labels = predict_dataset(model, bundle.test, ctx.device, progress=ctx.progress, desc="clean",
                                         what=bundle.split_name)
        preds = {"labels": labels.numpy(), "clean": top_classes(logits)}
        rows = [make_row(base, "clean_error", 100 * metrics.top1_error(logits, labels), "%", len(labels),
                         predictions="clean")]
        classes = getattr(bundle, "class_names", None)
        transform = getattr(bundle.test, "transform", None)
        for c in cell["corruptions"]:
            for s in cell["severities"]:
                data = load_imagenet_c(ctx.corruption_data, c, s, transform=transform,
                                       classes=list(classes) if classes else None)
                logits, labels = predict_dataset(model, data, ctx.device, progress=ctx.progress, desc=f"{c} s{s}")
                # paired intervals need the clean images' order; a set in another order has none
                same = np.array_equal(labels.numpy(), preds["labels"])
                if same:
                    preds[f"{c}/{s}"] = top_classes(logits)
                rows.append(make_row(base, "error", 100 * metrics.top1_error(logits, labels), "%",
                                     len(labels), corruption=c, severity=s,
                                     predictions=f"{c}/{s}" if same else None))
        return Measured(rows, preds)

    def notes(self, options) -> list[str]:
        return [METHOD_NOTE, unnormalized_note(options.corruptions, options.unnormalized_over)] + (
            [] if options.corruption_data else [HARSHNESS_NOTE])

    def run_cell(self, cell: dict, ctx):
        # before training: a subset larger than the test set would be clamped while the cell
        # (and every row) said the larger number
        if cell.get("subset") and not str(cell.get("corruption_source")).startswith("imagenet-c"):
            available = len(bundle_for(train_config_of(cell), ctx.data_root).test)
            if cell["subset"] > available:
                raise UsageError(f"--subset {cell['subset']} is larger than the test set ({available} "
                                 f"images); pass --subset {available} or less (0: all)")
        return super().run_cell(cell, ctx)

    # --- derived metrics (a view over stored rows; never stored) ------------------------------

    GROUP = ("model", "dataset", "seed", "corruption_source", "corruption_params", "subset", "reference")

    def derived(self, frame: pd.DataFrame, reference: str | None = None,
                unnormalized_over: str = "benchmark") -> pd.DataFrame:
        """CE per corruption, mCE, relative mCE and unnormalised mCE for every pool in ``frame``.

        Each row is normalised by the reference its run recorded (column ``reference``: a pool
        measured on the same images, or ``alexnet`` for official ImageNet-C only); a
        ``reference`` given here re-normalises every row by that pool instead. Severities are
        paired by their label: a pool and a reference evaluated at different severities are
        compared on the ones they share (named in ``derived.attrs["notes"]``).
        """
        rows, notes = [], []
        if frame.empty:
            return pd.DataFrame()
        frame = self._grouped(frame, reference)
        group_cols = list(self.GROUP)
        for keys, group in frame.groupby(group_cols, dropna=False, sort=False):
            ref_name = keys[-1]
            tables = {pool: self._errors(g) for pool, g in group.groupby("pool", sort=False)}
            ref = self._reference_errors(ref_name, group, tables)
            if ref is None:
                continue
            ref_clean, ref_err = ref
            for pool, (clean, errs) in tables.items():
                shared = {c: sorted(set(errs[c]) & set(ref_err[c])) for c in errs if c in ref_err}
                shared = {c: sev for c, sev in shared.items() if sev}
                reduced = sorted(c for c, sev in shared.items() if set(sev) != set(errs[c]) | set(ref_err[c]))
                if reduced:
                    notes.append(f"{pool}: CE of {', '.join(reduced)} uses only the severities it shares with "
                                 f"the reference {ref_name}")
                corr = list(shared)
                common = [c for c in metrics.BENCHMARK_CORRUPTIONS if c in corr] or corr
                if not common:
                    continue
                over = common if unnormalized_over == "benchmark" else corr
                mine = {c: [errs[c][v] for v in shared[c]] for c in corr}
                theirs = {c: [ref_err[c][v] for v in shared[c]] for c in corr}
                info = dict(zip(group_cols, keys), pool=pool)
                for c in corr:
                    rows.append({**info, "metric": "CE", "corruption": c,
                                 "value": _undefined_as_nan(lambda: 100 * metrics.corruption_error(mine[c], theirs[c]))})
                rows.append({**info, "metric": "mCE", "value": _undefined_as_nan(lambda: metrics.mce(mine, theirs, common))})
                relative = _undefined_as_nan(lambda: metrics.relative_mce(mine, clean, theirs, ref_clean, common))
                if np.isnan(relative):  # say why the cell is blank
                    flat = [c for c in common if sum(v - ref_clean for v in theirs[c]) == 0]
                    notes.append(f"{pool}: rel. mCE blank: the reference {ref_name} loses no accuracy "
                                 f"under {', '.join(flat) or 'a corruption'} (relative CE divides by that loss)")
                rows.append({**info, "metric": "relative_mCE", "value": relative})
                rows.append({**info, "metric": "unnormalized_mCE", "value": metrics.unnormalized_mce(mine, over)})
                rows.append({**info, "metric": "clean_error", "value": clean})
        out = pd.DataFrame(rows)
        out.attrs["notes"] = list(dict.fromkeys(notes))
        return out

    def _grouped(self, frame: pd.DataFrame, reference: str | None) -> pd.DataFrame:
        frame = with_reference(frame, reference)
        for col in self.GROUP:
            if col not in frame.columns:
                frame[col] = None
        frame["subset"] = frame["subset"].fillna(-1)
        return frame

    @staticmethod
    def _reference_errors(ref_name: str, group: pd.DataFrame, tables: dict):
        source = group["corruption_source"].iloc[0] or "generated"
        if ref_name == ALEXNET:
            if not str(source).startswith("imagenet-c"):
                raise UsageError("--reference alexnet applies only to official ImageNet-C data; "
                                 "use a pool (e.g. --reference max) for generated or CIFAR-C corruptions")
            return (100 * metrics.ALEXNET_CLEAN_ERR,
                    {c: {i + 1: 100 * v for i, v in enumerate(metrics.ALEXNET_ERR[c])} for c in metrics.ALL_CORRUPTIONS})
        return tables.get(ref_name)

    @staticmethod
    def _errors(group: pd.DataFrame):
        """clean error and corruption -> {severity: error} (severities by label, never position)."""
        clean_rows = group[group["metric"] == "clean_error"]["value"]
        clean = float(clean_rows.mean()) if len(clean_rows) else float("nan")
        errs = group[group["metric"] == "error"]
        table = {}
        for c, g in errs.groupby("corruption", sort=False):
            table[c] = {int(sev): float(v) for sev, v in g.groupby("severity")["value"].mean().items()}
        return clean, table

    COLUMNS = {"clean_error": "clean err %", "mCE": "mCE", "relative_mCE": "rel. mCE",
               "unnormalized_mCE": "unnorm. mCE %"}

    def table(self, frame: pd.DataFrame, options=None, store=None) -> pd.DataFrame:
        over = options.unnormalized_over if options is not None else "benchmark"
        derived = self.derived(frame, unnormalized_over=over)
        if derived.empty:
            return pd.DataFrame()
        summary = headline_table(derived, self.COLUMNS, dropna=False)
        summary = self._with_intervals(summary, derived, frame, store, over)
        return with_item_columns(summary, derived, "CE", "corruption", order=metrics.ALL_CORRUPTIONS,
                                 short=short_name, dropna=False)

    def _with_intervals(self, summary, derived, frame, store, over):
        reference = one_reference(derived)
        if reference is None:
            return summary  # one comparison per table: the report splits the rest
        frame = self._grouped(frame, None)
        values = per_image(frame[frame["metric"].isin(["clean_error", "error"])], store, self.name,
                           lambda a, k: 100 * wrong_top1(a, k),
                           lambda r: (r["pool"], int(r["seed"]), r.get("corruption") if r["metric"] == "error"
                                      else "clean", int(r["severity"]) if r["metric"] == "error" else 0))
        boot = CorruptionMetrics(values, reference, over) if values else None
        return add_metric_intervals(summary, derived, self.COLUMNS, boot, values,
                                    None if reference == ALEXNET else reference, ("clean_error", "mCE"))


def unnormalized_note(corruptions, over: str) -> str:
    """What the unnormalised mCE averages, for the corruptions this run evaluates (the mean is
    over the benchmark corruptions evaluated, or every one evaluated when none is)."""
    evaluated = list(corruptions)
    bench = [c for c in evaluated if c in metrics.BENCHMARK_CORRUPTIONS]
    if over == "all":
        if len(evaluated) == len(metrics.ALL_CORRUPTIONS):
            return f"unnorm. mCE: mean error over {UNNORMALIZED_OVER['all']}"
        return (f"unnorm. mCE: mean error over all {len(evaluated)} corruptions evaluated "
                f"({', '.join(evaluated)}); the official script's mean is over all 19")
    if len(bench) == len(metrics.BENCHMARK_CORRUPTIONS):
        return f"unnorm. mCE: mean error over {UNNORMALIZED_OVER['benchmark']}"
    names, kind = (bench, "benchmark ") if bench else (evaluated, "")
    return (f"unnorm. mCE: mean error over the {len(names)} {kind}corruption{'s' if len(names) != 1 else ''} "
            f"evaluated ({', '.join(names)}), not the {len(metrics.BENCHMARK_CORRUPTIONS)} of the benchmark")


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


SUITE = register_suite(RobustnessSuite())
