"""Training: seeded SGD recipes, auxiliary pooling losses, checkpoint cache, exact resume, DDP.

One loop trains every model poolbench trains (``train`` -> ``train_one_epoch``, as flat as
torchvision's reference script); a :class:`Task` says what differs between kinds
of model (how the model is built, its task loss, how a run is named): ``CLASSIFICATION`` here,
the SegNet's in ``poolbench.suites.segmentation.task``. ``cache`` keeps one trained model per
(pool, model, dataset, training options, seed) for every suite. While a model trains, its
progress is kept in a resume checkpoint (``poolbench.training.checkpoint``): the same command run again after a crash, a ``kill -9`` or a
preemption continues where it stopped and ends with the same weights, bit for bit on CPU.
Under torchrun the model trains with DistributedDataParallel across the processes; rank 0 alone
writes checkpoints and results. How it runs here (mixed precision, loader workers, checkpoint
interval...) is ``runtime.TrainSettings``, outside the hash, passed in by the caller.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..auxiliary import auxiliary_loss
from ..config import TrainConfig
from ..data import load_dataset
from ..errors import PoolbenchError, UsageError
from ..implementations import mark, ran_since
from ..metrics import topk_error
from ..models import create_model
from ..pools.base import no_weight_decay_parameters, seed_stochastic, set_stochastic_states, stochastic_states
from ..process import dist_info, memory_format_for, seed_everything
from .checkpoint import Saver, StaleState, live, read_state, remove_state, restore, training_state
from .evaluate import predict_dataset
from .runtime import DivergenceWatch, EpochSums, Precision, TrainSettings, agree, train_loader

OPTIMIZERS = ("sgd", "adamw")


def augmentation_seed(seed: int) -> int:
    """The seed the global generators restart from once the model is built (``Run.start``)."""
    return int(np.random.SeedSequence([int(seed), 0x0A06]).generate_state(1, np.uint32)[0])

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
                        test_size=cfg.test_size, holdout=cfg.holdout)


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
    logits, labels = predict_dataset(model, bundle.test, device, what=bundle.split_name)
    return {"test_error": 100 * topk_error(logits, labels, 1)}


CLASSIFICATION = Task(build=build_model, loss=classification_loss,
                      describe=lambda cfg: f"{cfg.pool} on {cfg.model}", evaluate=classification_error)


# --- training ---------------------------------------------------------------------------------

def train(cfg: TrainConfig, bundle, device: str = "cpu", progress: bool = True,
          workers: int | None = None, task: Task = CLASSIFICATION,
          settings: TrainSettings = TrainSettings(), resume: Path | None = None) -> TrainResult:
    """Train one ``task`` model with the recipe in ``cfg``; deterministic for a seed.

    The RNG is used in a fixed order (seed, model init, optimizer, data order), so a seed gives
    the same weights on the same machine; under torchrun the processes train one model with DDP.
    ``resume``: the resume checkpoint to continue from if it exists and to keep up to date
    (None: no checkpoints). ``workers``: DataLoader processes (default from ``settings``).
    """
    state = read_state(resume) if resume is not None else None
    if state is not None and state.get("world") != dist_info()[1]:
        state = None  # the data order of another world size: start again
    threads = torch.get_num_threads()
    if state is not None and device == "cpu":
        # the thread count changes how CPU kernels split their sums: the run continued keeps
        # the count it started with, so that its weights are the uninterrupted run's
        torch.set_num_threads(int(state["threads"]))
    try:
        try:
            return _train(Run.start(cfg, bundle, device, task, settings, workers), settings, progress,
                          resume, state)
        except StaleState:  # written by another version of the model: start again
            return _train(Run.start(cfg, bundle, device, task, settings, workers), settings, progress,
                          resume, None)
    except TrainingDiverged:
        if resume is not None and dist_info()[0] == 0:
            remove_state(resume)  # a rerun starts over instead of diverging again from here
        raise
    finally:
        torch.set_num_threads(threads)


@dataclass
class Run:
    """What every step of one training run uses (torchvision's train.py keeps these in main)."""

    cfg: TrainConfig
    bundle: Any
    device: str
    task: Task
    rank: int
    world: int
    model: nn.Module
    net: nn.Module                   # the model as stepped: wrapped by DDP and torch.compile
    optimizer: torch.optim.Optimizer
    precision: Precision
    loader: Any
    sampler: Any
    generator: torch.Generator       # draws each epoch's data order
    fmt: torch.memory_format
    steps: int                       # per epoch, fixed: len(loader) shrinks while a resume skips
    implementations: Any             # the tally of operator implementations at the start

    @classmethod
    def start(cls, cfg: TrainConfig, bundle, device: str, task: Task, settings: TrainSettings,
              workers: int | None) -> "Run":
        """Seed, build the model and optimizer, and make the loader, in this order (the RNG's)."""
        before = mark()
        rank, world = dist_info()
        seed_everything(cfg.seed)
        model = task.build(cfg, bundle).to(device)
        # paired training: the global generator is the augmentation's from here, restarted at a
        # seed of its own (a pool's initialisation draws a different amount from it), and the
        # stochastic pools draw from generators of their own, so every pool at this seed sees
        # the reference's crops and flips
        seed_stochastic(model, cfg.seed)
        seed_everything(augmentation_seed(cfg.seed))
        fmt = memory_format_for(device)
        model = model.to(memory_format=fmt)
        optimizer = build_optimizer(model, cfg)
        net = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[torch.cuda.current_device()] if device.startswith("cuda") else None)
        if settings.compile_training:
            net = torch.compile(net)
        workers = settings.loader_workers_for(cfg.dataset) if workers is None else workers
        loader, sampler, generator = train_loader(bundle.train, cfg.batch_size, cfg.seed, rank, world,
                                                  workers, device)
        if len(loader) == 0:
            raise UsageError(f"training set of {len(bundle.train)} images is smaller than one batch of "
                             f"{cfg.batch_size}; lower --batch-size or raise --train-size")
        return cls(cfg, bundle, device, task, rank, world, model, net, optimizer,
                   Precision(cfg.amp, device), loader, sampler, generator, fmt, len(loader), before)

    @property
    def name(self) -> str:
        return self.task.describe(self.cfg)


