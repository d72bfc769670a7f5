"""Training: seeded SGD recipes, auxiliary pooling losses, checkpoint cache, torchrun/DDP.

One loop trains every model poolbench trains; a :class:`Task` says what differs between kinds
of model (how the model is built, its task loss, how a run is named): ``CLASSIFICATION`` here,
the SegNet's in ``poolbench.segmentation``. A checkpoint is cached under the hash of its
TrainConfig, so every suite reuses one trained model per (pool, model, dataset, training
options, seed). Under torchrun the model trains with DistributedDataParallel across the
processes; rank 0 alone writes checkpoints and results.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .auxiliary import auxiliary_loss
from .config import TrainConfig, cache_dir
from .data import load_dataset
from .errors import PoolbenchError, UsageError, one_line
from .models import create_model
from .pools.base import no_weight_decay_parameters
from .process import barrier, dist_info, file_lock, memory_format_for, seed_everything
from .store import atomic_write_text, config_hash


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


class TrainingDiverged(PoolbenchError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    model: nn.Module
    info: dict          # train_time_s, images_per_s, final losses, epochs, from_cache, checkpoint
    num_classes: int


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    no_decay = set(no_weight_decay_parameters(model))
    decay, keep = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (keep if name in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adamw":  # decoupled weight decay; momentum/nesterov do not apply
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise UsageError(f"unknown optimizer {cfg.optimizer!r}; choose {' or '.join(OPTIMIZERS)}")


def lr_at(cfg: TrainConfig, epoch_float: float) -> float:
    """Learning rate at a fractional epoch: linear warm-up, then step or cosine decay."""
    if cfg.warmup_epochs and epoch_float < cfg.warmup_epochs:
        return cfg.lr * (epoch_float + 1e-8) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-8)
        t = min(max(epoch_float - cfg.warmup_epochs, 0.0) / span, 1.0)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch_float >= m for m in cfg.milestones)
    if cfg.schedule == "constant":
        return cfg.lr
    raise UsageError(f"unknown schedule {cfg.schedule!r}; use {', '.join(SCHEDULES[:-1])} or {SCHEDULES[-1]}")


def checkpoint_path(cfg: TrainConfig) -> Path:
    return cache_dir() / "checkpoints" / f"{config_hash(cfg.to_dict())}.pt"


def build_model(cfg: TrainConfig, bundle) -> nn.Module:
    """The untrained classifier of ``cfg`` (its weights drawn from the global torch RNG)."""
    return create_model(cfg.model, bundle.num_classes, pool=cfg.pool, policy=cfg.policy,
                        mean=bundle.mean, std=bundle.std)


def load_bundle(cfg: TrainConfig, data_root: str | None = None):
    name = cfg.dataset
    if name == "imagefolder":
        if not data_root:
            raise UsageError("dataset 'imagefolder' needs --data-root PATH (a tree with train/ and val/)")
        name = f"imagefolder:{data_root}"
    return load_dataset(name, root=data_root, seed=cfg.seed, train_size=cfg.train_size,
                        test_size=cfg.test_size)


# --- what is trained ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """What differs between the kinds of model the training loop trains.

    ``build(cfg, bundle)`` makes the untrained model (also the one a checkpoint is loaded into);
    ``loss(logits, targets, cfg)`` is the task loss (the pools' auxiliary losses are added to it);
    ``describe(cfg)`` names a run in progress bars and errors.
    """

    build: Callable[[TrainConfig, Any], nn.Module]
    loss: Callable[[torch.Tensor, torch.Tensor, TrainConfig], torch.Tensor]
    describe: Callable[[TrainConfig], str]


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)


CLASSIFICATION = Task(build=build_model, loss=classification_loss,
                      describe=lambda cfg: f"{cfg.pool} on {cfg.model}")


# --- training ---------------------------------------------------------------------------------

def train(cfg: TrainConfig, bundle, device: str = "cpu", progress: bool = True,
          workers: int = 0, task: Task = CLASSIFICATION) -> TrainResult:
    """Train one ``task`` model from scratch with the recipe in ``cfg``; deterministic for a seed.

    The RNG is used in a fixed order (seed, model init, optimizer, data order), so a seed gives
    the same weights on the same machine; under torchrun the processes train one model with DDP.
    """
    rank, world = dist_info()
    seed_everything(cfg.seed)
    model = task.build(cfg, bundle).to(device)
    fmt = memory_format_for(device)
    model = model.to(memory_format=fmt)
    optimizer = build_optimizer(model, cfg)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.cuda.current_device()] if device.startswith("cuda") else None)

    generator = torch.Generator().manual_seed(cfg.seed)
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(bundle.train, num_replicas=world, rank=rank,
                                                      shuffle=True, seed=cfg.seed, drop_last=True)
        loader = torch.utils.data.DataLoader(bundle.train, batch_size=max(cfg.batch_size // world, 1),
                                             sampler=sampler, num_workers=workers, drop_last=True)
    else:
        sampler = None
        loader = torch.utils.data.DataLoader(bundle.train, batch_size=cfg.batch_size, shuffle=True,
                                             generator=generator, num_workers=workers, drop_last=True)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise UsageError(f"training set of {len(bundle.train)} images is smaller than one batch of "
                         f"{cfg.batch_size}; lower --batch-size or raise --train-size")

    name = task.describe(cfg)
    net.train()
    seen, start = 0, time.perf_counter()
    task_loss = aux_terms = None
    bar = tqdm(total=cfg.epochs * steps_per_epoch, disable=not progress or rank != 0,
               desc=f"train {name}", unit="it", leave=False, mininterval=1.0)
    for epoch in range(cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for step, (images, labels) in enumerate(loader):
            lr = lr_at(cfg, epoch + step / steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.to(device, non_blocking=True).contiguous(memory_format=fmt)
            labels = labels.to(device, non_blocking=True)
            logits = net(images)
            loss = task.loss(logits, labels, cfg)
            aux, terms = auxiliary_loss(model)
            total = loss + aux
            bad = not bool(torch.isfinite(total.detach()))
            if world > 1:  # every rank stops together, or the others hang in the next all-reduce
                flag = torch.tensor(float(bad), device=device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                bad = bool(flag.item())
            if bad:
                bar.close()
                raise TrainingDiverged(
                    f"training {name} diverged at epoch {epoch + 1} step {step + 1} "
                    f"(loss {float(total.detach())}); lower --lr or check the operator"
                )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            seen += images.shape[0]
            task_loss, aux_terms = float(loss.detach()), terms
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{task_loss:.3f}", **{k: f"{v:.3g}" for k, v in terms.items()})
    bar.close()
    elapsed = time.perf_counter() - start
    # the last update can blow the weights up although every loss seen was finite
    broken = [name for name, t in model.state_dict().items()
              if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if world > 1:  # buffers (BN statistics) are per process: decide together
        flag = torch.tensor(float(bool(broken)), device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and not broken:
            broken = ["(on another process)"]
    if broken:
        raise TrainingDiverged(
            f"training {name} diverged: {len(broken)} weight tensors are not finite "
            f"after the last step (e.g. {broken[0]}); lower --lr or check the operator"
        )
    model.eval()
    info = {
        "train_time_s": elapsed,
        "images_per_s": seen * world / elapsed if elapsed > 0 else float("nan"),
        "final_task_loss": task_loss,
        "final_aux_terms": aux_terms or {},
        "epochs": cfg.epochs,
        "world_size": world,
    }
    return TrainResult(model=model, info=info, num_classes=bundle.num_classes)


def get_trained_model(cfg: TrainConfig, bundle, device: str = "cpu", progress: bool = True,
                      checkpoint: str | None = None, task: Task = CLASSIFICATION) -> TrainResult:
    """The ``task`` model for ``cfg``: from ``checkpoint`` if given, else the cache, else trained
    (by :func:`train`) and cached under the hash of ``cfg``."""
    build = task.build
    if checkpoint:
        return _load_checkpoint(Path(checkpoint), cfg, bundle, device, explicit=True, build=build)
    path = checkpoint_path(cfg)
    rank, world = dist_info()
    if world > 1:
        if path.is_file():
            return _load_checkpoint(path, cfg, bundle, device, build=build)
        result = train(cfg, bundle, device, progress, task=task)
        if rank == 0:
            _save_checkpoint(path, cfg, result)
        barrier()
        result.info["from_cache"] = False
        result.info["checkpoint"] = str(path)
        return result
    with file_lock(path):
        if path.is_file():
            return _load_checkpoint(path, cfg, bundle, device, build=build)
        result = train(cfg, bundle, device, progress, task=task)
        _save_checkpoint(path, cfg, result)
    result.info["from_cache"] = False
    result.info["checkpoint"] = str(path)
    return result


def _save_checkpoint(path: Path, cfg: TrainConfig, result: TrainResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    torch.save({"state_dict": state, "config": cfg.to_dict(), "info": json.dumps(result.info, default=str)}, tmp)
    os.replace(tmp, path)
    atomic_write_text(path.with_suffix(".json"), json.dumps({"config": cfg.to_dict(), "info": result.info},
                                                            indent=1, default=str))


def _load_checkpoint(path: Path, cfg: TrainConfig, bundle, device: str, explicit: bool = False,
                     build: Callable[[TrainConfig, Any], nn.Module] = build_model) -> TrainResult:
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found; pass an existing file to --checkpoint")
    fix = "pass the --model/--pool it was trained with" if explicit else "delete it and run again"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a zip/pickle, a disallowed global (weights_only), truncated...
        raise UsageError(
            f"checkpoint {path} is not a readable weights-only PyTorch checkpoint "
            f"({type(exc).__name__}: {one_line(exc)}); "
            + ("pass a state_dict saved with torch.save" if explicit else "delete it and run again")
        ) from exc
    saved = payload.get("config") if isinstance(payload, dict) else None
    if explicit and isinstance(saved, dict):
        differs = [f"{k} {saved[k]!r} (asked for {getattr(cfg, k)!r})" for k in ("model", "pool")
                   if k in saved and saved[k] != getattr(cfg, k)]
        if differs:
            raise UsageError(f"checkpoint {path} was trained with {', '.join(differs)}; {fix}")
    state = payload["state_dict"] if isinstance(payload, dict) and "state_dict" in payload else payload
    model = build(cfg, bundle)
    try:
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not a state_dict")
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise UsageError(
            f"checkpoint {path} does not fit {cfg.model} with pool {cfg.pool} ({one_line(exc)}); {fix}"
        ) from exc
    model = model.to(device).to(memory_format=memory_format_for(device)).eval()
    info = {}
    if isinstance(payload, dict) and "info" in payload:
        try:
            info = json.loads(payload["info"])
        except (TypeError, ValueError):
            info = {}
    info.update({"from_cache": not explicit, "checkpoint": str(path)})
    return TrainResult(model=model, info=info, num_classes=bundle.num_classes)
