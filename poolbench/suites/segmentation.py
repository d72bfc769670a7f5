"""Segmentation / up-pooling (LiftPool paper, Sec. 4.4): SegNet mIoU per up-pooling variant, and
reconstruction PSNR of down-then-up pooling without training.

Cells (JSON dicts, hashed by the runner):
- ``kind="train"``: one (variant, seed). Trains the SegNet (``poolbench.models.segnet``) on the
  segmentation data with a short seeded SGD recipe (pixel-wise cross-entropy + the pools'
  auxiliary losses, e.g. LiftPool's c_u/c_p), cached as a checkpoint under the hash of its
  TrainConfig like every trained model; rows: miou and pixel_accuracy (%), per-class iou (%),
  params, train time, final auxiliary terms.
- ``kind="reconstruction"``: one (method, seed). Down-pools then up-pools the natural images that
  scikit-image ships and reports PSNR (dB) per image and dtype, and its mean over the images.

Variants (``poolbench.models.segnet.resolve_variant``): ``options["variants"]`` (a list, a
comma-separated string, or ``"all"``) names them explicitly, as variant names (max_unpool,
max_unpool_blur, lift, bilinear, bilinear_avg, ...) or pool specs. Without it the pools of the
run's training configs are mapped: ``max`` -> max_unpool, ``max:up=unpool_blur`` ->
max_unpool_blur, ``lift[:opts]`` -> lift with ``bands=LL`` added unless given, another
invertible pool -> its own up-pool, a non-invertible pool -> ``bilinear_<name>``. With neither
(no configs) all four default variants run (``DEFAULT_VARIANTS``). Note that the CLI fills in
``--pool max`` when none is given: a CLI command that wants "all four by default" passes
``variants="all"`` when the user names no pool.

Recipe: the [segmentation] options ``SEG_DEFAULTS`` (train_size, test_size, epochs, batch_size, optimizer,
lr, momentum, nesterov, weight_decay, schedule, warmup_epochs), not the classification [train]
table (a SegNet at the classification sizes would take far longer); only the seed comes from the
training configs. ``dataset`` (default: the segmentation twin of the run's dataset, ``shapes``
-> ``shapes-seg``). ``widths`` (default 16/32/64; other widths name the model
``segnet-W1-W2-W3`` so that checkpoints never mix). Reconstruction options: ``reconstruction`` (bool, default True),
``images`` (default ``SAMPLE_IMAGES``), ``levels`` (1), ``dtypes`` (float32 and float64).
"""
from __future__ import annotations

import time
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..auxiliary import auxiliary_loss
from ..config import TrainConfig
from ..errors import UsageError
from ..metrics import confusion_matrix, iou_per_class, miou
from ..models.segnet import (DEFAULT_WIDTHS, SegNet, Variant, resolve_variant, segnet_model_name,
                              segnet_widths)
from ..store import make_row
from .base import pool_columns

DEFAULT_VARIANTS = ("max_unpool", "max_unpool_blur", "lift", "bilinear")
SEG_DATASETS = {"shapes": "shapes-seg", "shapes-seg": "shapes-seg", "shapes_seg": "shapes-seg"}
# Measured on a 2-core CPU (16/32/64 SegNet, 24 epochs): short recipes sit on the steep part of the
# learning curve and a seed decides whether a run leaves the ~38 mIoU plateau (background IoU 98,
# the ten object classes still confused, IoU 16-46 each): with warmup_epochs=2, seed 0 gave max_unpool
# 77.4, lift 69.1, bilinear 90.7, max_unpool_blur 93.4; seed 1 gave 91.9, 38.9, 38.2, 38.2
# (AdamW at lr 2e-3, warm-up 1, was no steadier: seed 0 gave 71.9, 39.4, 90.4, 92.6; seed 1
# gave 37.0, 91.7, 36.7, 39.8). Without the warm-up, lift stalled at seed 0 (37.4). Compare
# variants over several seeds (the quick preset runs three); about 40 s per variant and seed on
# an idle machine, lift about 95 s.
SEG_DEFAULTS = {
    "train_size": 2000, "test_size": 500, "epochs": 24, "batch_size": 16, "optimizer": "sgd", "lr": 0.05,
    "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "schedule": "cosine",
    "warmup_epochs": 2,
}
IGNORE_INDEX = 255
EXTRA_OPTIONS = frozenset({"variants", "dataset", "widths", "reconstruction", "images", "levels", "dtypes",
                           "seeds"})