@dataclass
class Position:
    """Where a run stands: everything a resume checkpoint restores besides the weights."""

    epoch: int = 0
    step: int = 0
    generator: Any = None            # the data-order state at the start of the epoch
    sums: EpochSums = field(default_factory=EpochSums)
    history: list = field(default_factory=list)
    elapsed: float = 0.0             # training seconds before ``clock``
    seen: int = 0
    clock: float | None = None       # when the running timed stretch began (None: paused)

    def elapsed_now(self) -> float:
        return self.elapsed + (time.perf_counter() - self.clock if self.clock is not None else 0.0)

    def pause(self) -> None:
        self.elapsed, self.clock = self.elapsed_now(), None

    def snapshot(self, run: Run) -> dict:
        return training_state(run.model, run.optimizer, run.precision.scaler, run.world,
                              config=run.cfg.to_dict(), epoch=self.epoch, step=self.step,
                              generator=self.generator, sums=self.sums.state(), history=self.history,
                              seen=self.seen, elapsed_s=self.elapsed_now(),
                              pool_rngs=stochastic_states(run.model))

    def restore(self, run: Run, state: dict) -> dict:
        """Continue from ``state``; returns where it resumed (for the info)."""
        restore(state, run.model, run.optimizer, run.precision.scaler, run.rank)  # the RNG last
        set_stochastic_states(run.model, state.get("pool_rngs"))
        self.epoch, self.step, self.generator = state["epoch"], state["step"], state["generator"]
        self.sums, self.history = EpochSums(state["sums"]), list(state["history"])
        self.elapsed, self.seen = float(state["elapsed_s"]), int(state["seen"])
        return {"epoch": state["epoch"], "step": state["step"]}


