"""Process plumbing: torchrun ranks and barriers, devices, seeds and cross-process file locks.

Everything that depends on which process or machine runs a cell, and nothing that depends on
what the cell computes; the runner, the training loop and the suites all stand on it.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import datetime
import fcntl
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from .atomic import lock_file
from .errors import UsageError


def dist_info() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless launched by torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: str) -> None:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.distributed.is_initialized():
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    # rank 0 evaluates and writes alone while the others wait at a barrier: the default
    # timeout (10 min for nccl) is shorter than an ImageNet-C evaluation
    minutes = float(os.environ.get("POOLBENCH_DIST_TIMEOUT_MIN", "360"))
    torch.distributed.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=minutes))
    atexit.register(_destroy_process_group)
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def is_main_process() -> bool:
    return dist_info()[0] == 0


def barrier() -> None:
    if dist_info()[1] > 1:
        torch.distributed.barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | None) -> str:
    device = device or os.environ.get("POOLBENCH_DEVICE") or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise UsageError(f"unknown device {device!r}; use cpu or cuda[:N]")
    return device


def worker_devices(device: str, workers: int, count: int | None = None) -> list[str]:
    """The device of each of ``workers`` worker processes: with plain ``cuda`` worker i gets
    ``cuda:i`` (one model per GPU; round robin when there are more workers than the ``count``
    GPUs visible); an explicit ``cuda:K``, ``cpu`` or ``mps`` is every worker's."""
    if device != "cuda":
        return [device] * workers
    count = torch.cuda.device_count() if count is None else count
    if count < 1:
        raise UsageError("--device cuda asked for, but no CUDA device is visible; use --device cpu")
    return [f"cuda:{i % count}" for i in range(workers)]


def free_cores(window: float = 0.25) -> int:
    """Cores this process may use (its affinity) less those other processes keep busy now, at
    least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    busy = int(busy_cores(window) + 0.5)
    return max(1, cores - min(busy, cores - 1))


def busy_cores(window: float = 0.25) -> float:
    """Cores that other processes keep busy: the CPU time the machine actually used over
    ``window`` seconds (/proc/stat), less this process's own. Not the one-minute load average,
    which lags: right after an install it still counts a busy core on an idle machine. Where
    /proc/stat is missing, the load average it is."""
    first, own = _cpu_jiffies(), time.process_time()
    if first is None:
        try:
            return float(os.getloadavg()[0])
        except OSError:
            return 0.0
    time.sleep(window)
    second, own = _cpu_jiffies(), time.process_time() - own
    busy, total = second[0] - first[0], second[1] - first[1]
    if total <= 0:
        return 0.0
    machine = busy / total * (os.cpu_count() or 1)
    return max(0.0, machine - own / window)


def _cpu_jiffies() -> tuple[float, float] | None:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat's "cpu" line."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if len(fields) < 5 or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    values = [float(v) for v in fields[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def default_threads(workers: int = 1) -> int:
    """torch threads per process when --threads is not given: POOLBENCH_THREADS, else the count
    torch took from OMP_NUM_THREADS, else the free cores shared among ``workers`` processes.
    More threads than free cores collapses throughput (every op waits for its slowest thread,
    which waits for a core), so the default never oversubscribes."""
    env = os.environ.get("POOLBENCH_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise UsageError(f"POOLBENCH_THREADS must be a positive integer, got {env!r}") from None
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, torch.get_num_threads() // max(1, workers))
    # torchrun's processes on this machine share its cores too
    sharing = max(1, workers) * max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, free_cores() // sharing)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse instead of unmapping them.

    glibc serves blocks above its mmap threshold (at most 32 MB by default) with a fresh
    mmap and unmaps them on free, so every batch whose activations are larger (128 x 32 x 224 x
    224 floats is 822 MB) is page-faulted and zeroed anew by the kernel. Measured on the
    2-core machine, a convnet's evaluation at 224 px spent more system than user time and ran
    at 17 ms/img; with these settings 5-8 ms/img; 32-px training is unchanged. Skipped where the
    user chose the allocator (the MALLOC_* / GLIBC_TUNABLES variables, an LD_PRELOADed one),
    with POOLBENCH_MALLOC=0, and off glibc. Returns whether the setting was applied."""
    if os.environ.get("POOLBENCH_MALLOC") == "0" or any(os.environ.get(v) for v in _MALLOC_ENV):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return False
    if mallopt is None:
        return False
    limit = 2 ** 31 - 1  # mallopt takes an int
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op thread count set to ``count`` for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)


def memory_format_for(device: str) -> torch.memory_format:
    # channels_last is several times faster for convolutions and pooling on CPU and on
    # recent GPUs (docs/liftpool.md, measured speed facts).
    return torch.channels_last



@contextlib.contextmanager
def file_lock(path: Path):
    """Exclusive lock so that parallel workers never train the same checkpoint twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock_file(str(path) + ".lock") as fd:  # never through a planted link, never truncated
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


