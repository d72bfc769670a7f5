"""How the training loop runs on this machine: the settings that never change a trained model
(so they stay out of the config hash), mixed precision, the training data order, and the
divergence watch.

``TrainSettings`` travel explicitly: ``poolbench.run`` builds them from its keywords (the
command line's flags are generated from the fields below), the runner's ``RunContext`` carries
them to the suite, and the suite passes them to ``cache.get_trained_model``.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from ..errors import UsageError
from ..options import option
from ..ranges import check_ranges

AMP_MODES = ("off", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainSettings:
    """How a model trains here; none of these changes the weights a recipe trains to."""

    checkpoint_minutes: float = option(
        10.0, "Resume checkpoints at every epoch end and at most this many minutes apart (0: epoch "
        "ends only).", low=0)
    compile_training: bool = option(False, "torch.compile the model for training.")
    loader_workers: int | None = option(
        None, "DataLoader processes for training (default 0 for in-memory data, where loading is a "
        "slice of an array; up to 8 for image folders).", low=0)
    check_every: int | None = option(
        None, "Steps between looks at the divergence flag (default every step on CPU, where looking "
        "is free; 50 on an accelerator, where it is a synchronisation).", low=1)
    eval_every: int | None = option(
        None, "Epochs between learning-curve test errors (default 1; image folders 0: none).", low=0)

    def __post_init__(self):
        check_ranges(self)

    def loader_workers_for(self, dataset: str) -> int:
        if self.loader_workers is not None:
            return self.loader_workers
        return min(8, os.cpu_count() or 1) if dataset == "imagefolder" else 0

    def check_every_for(self, device: str) -> int:
        return self.check_every or (1 if device == "cpu" else 50)

    def eval_every_for(self, dataset: str) -> int:
        if self.eval_every is not None:
            return self.eval_every
        return 0 if dataset == "imagefolder" else 1


# --- mixed precision ---------------------------------------------------------------------------

def default_amp(device: str) -> str:
    """bf16 autocast on CUDA (no loss scaling needed, tensor cores); full float32 elsewhere."""
    return "bf16" if str(device).startswith("cuda") else "off"


def check_amp(amp: str) -> str:
    if amp not in AMP_MODES:
        raise UsageError(f"unknown --amp {amp!r}; choose {', '.join(AMP_MODES)}")
    return amp


class Precision:
    """Autocast for the forward and loss, and a gradient scaler for fp16 (whose small gradients
    underflow without one); bf16 has float32's range and needs none."""

    def __init__(self, amp: str, device: str):
        self.amp = check_amp(amp)
        self.device_type = torch.device(device).type
        self.dtype = _AMP_DTYPES.get(amp)
        self.scaler = torch.amp.GradScaler(self.device_type) if amp == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)   # skipped when the scaled gradients overflowed
        self.scaler.update()


# --- data order --------------------------------------------------------------------------------

class ResumableSampler(Sampler):
    """The order of ``base`` (a RandomSampler drawing from the loader's generator, or a
    DistributedSampler), starting ``skip`` samples in: a run resumed in the middle of an epoch
    sees the rest of the order the interrupted run saw, without loading the skipped samples."""

    def __init__(self, base: Sampler):
        self.base = base
        self.skip = 0

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.base), skip, None)

    def __len__(self) -> int:
        return len(self.base) - self.skip

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)


def train_loader(dataset, batch_size: int, seed: int, rank: int, world: int, workers: int,
                 device: str) -> tuple[DataLoader, ResumableSampler, torch.Generator]:
    """The shuffled, drop-last training loader; the data order is drawn from the returned
    generator (seeded with ``seed``) at each ``iter``, so saving its state at the start of an
    epoch is enough to replay that epoch's order."""
    generator = torch.Generator().manual_seed(seed)
    if world > 1:
        base = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                  drop_last=True)
        batch_size = max(batch_size // world, 1)
    else:
        base = RandomSampler(dataset, generator=generator)
    sampler = ResumableSampler(base)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator,
                        num_workers=workers, drop_last=True,
                        pin_memory=str(device).startswith("cuda"),
                        # with workers, keep them between epochs (their start-up is seconds
                        # for image folders)
                        persistent_workers=workers > 0)
    return loader, sampler, generator


# --- learning curve ---------------------------------------------------------------------------

class EpochSums:
    """Sums of one epoch for its learning-curve point, kept on the device (no host sync)."""

    def __init__(self, saved: dict | None = None):
        saved = saved or {}
        self.loss = saved.get("loss", 0.0)
        self.terms = dict(saved.get("terms", {}))
        self.steps = saved.get("steps", 0)

    def add(self, loss: torch.Tensor, terms: dict) -> None:
        self.loss = self.loss + loss.detach().float()
        for k, v in terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + v
        self.steps += 1

    def state(self) -> dict:
        return {"loss": self.loss, "terms": self.terms, "steps": self.steps}

    def point(self, epoch: int, lr: float) -> dict:
        n = max(self.steps, 1)
        return {"epoch": epoch, "train_loss": float(self.loss) / n, "lr": lr,
                "aux": {k: float(v) / n for k, v in sorted(self.terms.items())}}


# --- divergence ----------------------------------------------------------------------------------

class DivergenceWatch:
    """Remembers, on the device, the first step whose loss was not finite, so that the host
    needs to look (a synchronisation on an accelerator) only every ``every`` steps."""

    def __init__(self, device: str, every: int):
        self.every = every
        self.first = torch.full((), -1, dtype=torch.int64, device=device)
        self.value = torch.zeros((), device=device)

    def observe(self, total: torch.Tensor, step_index: int) -> None:
        bad = ~torch.isfinite(total.detach())
        newly = bad & (self.first < 0)
        self.first = torch.where(newly, step_index, self.first)
        self.value = torch.where(newly, total.detach().float(), self.value)

    def due(self, step_index: int) -> bool:
        return (step_index + 1) % self.every == 0

    def first_bad(self, world: int) -> tuple[int, float] | None:
        """(global step, loss) of the first non-finite loss, or None; under torchrun decided by
        every process together (a lone rank stopping would hang the others)."""
        flag = (self.first >= 0).to(torch.float32)
        if world > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if not bool(flag):
            return None
        step = int(self.first)
        return (step, float(self.value)) if step >= 0 else (-1, math.nan)


def agree(flag: bool, device: str) -> bool:
    """Under torchrun every process must take a snapshot together: rank 0's clock decides."""
    t = torch.tensor(float(flag), device=device)
    torch.distributed.broadcast(t, src=0)
    return bool(t)
