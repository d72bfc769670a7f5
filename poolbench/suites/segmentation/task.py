"""SegNet training and per-pixel evaluation: the segmentation side of the engine.

The SegNet (``poolbench.models.segnet``) trains in the one training loop of ``poolbench.training.loop``
with the :data:`SEGNET` task: pixel-wise cross-entropy (pixels labelled ``IGNORE_INDEX`` do not
count) plus the pools' auxiliary losses, with the loop's divergence and weight checks and
torchrun/DDP. Its checkpoints share the cache of every trained model, keyed by the TrainConfig
hash (``cfg.model`` names the widths, ``cfg.policy`` the up-pooling: ``paired`` or ``bilinear``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...config import TrainConfig
from ...data import load_segmentation_dataset
from ...metrics import confusion_matrix
from ...models.segnet import SegNet, segnet_widths
from ...process import memory_format_for
from ...training.cache import get_trained_model
from ...training.loop import Task, TrainResult
from ...training.runtime import TrainSettings

IGNORE_INDEX = 255

_BUNDLES: dict = {}


def load_segmentation_data(dataset: str, seed: int, train_size: int | None, test_size: int | None,
                           data_root: str | None = None):
    """The segmentation bundle (``poolbench.data.load_segmentation_dataset``), once per process.

    ``bundle.train`` yields (float CHW image in [0, 1], int64 HxW mask) with the data package's
    training augmentation (the same random crop and flip on image and mask);
    ``bundle.eval_arrays()`` gives the test images (uint8 HxWx3) and masks.
    """
    key = (dataset, seed, train_size, test_size, data_root)
    if key not in _BUNDLES:
        _BUNDLES.clear()  # one data set per process is plenty
        _BUNDLES[key] = load_segmentation_dataset(dataset, root=data_root, seed=seed,
                                                  train_size=train_size, test_size=test_size)
    return _BUNDLES[key]


def build_segnet(cfg: TrainConfig, bundle) -> SegNet:
    """The untrained SegNet of ``cfg``: down-pool ``cfg.pool``, up-pooling ``cfg.policy``."""
    return SegNet(bundle.num_classes, cfg.pool, upsample=cfg.policy or "paired", widths=segnet_widths(cfg.model),
                  mean=bundle.mean, std=bundle.std)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, label_smoothing=cfg.label_smoothing)


SEGNET = Task(build=build_segnet, loss=segmentation_loss,
              describe=lambda cfg: f"{cfg.model} with {cfg.pool} ({cfg.policy or 'paired'})")


def get_trained_segnet(cfg: TrainConfig, bundle, device: str = "cpu", progress: bool = True,
                       checkpoint: str | None = None,
                       settings: TrainSettings = TrainSettings(), strict: bool = False) -> TrainResult:
    """The SegNet for ``cfg``: from ``checkpoint`` if given, else the checkpoint cache, else
    trained once and cached (``strict``: a damaged cached model is refused, not retrained)."""
    return get_trained_model(cfg, bundle, device, progress, checkpoint, task=SEGNET, settings=settings,
                             strict=strict)


def _to_float(images) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1]."""
    t = torch.as_tensor(images).permute(0, 3, 1, 2)
    return t.float().div_(255) if t.dtype == torch.uint8 else t.float()


@torch.no_grad()
def segmentation_confusion(model, images: np.ndarray, masks: np.ndarray, num_classes: int,
                           device: str = "cpu", batch_size: int = 128,
                           progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The (classes, classes) confusion matrix (rows: target) of ``model``'s per-pixel argmax,
    and per image the pixel counts (N, 3, classes) of [predicted and target, predicted, target]
    per class: the stored predictions that mIoU and its interval are views of."""
    model.eval()
    fmt = memory_format_for(device)
    conf = np.zeros((num_classes, num_classes), np.int64)
    counts = np.zeros((len(images), 3, num_classes), np.int32)
    for i in tqdm(range(0, len(images), batch_size), disable=not progress, desc="eval segnet", leave=False):
        x = _to_float(images[i:i + batch_size]).to(device).contiguous(memory_format=fmt)
        pred = model(x).argmax(1).cpu().numpy()
        for j, (p, m) in enumerate(zip(pred, masks[i:i + batch_size])):
            per = confusion_matrix(p[None], m[None], num_classes, ignore_index=IGNORE_INDEX)
            conf += per
            counts[i + j] = (np.diag(per), per.sum(axis=0), per.sum(axis=1))
    return conf, counts