# --- data ---------------------------------------------------------------------------------------

_BUNDLES: dict = {}


def load_segmentation_data(dataset: str, seed: int, train_size: int | None, test_size: int | None,
                           data_root: str | None = None):
    """The segmentation bundle (``poolbench.data.load_segmentation_dataset``), once per process.

    ``bundle.train`` yields (float CHW image in [0, 1], int64 HxW mask) with the data package's
    training augmentation (the same random crop and flip on image and mask);
    ``bundle.eval_arrays()`` gives the test images (uint8 HxWx3) and masks.
    """
    from ..data import load_segmentation_dataset

    key = (dataset, seed, train_size, test_size, data_root)
    if key not in _BUNDLES:
        _BUNDLES.clear()  # one data set per process is plenty
        _BUNDLES[key] = load_segmentation_dataset(dataset, root=data_root, seed=seed,
                                                  train_size=train_size, test_size=test_size)
    return _BUNDLES[key]


def _to_float(images) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1]."""
    t = torch.as_tensor(images).permute(0, 3, 1, 2)
    return t.float().div_(255) if t.dtype == torch.uint8 else t.float()


# --- training -----------------------------------------------------------------------------------

def build_segnet(cfg: TrainConfig, bundle) -> SegNet:
    return SegNet(bundle.num_classes, cfg.pool, upsample=cfg.policy or "paired", widths=segnet_widths(cfg.model),
                  mean=bundle.mean, std=bundle.std)


def train_segnet(cfg: TrainConfig, bundle, device: str = "cpu", progress: bool = True):
    """Train a SegNet from scratch with ``cfg``'s recipe; deterministic for a seed."""
    from ..process import memory_format_for, seed_everything
    from ..train import TrainingDiverged, TrainResult, build_optimizer, lr_at

    seed_everything(cfg.seed)
    model = build_segnet(cfg, bundle).to(device)
    fmt = memory_format_for(device)
    model = model.to(memory_format=fmt)
    optimizer = build_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=cfg.batch_size, shuffle=True,
                                         generator=generator, num_workers=0, drop_last=True)
    steps = len(loader)
    if steps == 0:
        raise UsageError(f"training set of {len(bundle.train)} images is smaller than one batch of "
                         f"{cfg.batch_size}; lower batch_size or raise train_size")
    model.train()
    seen, start, task_loss, aux_terms = 0, time.perf_counter(), None, {}
    bar = tqdm(total=cfg.epochs * steps, disable=not progress, desc=f"train segnet {cfg.pool} ({cfg.policy})",
               unit="it", leave=False, mininterval=1.0)
    for epoch in range(cfg.epochs):
        for step, (x, y) in enumerate(loader):
            lr = lr_at(cfg, epoch + step / steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = x.to(device).contiguous(memory_format=fmt)
            y = y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, label_smoothing=cfg.label_smoothing)
            aux, terms = auxiliary_loss(model)
            total = loss + aux
            if not torch.isfinite(total):
                bar.close()
                raise TrainingDiverged(f"training segnet with {cfg.pool} ({cfg.policy}) diverged at epoch "
                                       f"{epoch + 1} step {step + 1} (loss {float(total)}); lower lr")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            seen += x.shape[0]
            task_loss, aux_terms = float(loss.detach()), terms
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{task_loss:.3f}")
    bar.close()
    elapsed = time.perf_counter() - start
    model.eval()
    info = {"train_time_s": elapsed, "images_per_s": seen / elapsed if elapsed > 0 else float("nan"),
            "final_task_loss": task_loss, "final_aux_terms": aux_terms, "epochs": cfg.epochs,
            "world_size": 1}
    return TrainResult(model=model, info=info, num_classes=bundle.num_classes)


