"""Evaluation: logits of a model over image arrays or a Dataset, batched, in input order."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import UsageError
from ..process import memory_format_for

# Pixels per evaluation batch: 256 images at 32 px, 20 at 224. Past this, larger batches only
# add memory traffic (measured at 224 px on CPU: 5.0 ms/img in batches of 16, 8.0 in 256).
EVAL_PIXELS = 1 << 20


@torch.no_grad()
def predict(model: nn.Module, images, device: str = "cpu", batch_size: int = 256,
            progress: bool = False, desc: str = "eval") -> torch.Tensor:
    """Logits for ``images``: a float tensor (N, 3, H, W) in [0, 1] or uint8 (N, H, W, 3), in
    batches of at most ``batch_size`` images and ``EVAL_PIXELS`` pixels."""
    model.eval()
    fmt = memory_format_for(device)
    outs = []
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, torch.Tensor):
        n = images.shape[0]
        h, w = images.shape[1:3] if images.dtype == torch.uint8 else images.shape[2:4]
        batch_size = max(1, min(batch_size, EVAL_PIXELS // max(1, h * w)))
        bar = tqdm(total=n, disable=not progress, desc=desc, unit="img", leave=False, mininterval=1.0)
        for i in range(0, n, batch_size):
            batch = images[i:i + batch_size]
            if batch.dtype == torch.uint8:
                batch = batch.permute(0, 3, 1, 2).float().div_(255)
            outs.append(model(batch.to(device).contiguous(memory_format=fmt)).float().cpu())
            bar.update(batch.shape[0])
        bar.close()
    else:
        raise TypeError("predict takes image tensors or arrays; use predict_dataset for a Dataset")
    if not outs:
        raise UsageError("no images to evaluate; check the dataset and --subset")
    return torch.cat(outs)


@torch.no_grad()
def predict_dataset(model: nn.Module, dataset, device: str = "cpu", batch_size: int = 256,
                    progress: bool = False, desc: str = "eval", workers: int = 0,
                    what: str = "the evaluation set"):
    """(logits, labels) over a Dataset yielding (image in [0, 1], label), in dataset order.
    An image that is not finite (NaN, inf) is refused in one line naming ``what`` (the dataset
    and its split): a model's output on it would count as a prediction."""
    model.eval()
    fmt = memory_format_for(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    logits, labels = [], []
    seen = 0
    for batch, target in tqdm(loader, disable=not progress, desc=desc, leave=False, mininterval=1.0):
        finite = torch.isfinite(batch).flatten(1).all(1)
        if not bool(finite.all()):
            first = seen + int((~finite).nonzero()[0, 0])
            raise UsageError(f"{what} holds images with non-finite pixels (NaN or inf; the first is image "
                             f"{first}): the evaluation refuses them; check or replace that data")
        seen += len(batch)
        logits.append(model(batch.to(device).contiguous(memory_format=fmt)).float().cpu())
        labels.append(torch.as_tensor(target))
    if not logits:
        raise UsageError("the test set is empty; check the dataset and --test-size")
    return torch.cat(logits), torch.cat(labels)


def top_classes(logits: torch.Tensor, k: int = 5) -> np.ndarray:
    """The ``k`` most likely classes of every image, best first: what the stored predictions
    hold (top-1 and top-5 error, flip and top-5 distance follow from it)."""
    k = min(k, logits.shape[1])
    top = torch.topk(logits, k, dim=1).indices.numpy()
    return top.astype(np.int16 if logits.shape[1] <= np.iinfo(np.int16).max else np.int32)
