"""Training: seeded SGD recipes, auxiliary pooling losses, checkpoint cache, exact resume, DDP.

One loop trains every model poolbench trains; a :class:`Task` says what differs between kinds
of model (how the model is built, its task loss, how a run is named): ``CLASSIFICATION`` here,
the SegNet's in ``poolbench.suites.segmentation.task``. A checkpoint is cached under the hash of its
TrainConfig, so every suite reuses one trained model per (pool, model, dataset, training
options, seed). While a model trains, its progress is kept in a resume checkpoint
(``poolbench.training.checkpoint``): the same command run again after a crash, a ``kill -9`` or a
preemption continues where it stopped and ends with the same weights, bit for bit on CPU.
Under torchrun the model trains with DistributedDataParallel across the processes; rank 0 alone
writes checkpoints and results. How it runs here (mixed precision, loader workers, checkpoint
interval...) is ``engine.TrainSettings``, outside the hash.
"""
from __future__ import annotations

import json
import math
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_open, atomic_write_text, remove_stale_temps
from ..auxiliary import auxiliary_loss
from .checkpoint import Saver, StaleState, live, read_state, remove_state, restore, state_path, training_state
from ..config import TrainConfig, cache_dir
from ..data import load_dataset
from .runtime import (
    DivergenceWatch,
    EpochSums,
    Precision,
    TrainSettings,
    agree,
    current_settings,
    train_loader,
)
from ..errors import PoolbenchError, UsageError, one_line
from .evaluate import predict_dataset
from ..metrics import topk_error
from ..models import create_model
from ..pools.base import no_weight_decay_parameters
from ..pools.lift_fast import RAN, implementations_since
from ..process import barrier, dist_info, file_lock, memory_format_for, seed_everything
from ..store import config_hash


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