def get_trained_segnet(cfg: TrainConfig, bundle, device: str = "cpu", progress: bool = True,
                       checkpoint: str | None = None):
    """The SegNet for ``cfg``: from ``checkpoint`` if given, else the checkpoint cache (the hash
    of ``cfg``, shared with train.py's cache), else trained once and cached."""
    from ..train import get_trained_model

    return get_trained_model(cfg, bundle, device, progress, checkpoint, build=build_segnet,
                             train_fn=train_segnet)


@torch.no_grad()
def segmentation_confusion(model, images: np.ndarray, masks: np.ndarray, num_classes: int,
                           device: str = "cpu", batch_size: int = 128, progress: bool = False) -> np.ndarray:
    """(classes, classes) confusion matrix (rows: target) of ``model``'s per-pixel argmax."""
    from ..process import memory_format_for

    model.eval()
    fmt = memory_format_for(device)
    conf = np.zeros((num_classes, num_classes), np.int64)
    for i in tqdm(range(0, len(images), batch_size), disable=not progress, desc="eval segnet", leave=False):
        x = _to_float(images[i:i + batch_size]).to(device).contiguous(memory_format=fmt)
        pred = model(x).argmax(1).cpu().numpy()
        conf += confusion_matrix(pred, masks[i:i + batch_size], num_classes, ignore_index=IGNORE_INDEX)
    return conf


# --- the suite ----------------------------------------------------------------------------------

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


