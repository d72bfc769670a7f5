"""Evaluation: logits of a model over image arrays or a Dataset, batched, in input order.

Both entry points evaluate ``inference_copy(model)``: each BatchNorm that directly follows a
convolution is folded into it: one pass over the activations instead of two, about 5% of a
convnet's evaluation on the CPU (docs/measurements.md, "Evaluation and augmentation on the
CPU"); the logits move by float rounding only (below 1e-5 on the convnet), the model itself is
left as it is.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
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
    fmt = memory_format_for(device)
    model = inference_copy(model, fmt)
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
    fmt = memory_format_for(device)
    model = inference_copy(model, fmt)
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


def inference_copy(model: nn.Module, memory_format=torch.contiguous_format) -> nn.Module:
    """``model`` in eval mode with every ``Conv2d`` directly followed by a ``BatchNorm2d`` in
    an ``nn.Sequential`` folded into one convolution (the batch norm's running statistics and
    affine in the convolution's weight and bias, the batch norm replaced by ``nn.Identity``):
    in eval mode the same function, to float rounding, in one pass instead of two. Pairs that
    are not adjacent in a Sequential (a ResNet block's ``conv1``/``bn1``) stay as they are.

    ``model`` is put in eval mode and otherwise left as it is: the modules on the way to a
    folded pair are shallow copies, everything else (parameters included) is shared."""
    model.eval()
    return _folded(model, memory_format)


def _folded(module: nn.Module, memory_format) -> nn.Module:
    children = {name: None if child is None else _folded(child, memory_format)
                for name, child in module._modules.items()}
    if isinstance(module, nn.Sequential):
        names = list(children)
        for a, b in zip(names, names[1:]):
            conv, bn = children[a], children[b]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                children[a] = fuse_conv_bn_eval(conv, bn).to(memory_format=memory_format)
                children[b] = nn.Identity()
    if all(children[name] is child for name, child in module._modules.items()):
        return module
    clone = copy.copy(module)
    clone._modules = dict(children)
    return clone


def top_classes(logits: torch.Tensor, k: int = 5) -> np.ndarray:
    """The ``k`` most likely classes of every image, best first: what the stored predictions
    hold (top-1 and top-5 error, flip and top-5 distance follow from it)."""
    k = min(k, logits.shape[1])
    top = torch.topk(logits, k, dim=1).indices.numpy()
    return top.astype(np.int16 if logits.shape[1] <= np.iinfo(np.int16).max else np.int32)