def _train(run: Run, settings: TrainSettings, progress: bool, resume: Path | None,
           state: dict | None) -> TrainResult:
    cfg = run.cfg
    pos = Position(generator=run.generator.get_state())
    resumed_from = pos.restore(run, state) if state is not None else None
    watch = DivergenceWatch(run.device, settings.check_every_for(run.device))
    eval_every = settings.eval_every_for(cfg.dataset) if run.task.evaluate is not None else 0
    saver = Saver(resume, settings.checkpoint_minutes, lambda: pos.snapshot(run), write=run.rank == 0,
                  collective=run.world > 1)
    run.net.train()
    bar = tqdm(total=cfg.epochs * run.steps, initial=pos.epoch * run.steps + pos.step,
               disable=not progress or run.rank != 0, desc=f"train {run.name}", unit="it", leave=False,
               mininterval=1.0)
    last = (None, None, None)
    with live(saver):
        for epoch in range(pos.epoch, cfg.epochs):
            last = train_one_epoch(run, pos, epoch, watch, saver, bar, checkpoints=resume is not None)
            saver.safe = False
            stop_if_diverged(run, watch, bar)
            point = pos.sums.point(epoch + 1, last[2])  # the rate of the epoch's last step
            if eval_every and run.rank == 0 and ((epoch + 1) % eval_every == 0 or epoch + 1 == cfg.epochs):
                with torch.random.fork_rng(devices=[]):  # an evaluation loader draws a seed
                    point.update(run.task.evaluate(run.model, run.bundle, run.device))
                run.net.train()
            pos.history.append(point)
            pos.epoch, pos.step, pos.generator, pos.sums = epoch + 1, 0, run.generator.get_state(), EpochSums()
            if resume is not None and epoch + 1 < cfg.epochs:
                saver.save()
            saver.safe = True
    bar.close()
    check_weights(run)
    run.model.eval()
    loss, terms, _ = last
    info = {
        "train_time_s": pos.elapsed,
        "images_per_s": pos.seen * run.world / pos.elapsed if pos.elapsed > 0 else float("nan"),
        "final_task_loss": None if loss is None else float(loss.detach()),
        "final_aux_terms": {k: float(v) for k, v in (terms or {}).items()},
        "epochs": cfg.epochs,
        "world_size": run.world,
        "amp": cfg.amp,
        "history": pos.history,
        "resumed_from": resumed_from,
        "resume_checkpoints_written": saver.writes,
        "implementations": ran_since(run.implementations),
    }
    return TrainResult(model=run.model, info=info, num_classes=run.bundle.num_classes)


def train_one_epoch(run: Run, pos: Position, epoch: int, watch: DivergenceWatch, saver: Saver, bar,
                    checkpoints: bool) -> tuple:
    """The steps of ``epoch`` from ``pos.step`` on: (task loss, auxiliary terms, learning rate)
    of the last step. With ``checkpoints``, a resume checkpoint whenever the saver says one is due."""
    run.sampler.set_epoch(epoch)
    run.generator.set_state(pos.generator)  # this epoch's order (again, when resumed)
    run.sampler.skip = pos.step * run.loader.batch_size
    batches = iter(run.loader)
    pos.clock = time.perf_counter()
    loss = terms = lr = None
    for step in range(pos.step, run.steps):
        saver.safe = False  # from here to the end of the step the state is in flux
        images, labels = next(batches)
        g = epoch * run.steps + step
        lr = lr_at(run.cfg, epoch + step / run.steps)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        images = images.to(run.device, non_blocking=True).contiguous(memory_format=run.fmt)
        labels = labels.to(run.device, non_blocking=True)
        with run.precision.autocast():
            logits = run.net(images)
            loss = run.task.loss(logits, labels, run.cfg)
            aux, terms = auxiliary_loss(run.model, as_tensors=True)
        total = loss + aux
        watch.observe(total, g)
        if watch.due(g):
            stop_if_diverged(run, watch, bar)
        run.optimizer.zero_grad(set_to_none=True)
        run.precision.step(total, run.optimizer)
        pos.seen += images.shape[0]
        pos.sums.add(loss, terms)
        pos.step = step + 1
        bar.update(1)
        if not bar.disable and step % 10 == 0:
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.3f}",
                            **{k: f"{float(v):.3g}" for k, v in terms.items()})
        saver.safe = True
        if checkpoints and step + 1 < run.steps and (
                saver.due(False) if run.world == 1 else watch.due(g) and agree(saver.due(False), run.device)):
            stop_if_diverged(run, watch, bar)  # never a checkpoint of diverged weights
            pos.pause()
            saver.save()
            pos.clock = time.perf_counter()
    pos.pause()
    return loss, terms, lr


def stop_if_diverged(run: Run, watch: DivergenceWatch, bar) -> None:
    bad = watch.first_bad(run.world)
    if bad is not None:
        bar.close()
        g, value = bad
        where = f"epoch {g // run.steps + 1} step {g % run.steps + 1}" if g >= 0 else "a step"
        raise TrainingDiverged(f"training {run.name} diverged at {where} (loss {value}); "
                               "lower --lr or check the operator")


def check_weights(run: Run) -> None:
    """The last update can blow the weights up although every loss seen was finite."""
    broken = [k for k, t in run.model.state_dict().items()
              if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if run.world > 1:  # buffers (BN statistics) are per process: decide together
        flag = torch.tensor(float(bool(broken)), device=run.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and not broken:
            broken = ["(on another process)"]
    if broken:
        raise TrainingDiverged(
            f"training {run.name} diverged: {len(broken)} weight tensors are not finite "
            f"after the last step (e.g. {broken[0]}); lower --lr or check the operator"
        )
