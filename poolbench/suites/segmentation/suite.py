"""Segmentation / up-pooling (LiftPool paper, Sec. 4.4): SegNet mIoU per up-pooling variant, and
reconstruction PSNR of down-then-up pooling without training.

Cells (JSON dicts, hashed by the runner):
- ``kind="train"``: one (variant, seed). Trains the SegNet (``poolbench.models.segnet``) on the
  segmentation data in the one training loop (``poolbench.training.loop.train`` with the task
  ``poolbench.suites.segmentation.task.SEGNET``: pixel-wise cross-entropy + the pools' auxiliary losses, e.g.
  LiftPool's c_u/c_p; divergence and weight checks; DDP under torchrun), cached as a checkpoint under the hash of its
  TrainConfig like every trained model; rows: miou and pixel_accuracy (%), per-class iou (%),
  params, train time, final auxiliary terms.
- ``kind="reconstruction"``: one (method, seed). Down-pools then up-pools the natural images that
  scikit-image ships and reports PSNR (dB) per image and dtype, and its mean over the images.

Variants (``poolbench.models.segnet.resolve_variant``): ``options["variants"]`` (a list, a
comma-separated string, or ``"all"``) names them explicitly, as variant names (max_unpool,
max_unpool_blur, lift, bilinear, bilinear_avg, ...) or pool specs. Without it the pools of the
run's training configs are mapped: ``max`` -> max_unpool, ``max:up=unpool_blur`` ->
max_unpool_blur, ``lift[:opts]`` -> lift with ``bands=LL`` added unless given, another
invertible pool -> its own up-pool (``aps``, ``lps``: the feature back at the kept phase), a non-invertible pool -> ``bilinear_<name>``. With neither
(no configs) all four default variants run (``DEFAULT_VARIANTS``); a run that names no pool gets
``variants="all"`` below the preset (``pool_defaults``), so all four run by default there too.

Options (``SegmentationOptions``: the ``[segmentation]`` preset table, then flags). Recipe:
``RECIPE_KEYS`` (train_size, test_size, epochs, batch_size, optimizer, lr, momentum, nesterov,
weight_decay, schedule, warmup_epochs), not the classification [train] table (a SegNet at the
classification sizes would take far longer); the common flags --epochs/--train-size/
--test-size/--batch-size/--lr set it. ``seeds`` (default: those of the training configs;
``--seed N`` gives ``seeds=(N,)``). ``dataset`` (default: the segmentation twin of the run's
dataset, ``shapes`` -> ``shapes-seg``). ``widths`` (default 16/32/64; other widths name the
model ``segnet-W1-W2-W3`` so that checkpoints never mix). Reconstruction: ``reconstruction``
(bool, default True), ``images`` (default ``SAMPLE_IMAGES``), ``levels`` (1), ``dtypes``
(float32 and float64).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...config import TrainConfig
from ...errors import UsageError
from ...metrics import iou_per_class, miou
from ...models.segnet import DEFAULT_WIDTHS, Variant, resolve_variant, segnet_model_name, segnet_widths
from ...options import check_fields, option
from ...store import Measured, make_row
from ...training.loop import OPTIMIZERS, SCHEDULES
from .. import register_suite
from ..base import AMP_DTYPES, Suite, pool_columns, train_config_of, trained_with, training_rows
from ..intervals import METHOD_NOTE, add_metric_intervals, per_image
from .reconstruction import DTYPES, SAMPLE_IMAGES, load_sample_image, reconstruction_psnr
from .task import get_trained_segnet, load_segmentation_data, segmentation_confusion

DEFAULT_VARIANTS = ("max_unpool", "max_unpool_blur", "lift", "bilinear")
SEG_DATASETS = {"shapes": "shapes-seg", "shapes-seg": "shapes-seg", "shapes_seg": "shapes-seg"}
RECIPE_KEYS = ("train_size", "test_size", "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov",
               "weight_decay", "schedule", "warmup_epochs")


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        # "lift,max:up=unpool_blur,blur_size=5": a piece without ":" holding "=" continues the
        # previous spec's options.
        items: list[str] = []
        for piece in (p.strip() for p in value.split(",")):
            if not piece:
                continue
            if items and "=" in piece and ":" not in piece and ":" in items[-1]:
                items[-1] += "," + piece
            else:
                items.append(piece)
        return items
    return list(value)


def _widths(value) -> tuple[int, ...]:
    """Encoder widths from a list or a "16,32,64" / "16/32/64" / "16-32-64" string (empty: default)."""
    if isinstance(value, str):
        value = [w for w in value.replace("/", ",").replace("-", ",").split(",") if w.strip()]
    try:
        widths = tuple(int(w) for w in value) or DEFAULT_WIDTHS
        segnet_widths(segnet_model_name(widths))  # validates
    except (TypeError, ValueError) as exc:  # UsageError is a ValueError
        raise UsageError(f"segmentation widths must be a list of positive integers, e.g. [16, 32, 64]; "
                         f"got {value!r}") from exc
    return widths


# Measured on a 2-core CPU (16/32/64 SegNet, 24 epochs): short recipes sit on the steep part of the
# learning curve and a seed decides whether a run leaves the ~38 mIoU plateau (background IoU 98,
# the ten object classes still confused, IoU 16-46 each): with warmup_epochs=2, seed 0 gave max_unpool
# 77.4, lift 69.1, bilinear 90.7, max_unpool_blur 93.4; seed 1 gave 91.9, 38.9, 38.2, 38.2
# (AdamW at lr 2e-3, warm-up 1, was no steadier: seed 0 gave 71.9, 39.4, 90.4, 92.6; seed 1
# gave 37.0, 91.7, 36.7, 39.8). Without the warm-up, lift stalled at seed 0 (37.4). Compare
# variants over several seeds (the quick preset runs three); about 40 s per variant and seed on
# an idle machine, lift about 95 s.
@dataclass(frozen=True)
class SegmentationOptions:
    """The ``[segmentation]`` preset table and its flags (see the module docstring)."""

    # the SegNet recipe (--epochs, --batch-size, --lr, --train-size, --test-size set it too)
    train_size: int | None = option(2000, "SegNet training images.", low=1)
    test_size: int | None = option(500, "SegNet test images.", low=1)
    epochs: int = option(24, "SegNet epochs.", low=1)
    batch_size: int = option(16, "SegNet batch size.", low=1)
    optimizer: str = option("sgd", "SegNet optimizer.", choices=OPTIMIZERS)
    lr: float = option(0.05, "SegNet learning rate.", low=0, low_open=True)
    momentum: float = option(0.9, "SegNet SGD momentum.", low=0)
    nesterov: bool = option(True, "SegNet Nesterov momentum.")
    weight_decay: float = option(5e-4, "SegNet weight decay.", low=0)
    schedule: str = option("cosine", "SegNet learning-rate schedule.", choices=SCHEDULES)
    warmup_epochs: int = option(2, "SegNet linear warm-up epochs.", low=0)
    # strings of variants keep the commas of their pool specs ("max:up=unpool_blur,blur_size=5")
    variants: str | tuple[str, ...] | None = option(
        None, "max_unpool,max_unpool_blur,lift,bilinear,adapool (or any invertible pool) or 'all' "
              "(the first four; default: all four, or those of --pool).")
    dataset: str | None = option(None, "Segmentation data (default: the twin of the run's dataset, "
                                 "shapes -> shapes-seg).")
    widths: tuple[int, ...] | str = option(DEFAULT_WIDTHS, "SegNet encoder widths.")
    seeds: tuple[int, ...] | None = option(None, "Training seeds (default: the run's).", cli=False)
    reconstruction: bool = option(True, "The PSNR reconstruction test (down- then up-pooling, no "
                                  "training).")
    images: str | tuple[str, ...] = option(SAMPLE_IMAGES, "Images of the reconstruction test.")
    levels: int = option(1, "Down/up pooling levels of the reconstruction test.", low=1)
    dtypes: tuple[str, ...] = option(("float32", "float64"), "dtypes of the reconstruction test.")

    def __post_init__(self):
        check_fields(self, "segmentation")
        def put(name, value):
            object.__setattr__(self, name, value)

        variants = tuple(_as_list(self.variants)) or None
        for name in variants or ():
            if variants != ("all",):
                resolve_variant(name)  # an unknown variant or pool fails here, before any work
        put("variants", variants)
        if self.dataset:
            put("dataset", SEG_DATASETS.get(self.dataset, self.dataset))
        put("widths", _widths(self.widths))
        put("seeds", tuple(int(s) for s in self.seeds) or None if self.seeds is not None else None)
        put("images", tuple(_as_list(self.images)) or SAMPLE_IMAGES)
        put("dtypes", tuple(self.dtypes) or ("float32", "float64"))
        unknown = [d for d in self.dtypes if d not in DTYPES]
        if unknown:
            raise UsageError(f"unknown segmentation dtype {unknown[0]!r}; choose from {', '.join(DTYPES)}")

    @property
    def recipe(self) -> dict:
        """The TrainConfig fields the options set (the seed comes per cell)."""
        return {k: getattr(self, k) for k in RECIPE_KEYS}



def variants_for(pools: list[str] | None, variants=None) -> list[Variant]:
    """Variants named explicitly (``variants``: names/specs, or "all"), else those of ``pools``,
    else ``DEFAULT_VARIANTS``; duplicates dropped, order kept."""
    names = _as_list(variants)
    if names == ["all"] or (not names and not pools):
        names = list(DEFAULT_VARIANTS)
    elif not names:
        names = list(pools)
    out: dict[tuple, Variant] = {}
    for n in names:
        v = resolve_variant(n)
        out.setdefault((v.pool, v.upsample), v)
    return list(out.values())


# --- the suite ----------------------------------------------------------------------------------

class SegmentationSuite(Suite):
    """SegNet with paired down/up pooling: mIoU per up-pooling variant; reconstruction PSNR."""

    name = "segmentation"
    title = "Segmentation and up-pooling"
    order = 50
    Options = SegmentationOptions

    def checkpoint_pool(self, pool: str) -> str:
        # a SegNet's down-pool is the variant's (``lift`` -> ``lift:bands=LL``)
        return resolve_variant(pool).pool

    def pool_defaults(self, named_pools: tuple[str, ...]) -> dict:
        """All four default variants when the user names no pool (else the pools' own)."""
        return {} if named_pools else {"variants": "all"}

    def cells(self, train_configs: list[TrainConfig], options: SegmentationOptions) -> list[dict]:
        pools = list(dict.fromkeys(cfg.pool for cfg in train_configs))
        variants = variants_for(pools, options.variants)
        seeds = list(options.seeds or ()) or list(dict.fromkeys(cfg.seed for cfg in train_configs)) or [0]
        base_dataset = train_configs[0].dataset if train_configs else "shapes"
        dataset = options.dataset or SEG_DATASETS.get(base_dataset, base_dataset)
        model = segnet_model_name(options.widths)
        cells = []
        for v in variants:
            for seed in seeds:
                cfg = TrainConfig(pool=v.pool, model=model, policy=v.upsample, dataset=dataset, seed=seed,
                                  data_seed=train_configs[0].data_seed if train_configs else 0,
                                  **options.recipe)
                cells.append({"kind": "train", "variant": v.name, "train": cfg.to_dict()})
        if options.reconstruction:
            methods = list(variants)
            if any(v.name == "bilinear" for v in variants):   # the average-pooled twin of bilinear
                methods.append(resolve_variant("bilinear_avg"))
            for v in dict.fromkeys(methods):
                for seed in seeds:
                    cells.append({"kind": "reconstruction", "method": v.name, "pool": v.pool,
                                  "upsample": v.upsample, "images": list(options.images),
                                  "levels": options.levels, "dtypes": list(options.dtypes), "seed": seed})
        return cells

    # --- running ---

    def run_cell(self, cell: dict, ctx) -> list[dict]:
        kind = cell.get("kind")
        if kind == "train":
            return self._run_train(cell, ctx)
        if kind == "reconstruction":
            return self._run_reconstruction(cell, ctx)
        raise UsageError(f"unknown segmentation cell kind {kind!r}; delete the stored cell and run again")

    def _run_train(self, cell: dict, ctx) -> list[dict]:
        cfg = train_config_of(cell)
        bundle = load_segmentation_data(cfg.dataset, cfg.data_seed, cfg.train_size, cfg.test_size, ctx.data_root)
        result = get_trained_segnet(cfg, bundle, ctx.device, ctx.progress, ctx.checkpoint_for(cell),
                                    settings=ctx.train, strict=bool(ctx.extra.get("strict")))
        test = bundle.eval_arrays()
        conf, counts = segmentation_confusion(result.model, test.images, test.masks, bundle.num_classes,
                                              ctx.device, progress=ctx.progress)
        base = self._train_columns(cfg, cell["variant"])
        n = len(test.images)
        pixels = int(conf.sum())
        rows = [
            make_row(base, "miou", miou(conf), "%", n, pixels=pixels, predictions="counts"),
            make_row(base, "pixel_accuracy", 100.0 * np.trace(conf) / max(pixels, 1), "%", n, pixels=pixels,
                     predictions="counts"),
        ]
        for name, iou in zip(bundle.class_names, iou_per_class(conf)):
            rows.append(make_row(base, "iou", None if np.isnan(iou) else 100.0 * iou, "%", n, class_name=name))
        rows += training_rows(base, result)
        provenance = trained_with(result.info, ctx.device)
        for row in rows:  # how the model was trained, not how this process runs
            row.update(provenance)
        return Measured(rows, {"counts": counts})

    @staticmethod
    def _train_columns(cfg: TrainConfig, variant: str) -> dict:
        return {**pool_columns(cfg.pool), "model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed,
                "up_pool": variant, "upsample": cfg.policy, "dtype": AMP_DTYPES[cfg.amp],
                "memory_format": "channels_last"}

    def _run_reconstruction(self, cell: dict, ctx) -> list[dict]:
        method, levels, seed = cell["method"], int(cell["levels"]), int(cell["seed"])
        rows = []
        for dtype in cell["dtypes"]:
            base = {**pool_columns(cell["pool"]), "model": None, "dataset": "skimage", "seed": seed,
                    "up_pool": method, "upsample": cell["upsample"], "dtype": dtype,
                    "memory_format": "contiguous", "levels": levels}
            values = []
            for name in cell["images"]:
                image = load_sample_image(name)
                value, _ = reconstruction_psnr(image, cell["pool"], upsample=cell["upsample"], levels=levels,
                                               dtype=dtype, seed=seed)
                values.append(value)
                rows.append(make_row(base, "psnr", value, "dB", 1, image=name,
                                     image_shape="x".join(map(str, image.shape))))
            rows.append(make_row(base, "psnr", float(np.mean(values)), "dB", len(values), image="mean"))
        return rows

    def error_row(self, cell: dict, ctx, message: str) -> dict:
        if cell.get("kind") == "train":
            base = self._train_columns(train_config_of(cell), cell.get("variant", ""))
        else:
            base = {**pool_columns(cell["pool"]), "model": None, "dataset": "skimage",
                    "seed": cell.get("seed"), "up_pool": cell.get("method")}
        return make_row(base, "error", None, error=message)

    # --- views ---

    def table(self, frame: pd.DataFrame, options: SegmentationOptions | None = None, store=None) -> pd.DataFrame:
        """One row per up-pooling variant: mIoU, pixel accuracy (mean over seeds), mean PSNR per
        dtype, train time."""
        if frame.empty or "up_pool" not in frame.columns:
            return pd.DataFrame()
        f = frame.copy()
        if "error" in f.columns:
            f = f[f["error"].fillna("") == ""].copy()
        f["label"] = f["up_pool"].astype(str)
        clash = f.groupby("label")["pool"].nunique()
        multi = set(clash[clash > 1].index)
        f.loc[f["label"].isin(multi), "label"] = f["label"] + " [" + f["pool"].astype(str) + "]"
        order = list(dict.fromkeys(f["label"]))
        parts = []
        train = f[f["metric"].isin(["miou", "pixel_accuracy", "train_time"])]
        if not train.empty:
            wide = train.pivot_table(index="label", columns="metric", values="value", aggfunc="mean")
            names = {"miou": "mIoU %", "pixel_accuracy": "pixel acc %", "train_time": "train s"}
            wide = wide[[m for m in names if m in wide.columns]].rename(columns=names)
            wide["seeds"] = train[train["metric"] == "miou"].groupby("label")["seed"].nunique().astype("Int64")
            parts.append(self._with_intervals(wide, train, store))
        rec = f[(f["metric"] == "psnr") & (f["image"] == "mean")] if "image" in f.columns else f.iloc[:0]
        if not rec.empty:
            wide = rec.pivot_table(index="label", columns="dtype", values="value", aggfunc="mean")
            wide.columns = [f"PSNR {c} dB" for c in wide.columns]
            parts.append(wide)
        if not parts:
            return pd.DataFrame()
        out = pd.concat(parts, axis=1)
        return out.reindex([o for o in order if o in out.index])

    def _with_intervals(self, wide: pd.DataFrame, train: pd.DataFrame, store) -> pd.DataFrame:
        """mIoU and pixel accuracy with their intervals: per-image pixel counts resampled, each
        variant against ``max_unpool`` (when the run has it)."""
        rows = train[train["metric"] == "miou"]
        values = {}
        for key, counts in per_image(rows, store, self.name, lambda a, k: a[k],
                                     lambda r: (r["label"], int(r["seed"]))).items():
            for part, name in enumerate(("inter", "pred", "target")):
                for c in range(counts.shape[2]):
                    values[(*key, name, c)] = counts[:, part, c].astype(np.float64)
        classes = sorted({k[3] for k in values})

        def boot(m):
            out = {"miou": {}, "pixel_accuracy": {}}
            for label in dict.fromkeys(k[0] for k in values):
                ious, accs = [], []
                for seed in sorted({k[1] for k in values if k[0] == label}):
                    inter = np.stack([m[(label, seed, "inter", c)] for c in classes])
                    target = np.stack([m[(label, seed, "target", c)] for c in classes])
                    union = np.stack([m[(label, seed, "pred", c)] for c in classes]) + target - inter
                    with np.errstate(invalid="ignore"):   # a class absent from a resample has no IoU
                        ious.append(100 * np.nanmean(np.where(union > 0, inter / np.where(union > 0, union, 1),
                                                              np.nan), axis=0))
                    accs.append(100 * inter.sum(0) / np.maximum(target.sum(0), 1e-12))
                out["miou"][label], out["pixel_accuracy"][label] = np.mean(ious, axis=0), np.mean(accs, axis=0)
            return out

        reference = "max_unpool" if "max_unpool" in wide.index else None
        return add_metric_intervals(wide, train, {"miou": "mIoU %", "pixel_accuracy": "pixel acc %"}, boot,
                                    values, reference, ("miou", "pixel_accuracy"), index="label",
                                    lower_is_better=False)

    def notes(self, options: SegmentationOptions) -> list[str]:
        n = len(options.seeds) if options.seeds else None
        over = f"{n} training seed{'s' if n != 1 else ''}" if n else "the training seeds"
        notes = [f"mIoU % and pixel acc %: means over {over} (at short recipes a seed can decide whether "
                 "a run leaves the ~38 mIoU plateau: compare variants over several seeds)", METHOD_NOTE]
        if options.reconstruction:
            notes.append("PSNR: mean over the sample images of down- then up-pooling without training "
                         "(deterministic for a seed)")
        return notes


SUITE = register_suite(SegmentationSuite())