class SegmentationSuite:
    name = "segmentation"

    def cells(self, train_configs: list[TrainConfig], options: dict) -> list[dict]:
        options = dict(options or {})
        unknown = set(options) - set(SEG_DEFAULTS) - EXTRA_OPTIONS
        if unknown:
            raise UsageError(f"unknown segmentation options {sorted(unknown)}; accepted: "
                             f"{sorted(set(SEG_DEFAULTS) | EXTRA_OPTIONS)}")
        pools = list(dict.fromkeys(cfg.pool for cfg in train_configs))
        variants = variants_for(pools, options.get("variants"))
        seeds = [int(s) for s in _as_list(options.get("seeds"))] or \
            list(dict.fromkeys(cfg.seed for cfg in train_configs)) or [0]
        base_dataset = options.get("dataset") or (train_configs[0].dataset if train_configs else "shapes")
        dataset = SEG_DATASETS.get(str(base_dataset), str(base_dataset))
        recipe = {k: options.get(k, v) for k, v in SEG_DEFAULTS.items()}
        widths = options.get("widths") or DEFAULT_WIDTHS
        if isinstance(widths, str):
            widths = [w for w in widths.replace("/", ",").replace("-", ",").split(",") if w.strip()]
        try:
            model = segnet_model_name([int(w) for w in widths])
        except (TypeError, ValueError) as exc:
            raise UsageError(f"widths must be a list of positive integers, e.g. [16, 32, 64]; got {widths!r}") from exc
        segnet_widths(model)  # validates
        cells = []
        for v in variants:
            for seed in seeds:
                cfg = TrainConfig(pool=v.pool, model=model, policy=v.upsample, dataset=dataset, seed=seed,
                                  **recipe)
                cells.append({"kind": "train", "variant": v.name, "train": cfg.to_dict()})
        if options.get("reconstruction", True):
            from ..reconstruction import SAMPLE_IMAGES

            images = _as_list(options.get("images")) or list(SAMPLE_IMAGES)
            dtypes = _as_list(options.get("dtypes")) or ["float32", "float64"]
            levels = int(options.get("levels", 1))
            methods = list(variants)
            if any(v.name == "bilinear" for v in variants):   # the average-pooled twin of bilinear
                methods.append(resolve_variant("bilinear_avg"))
            for v in dict.fromkeys(methods):
                for seed in seeds:
                    cells.append({"kind": "reconstruction", "method": v.name, "pool": v.pool,
                                  "upsample": v.upsample, "images": images, "levels": levels,
                                  "dtypes": dtypes, "seed": seed})
        return cells

    # --- running ---

    @staticmethod
    def train_config(cell: dict) -> TrainConfig:
        d = dict(cell["train"])
        d["milestones"] = tuple(d.get("milestones", ()))
        return TrainConfig(**d)

    def run_cell(self, cell: dict, ctx) -> list[dict]:
        kind = cell.get("kind")
        if kind == "train":
            return self._run_train(cell, ctx)
        if kind == "reconstruction":
            return self._run_reconstruction(cell, ctx)
        raise UsageError(f"unknown segmentation cell kind {kind!r}")

    def _run_train(self, cell: dict, ctx) -> list[dict]:
        cfg = self.train_config(cell)
        bundle = load_segmentation_data(cfg.dataset, cfg.seed, cfg.train_size, cfg.test_size, ctx.data_root)
        result = get_trained_segnet(cfg, bundle, ctx.device, ctx.progress, ctx.checkpoint)
        test = bundle.eval_arrays()
        conf = segmentation_confusion(result.model, test.images, test.masks, bundle.num_classes,
                                      ctx.device, progress=ctx.progress)
        base = self._train_columns(cfg, cell["variant"])
        n = len(test.images)
        pixels = int(conf.sum())
        info = result.info
        params = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
        rows = [
            make_row(base, "miou", miou(conf), "%", n, pixels=pixels),
            make_row(base, "pixel_accuracy", 100.0 * np.trace(conf) / max(pixels, 1), "%", n, pixels=pixels),
        ]
        for name, iou in zip(bundle.class_names, iou_per_class(conf)):
            rows.append(make_row(base, "iou", None if np.isnan(iou) else 100.0 * iou, "%", n, class_name=name))
        rows += [
            make_row(base, "params", params, "count"),
            make_row(base, "train_time", info.get("train_time_s"), "s"),
            make_row(base, "train_throughput", info.get("images_per_s"), "img/s"),
        ]
        for term, value in (info.get("final_aux_terms") or {}).items():
            rows.append(make_row(base, f"final_{term}", value, "loss"))
        return rows

    @staticmethod
    def _train_columns(cfg: TrainConfig, variant: str) -> dict:
        return {**pool_columns(cfg.pool), "model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed,
                "up_pool": variant, "upsample": cfg.policy, "dtype": "float32",
                "memory_format": "channels_last"}

    def _run_reconstruction(self, cell: dict, ctx) -> list[dict]:
        from ..reconstruction import load_sample_image, reconstruction_psnr

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
            base = self._train_columns(self.train_config(cell), cell.get("variant", ""))
        else:
            base = {**pool_columns(cell["pool"]), "model": None, "dataset": "skimage",
                    "seed": cell.get("seed"), "up_pool": cell.get("method")}
        return make_row(base, "error", None, error=message)

    # --- views ---

    def table(self, frame: pd.DataFrame, options: dict | None = None) -> pd.DataFrame:
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
            per_seed = train[train["metric"] == "miou"].groupby("label")["value"]
            if (per_seed.count() > 1).any():  # the spread over seeds, next to the mean
                wide.insert(1, "mIoU sd", per_seed.std(ddof=1))
            wide["seeds"] = train[train["metric"] == "miou"].groupby("label")["seed"].nunique().astype("Int64")
            parts.append(wide)
        rec = f[(f["metric"] == "psnr") & (f["image"] == "mean")] if "image" in f.columns else f.iloc[:0]
        if not rec.empty:
            wide = rec.pivot_table(index="label", columns="dtype", values="value", aggfunc="mean")
            wide.columns = [f"PSNR {c} dB" for c in wide.columns]
            parts.append(wide)
        if not parts:
            return pd.DataFrame()
        out = pd.concat(parts, axis=1)
        return out.reindex([o for o in order if o in out.index])


SUITE = SegmentationSuite()