class TrainingDiverged(PoolbenchError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    model: nn.Module
    info: dict          # train_time_s, images_per_s, final losses, epochs, history, from_cache, checkpoint
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
    return load_dataset(name, root=data_root, seed=cfg.data_seed, train_size=cfg.train_size,
                        test_size=cfg.test_size)


# --- what is trained ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """What differs between the kinds of model the training loop trains.

    ``build(cfg, bundle)`` makes the untrained model (also the one a checkpoint is loaded into);
    ``loss(logits, targets, cfg)`` is the task loss (the pools' auxiliary losses are added to it);
    ``describe(cfg)`` names a run in progress bars and errors; ``evaluate(model, bundle,
    device)``, if given, measures the learning curve's test points ({"test_error": %}).
    """

    build: Callable[[TrainConfig, Any], nn.Module]
    loss: Callable[[torch.Tensor, torch.Tensor, TrainConfig], torch.Tensor]
    describe: Callable[[TrainConfig], str]
    evaluate: Callable[[nn.Module, Any, str], dict] | None = None


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)


def classification_error(model: nn.Module, bundle, device: str) -> dict:
    logits, labels = predict_dataset(model, bundle.test, device)
    return {"test_error": 100 * topk_error(logits, labels, 1)}


CLASSIFICATION = Task(build=build_model, loss=classification_loss,
                      describe=lambda cfg: f"{cfg.pool} on {cfg.model}", evaluate=classification_error)


# --- training ---------------------------------------------------------------------------------

def train(cfg: TrainConfig, bundle, device: str = "cpu", progress: bool = True,
          workers: int | None = None, task: Task = CLASSIFICATION,
          settings: TrainSettings | None = None, resume: Path | None = None) -> TrainResult:
    """Train one ``task`` model with the recipe in ``cfg``; deterministic for a seed.

    The RNG is used in a fixed order (seed, model init, optimizer, data order), so a seed gives
    the same weights on the same machine; under torchrun the processes train one model with DDP.
    ``resume``: the resume checkpoint to continue from if it exists and to keep up to date
    (None: no checkpoints). ``workers``: DataLoader processes (default from ``settings``).
    """
    settings = settings or current_settings()
    state = read_state(resume) if resume is not None else None
    rank, world = dist_info()
    if state is not None and state.get("world") != world:
        state = None  # the data order of another world size: start again
    threads = torch.get_num_threads()
    if state is not None and device == "cpu":
        # the thread count changes how CPU kernels split their sums: the run continued keeps
        # the count it started with, so that its weights are the uninterrupted run's
        torch.set_num_threads(int(state["threads"]))
    try:
        try:
            return _train(cfg, bundle, device, progress, workers, task, settings, resume, state, rank, world)
        except StaleState:  # written by another version of the model: start again
            return _train(cfg, bundle, device, progress, workers, task, settings, resume, None, rank, world)
    except TrainingDiverged:
        if resume is not None and rank == 0:
            remove_state(resume)  # a rerun starts over instead of diverging again from here
        raise
    finally:
        torch.set_num_threads(threads)


def _train(cfg, bundle, device, progress, workers, task, settings, resume, state, rank, world):
    ran = RAN.copy()
    seed_everything(cfg.seed)
    model = task.build(cfg, bundle).to(device)
    fmt = memory_format_for(device)
    model = model.to(memory_format=fmt)
    optimizer = build_optimizer(model, cfg)
    precision = Precision(cfg.amp, device)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.cuda.current_device()] if device.startswith("cuda") else None)
    if settings.compile:
        net = torch.compile(net)
    if workers is None:
        workers = settings.loader_workers_for(cfg.dataset)
    loader, sampler, generator = train_loader(bundle.train, cfg.batch_size, cfg.seed, rank, world,
                                              workers, device)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise UsageError(f"training set of {len(bundle.train)} images is smaller than one batch of "
                         f"{cfg.batch_size}; lower --batch-size or raise --train-size")

    pos = {"epoch": 0, "step": 0, "generator": generator.get_state(), "epoch_sums": EpochSums()}
    history, elapsed, seen, resumed_from = [], 0.0, 0, None
    if state is not None:
        restore(state, model, optimizer, precision.scaler, rank)  # the RNG last
        pos.update(epoch=state["epoch"], step=state["step"], generator=state["generator"],
                   epoch_sums=EpochSums(state["sums"]))
        history, elapsed, seen = list(state["history"]), float(state["elapsed_s"]), int(state["seen"])
        resumed_from = {"epoch": state["epoch"], "step": state["step"]}

    def snapshot() -> dict:
        return training_state(model, optimizer, precision.scaler, world, config=cfg.to_dict(),
                              epoch=pos["epoch"], step=pos["step"], generator=pos["generator"],
                              sums=pos["epoch_sums"].state(), history=history, seen=seen,
                              elapsed_s=elapsed + (time.perf_counter() - clock if clock is not None else 0.0))

    name = task.describe(cfg)
    watch = DivergenceWatch(device, settings.check_every_for(device))
    eval_every = settings.eval_every_for(cfg.dataset) if task.evaluate is not None else 0
    saver = Saver(resume, settings.checkpoint_minutes, snapshot, write=rank == 0, collective=world > 1)
    net.train()
    loss = terms = None
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=pos["epoch"] * steps_per_epoch + pos["step"],
               disable=not progress or rank != 0, desc=f"train {name}", unit="it", leave=False,
               mininterval=1.0)

    def stop_if_diverged() -> None:
        bad = watch.first_bad(world)
        if bad is not None:
            bar.close()
            g, value = bad
            where = f"epoch {g // steps_per_epoch + 1} step {g % steps_per_epoch + 1}" if g >= 0 else "a step"
            raise TrainingDiverged(f"training {name} diverged at {where} (loss {value}); "
                                   "lower --lr or check the operator")

    clock = None
    with live(saver):
        for epoch in range(pos["epoch"], cfg.epochs):
            sampler.set_epoch(epoch)
            generator.set_state(pos["generator"])  # this epoch's order (again, when resumed)
            sampler.skip = pos["step"] * loader.batch_size
            batches = iter(loader)
            clock = time.perf_counter()
            for step in range(pos["step"], steps_per_epoch):
                saver.safe = False  # from here to the end of the step the state is in flux
                images, labels = next(batches)
                g = epoch * steps_per_epoch + step
                lr = lr_at(cfg, epoch + step / steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images = images.to(device, non_blocking=True).contiguous(memory_format=fmt)
                labels = labels.to(device, non_blocking=True)
                with precision.autocast():
                    logits = net(images)
                    loss = task.loss(logits, labels, cfg)
                    aux, terms = auxiliary_loss(model, as_tensors=True)
                total = loss + aux
                watch.observe(total, g)
                if watch.due(g):
                    stop_if_diverged()
                optimizer.zero_grad(set_to_none=True)
                precision.step(total, optimizer)
                seen += images.shape[0]
                pos["epoch_sums"].add(loss, terms)
                pos["step"] = step + 1
                bar.update(1)
                if not bar.disable and step % 10 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.3f}",
                                    **{k: f"{float(v):.3g}" for k, v in terms.items()})
                saver.safe = True
                if resume is not None and step + 1 < steps_per_epoch and (
                        saver.due(False) if world == 1 else watch.due(g) and agree(saver.due(False), device)):
                    stop_if_diverged()  # never a checkpoint of diverged weights
                    elapsed, clock = elapsed + time.perf_counter() - clock, None
                    saver.save()
                    clock = time.perf_counter()
            elapsed, clock = elapsed + time.perf_counter() - clock, None
            saver.safe = False
            stop_if_diverged()
            point = pos["epoch_sums"].point(epoch + 1, lr)  # the rate of the epoch's last step
            if eval_every and rank == 0 and ((epoch + 1) % eval_every == 0 or epoch + 1 == cfg.epochs):
                with torch.random.fork_rng(devices=[]):  # an evaluation loader draws a seed
                    point.update(task.evaluate(model, bundle, device))
                net.train()
            history.append(point)
            pos.update(epoch=epoch + 1, step=0, generator=generator.get_state(), epoch_sums=EpochSums())
            if resume is not None and epoch + 1 < cfg.epochs:
                saver.save()
            saver.safe = True
    bar.close()
    # the last update can blow the weights up although every loss seen was finite
    broken = [k for k, t in model.state_dict().items()
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
        "final_task_loss": None if loss is None else float(loss.detach()),
        "final_aux_terms": {k: float(v) for k, v in (terms or {}).items()},
        "epochs": cfg.epochs,
        "world_size": world,
        "amp": cfg.amp,
        "history": history,
        "resumed_from": resumed_from,
        "resume_checkpoints_written": saver.writes,
        "lift_impl": implementations_since(ran),
    }
    return TrainResult(model=model, info=info, num_classes=bundle.num_classes)


def get_trained_model(cfg: TrainConfig, bundle, device: str = "cpu", progress: bool = True,
                      checkpoint: str | None = None, task: Task = CLASSIFICATION,
                      settings: TrainSettings | None = None) -> TrainResult:
    """The ``task`` model for ``cfg``: from ``checkpoint`` if given, else the cache, else trained
    (by :func:`train`, resuming an interrupted run of the same recipe) and cached under the hash
    of ``cfg``; the resume checkpoint is removed once the model is cached."""
    build = task.build
    if checkpoint:
        return _load_checkpoint(Path(checkpoint), cfg, bundle, device, explicit=True, build=build)
    path = checkpoint_path(cfg)
    resume = state_path(path)
    rank, world = dist_info()
    if world > 1:
        if path.is_file():
            return _load_checkpoint(path, cfg, bundle, device, build=build)
        result = train(cfg, bundle, device, progress, task=task, settings=settings, resume=resume)
        barrier()  # every process has read the resume checkpoint before it goes
        if rank == 0:
            _save_checkpoint(path, cfg, result)
            remove_state(resume)
        barrier()
        result.info["from_cache"] = False
        result.info["checkpoint"] = str(path)
        return result
    with file_lock(path):
        if path.is_file():
            return _load_checkpoint(path, cfg, bundle, device, build=build)
        result = train(cfg, bundle, device, progress, task=task, settings=settings, resume=resume)
        _save_checkpoint(path, cfg, result)
        remove_state(resume)
        remove_stale_temps(path.parent)  # of final writes killed before (their pid is gone)
    result.info["from_cache"] = False
    result.info["checkpoint"] = str(path)
    return result


def _save_checkpoint(path: Path, cfg: TrainConfig, result: TrainResult) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    with atomic_open(path, "wb") as fh:
        torch.save({"state_dict": state, "config": cfg.to_dict(), "info": json.dumps(result.info, default=str)}, fh)
    atomic_write_text(path.with_suffix(".json"), json.dumps({"config": cfg.to_dict(), "info": result.info},
                                                            indent=1, default=str))


def _load_checkpoint(path: Path, cfg: TrainConfig, bundle, device: str, explicit: bool = False,
                     build: Callable[[TrainConfig, Any], nn.Module] = build_model) -> TrainResult:
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found; pass an existing file to --checkpoint")
    fix = "pass the --model/--pool it was trained with" if explicit else "delete it and run again"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text ends in advice to set weights_only=False, i.e. to run the file's code
        raise UsageError(
            f"checkpoint {path} holds pickled Python objects, not only tensors, and poolbench never "
            "unpickles them (that can run arbitrary code); "
            + ("load it where it was made and save its weights with torch.save(model.state_dict(), FILE), "
               "then pass FILE" if explicit else "delete it and run again")
        ) from exc
    except Exception as exc:  # not a zip/pickle file, truncated...
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
