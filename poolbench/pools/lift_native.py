"""LiftDownPool's native CPU kernel (``lift_kernel.c``), the fast path's CPU float32 engine.

``lift_fast.lift_down`` and ``lift_fast.lift_sum`` hand a call here when ``usable`` says so:
CPU, float32, no autocast, channels a multiple of 16, and the default branch structure
(depthwise K-tap conv, channel-wise 1x1 weight, no biases; the same K <= 16 and padding for P
and U). Everything else (CUDA, bf16, injected branches, grouped convs) keeps the torch fast
path, which computes the same function.

Why C: the torch fast path needs ~20 memory passes per lifting and its backward as many again;
the kernel lifts one line (2n positions x C channels) at a time in L1-sized scratch and its
backward recomputes the line rather than reading saved intermediates. Measured side by side
with ``poolbench bench lift --train`` (the lift/max training step ratio).

The kernel is compiled on first use with the system C compiler (``$CC``, default ``cc``) for
this CPU (``-march=native``), into ``<POOLBENCH_CACHE>/kernels/`` under a name keyed by the
source, the flags and the CPU, so machines sharing a home directory never load each other's
build. Without a compiler (or when ``POOLBENCH_NATIVE=0``) the torch fast path runs instead,
after one warning naming the cause. Threads: built with ``-fopenmp``, the kernel splits the
batch over ``torch.get_num_threads()`` threads of the OpenMP runtime torch has already loaded
(the same ``libgomp.so.1``), so torch's thread setting governs it and nothing oversubscribes
the cores; the partition is static, so results do not depend on timing. A compiler without
OpenMP gives a serial kernel, used only when torch runs on one thread.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..atomic import is_disk_full
from ..config import cache_dir
from .lift_ops import _pad_index

SOURCE = Path(__file__).with_name("lift_kernel.c")
FLAGS = ("-O3", "-march=native", "-ffast-math", "-ffp-contract=fast", "-std=gnu11", "-fPIC")
# Linked apart from the compile and without -ffast-math: a shared library linked with it gets
# crtfastmath.o, whose constructor turns on flush-to-zero and denormals-are-zero for the whole
# process when the library loads, changing every later computation that meets a denormal.
LINK = ("-shared",)
OPENMP = ("-fopenmp",)   # dropped where the compiler has none: the kernel then runs serially
CL = torch.channels_last
BLOCK, MAX_TAPS = 16, 16   # lift_kernel.c's VB and KMAX: channels in blocks of 16, K <= 16

_lock = threading.Lock()
_state: dict = {}          # "lib": the loaded library or None; "why": the reason it is None


def _cpu_key() -> str:
    """What makes a -march=native build valid: the architecture and the CPU's feature flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                flags += line
    except OSError:
        flags = platform.processor()
    return f"{platform.machine()}|{flags}"


def _build(cc: list[str], flags: tuple, extra: tuple = (), source: Path = SOURCE) -> Path:
    """The compiled kernel for this source, compiler, flags and CPU (built unless cached):
    compiled with ``flags + extra``, linked with ``LINK + extra``."""
    key = hashlib.sha256(b"|".join([source.read_bytes(), " ".join(flags + extra).encode(),
                                    " ".join(LINK).encode(), " ".join(cc).encode(),
                                    _cpu_key().encode()])).hexdigest()[:16]
    out = cache_dir() / "kernels" / f"lift_kernel-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    obj = tmp[:-3] + ".o"
    try:
        for command in ([*cc, *flags, *extra, "-c", str(source), "-o", obj],
                        [*cc, *LINK, *extra, obj, "-o", tmp, "-lm"]):
            proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                errors = [ln for ln in proc.stderr.splitlines() if "error" in ln] or ["(no output)"]
                raise RuntimeError(f"{' '.join(cc)} failed: {errors[0].strip()}")
        os.replace(tmp, out)   # atomic: a concurrent build or a reader never sees half a file
    finally:
        for leftover in (tmp, obj):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return out


def _build_any(cc: list[str], source: Path) -> Path:
    """``_build`` with OpenMP, or without it where the compiler has none."""
    try:
        return _build(cc, FLAGS, OPENMP, source)
    except RuntimeError:
        return _build(cc, FLAGS, (), source)


def _declare(lib) -> None:
    p, i, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p
    common = [p, i, i, i, i, i, i, p, p, p, p, p, p]
    lib.lift_forward.argtypes = common + [p, p, p, p, p, p, i, d, i]
    lib.lift_backward.argtypes = common + [p, p, p, p, p, p, p, d, i]
    lib.lift_forward.restype = lib.lift_backward.restype = lib.lift_openmp.restype = i
    lib.lift_openmp.argtypes = []


def library():
    """The loaded kernel, or None (with the reason in ``why()``); built once per process."""
    with _lock:
        if "lib" not in _state:
            _state["lib"], _state["why"] = None, ""
            cc = shlex.split(os.environ.get("CC") or "cc")
            if os.environ.get("POOLBENCH_NATIVE", "1") == "0":
                _state["why"] = "POOLBENCH_NATIVE=0"
            elif shutil.which(cc[0]) is None:
                _state["why"] = f"no C compiler ({cc[0]!r} not found)"
            else:
                try:
                    lib = ctypes.CDLL(str(_build_any(cc, SOURCE)))
                    _declare(lib)
                    _state["lib"] = lib
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    _state["why"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    if is_disk_full(exc) or "No space left" in str(exc):
                        _state["why"] = f"no space left in {cache_dir() / 'kernels'}"
            if _state["lib"] is None and _state["why"] != "POOLBENCH_NATIVE=0":
                fix = ("free space there or point POOLBENCH_CACHE elsewhere"
                       if _state["why"].startswith("no space left") else
                       "install a C compiler or set CC")
                warnings.warn(f"LiftPool's native CPU kernel is unavailable ({_state['why']}): "
                              f"the torch fast path runs instead (slower on CPU); {fix}, or "
                              "POOLBENCH_NATIVE=0 to silence this", RuntimeWarning, stacklevel=3)
        return _state["lib"]


def load(source: str | os.PathLike):
    """Another version of ``lift_kernel.c`` built and loaded beside this one (with OpenMP where
    the compiler has it), for ``using``: A/B timing of kernel changes. Raises RuntimeError
    (one line) when it cannot be built."""
    cc = shlex.split(os.environ.get("CC") or "cc")
    try:
        lib = ctypes.CDLL(str(_build_any(cc, Path(source))))
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"could not build {source}: {str(exc).splitlines()[0]}") from exc
    _declare(lib)
    return lib


@contextlib.contextmanager
def using(lib):
    """Run ``lib`` (from ``load``) instead of this source's build inside the block."""
    library()
    with _lock:
        previous, _state["lib"] = _state["lib"], lib
    try:
        yield
    finally:
        with _lock:
            _state["lib"] = previous


def why() -> str:
    """Why ``library()`` is None ('' when it is loaded or was never asked for)."""
    return _state.get("why", "")


def _plain_branch(b, c: int) -> bool:
    return (b.g1 == c and b.g2 == c and b.bias_k is None and b.bias_1 is None
            and b.weight_k.dtype == torch.float32 and b.weight_k.device.type == "cpu")


def usable(x: Tensor, predictor, updater) -> bool:
    """Whether this call can run on the kernel (and the kernel can be loaded)."""
    c = x.shape[1]
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and x.numel() > 0 and not torch.is_autocast_enabled("cpu")):
        return False
    if c % BLOCK or predictor.kernel_size > MAX_TAPS:
        return False
    if not (_plain_branch(predictor, c) and _plain_branch(updater, c)
            and predictor.kernel_size == updater.kernel_size
            and predictor.padding == updater.padding
            and predictor.padding_mode == updater.padding_mode):
        return False
    lib = library()
    return lib is not None and (torch.get_num_threads() == 1 or bool(lib.lift_openmp()))


@functools.lru_cache(maxsize=256)
def _index(n: int, before: int, after: int, mode: str) -> Tensor:
    """Source position of every position of the padded line (-1: a zero); never written to."""
    if mode == "zeros":
        idx = torch.arange(-before, n + after)
        idx[(idx < 0) | (idx >= n)] = -1
    else:
        idx = _pad_index(n, before, after, mode, "cpu")
    return idx.to(torch.int32).contiguous()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _Weights:
    """P's and U's parameters in the kernel's layout: taps (K, C), 1x1 weights (C)."""

    def __init__(self, predictor, updater, n_w: int, n_h: int):
        c, k = predictor.channels, predictor.kernel_size
        self.c, self.k = c, k
        with torch.no_grad():
            self.t = [predictor.weight_k.view(c, k).t().contiguous(),
                      predictor.weight_1.reshape(c).contiguous(),
                      updater.weight_k.view(c, k).t().contiguous(),
                      updater.weight_1.reshape(c).contiguous()]
        pad = (*predictor.padding, predictor.padding_mode)
        self.idx_w, self.idx_h = _index(n_w, *pad), _index(max(n_h, 1), *pad)

    def args(self):
        return [self.idx_w.data_ptr(), self.idx_h.data_ptr(), *(t.data_ptr() for t in self.t)]

    def grads(self, flat: Tensor):
        """(P's weight_k, weight_1, U's weight_k, weight_1) gradients from the kernel's sums."""
        c, k = self.c, self.k
        parts = flat.to(torch.float32).split([k * c, c, k * c, c])
        return (parts[0].view(k, c).t().reshape(c, 1, k).contiguous(), parts[1].view(c, 1),
                parts[2].view(k, c).t().reshape(c, 1, k).contiguous(), parts[3].view(c, 1))


def _losses(ss: Tensor, numel_h: int, loss: str, vertical: bool):
    """(c_u, c_p) from the per-sample sums of squares (hu, hp, vu_s, vp_s, vu_d, vp_d), and
    the scales k with d loss / d diff = k * diff for the backward (as functions of the loss
    gradients)."""
    tot = ss.sum(0)
    groups_u = [(0, numel_h)] + ([(2, numel_h // 2), (4, numel_h // 2)] if vertical else [])
    groups_p = [(1, numel_h)] + ([(3, numel_h // 2), (5, numel_h // 2)] if vertical else [])
    if loss == "mse":
        val = lambda gs: sum(tot[j] / n for j, n in gs)                    # noqa: E731
        scale = {j: 2.0 / n for j, n in groups_u + groups_p}
    else:
        val = lambda gs: sum(tot[j].sqrt() for j, _ in gs)                 # noqa: E731
        scale = {j: (1.0 / float(tot[j].sqrt()) if tot[j] > 0 else 0.0)
                 for j, _ in groups_u + groups_p}
    return val(groups_u).float(), val(groups_p).float(), scale


class _NativeLiftFn(torch.autograd.Function):
    """x -> bands (2-D: LL, LH, HL, HH; 1-D: s, d; with ``sel``: the sum of the bands selected
    by its bits, 1 LL, 2 LH, 4 HL, 8 HH)[, c_u, c_p], channels_last, on the kernel."""

    @staticmethod
    def forward(ctx, x, two_d, predictor, updater, loss, loss_vertical, sel, *params):
        return _forward(ctx, x, two_d, predictor, updater, loss, loss_vertical, sel)

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "LiftPool impl='fast' computes first-order gradients only (its backward is "
                "hand-written); for double backward / create_graph=True use impl='reference'")
        lib = library()
        nb = 1 if ctx.sel else 4 if ctx.two_d else 2
        gb, (gcu, gcp) = grads[:nb], (grads[nb:] + (None, None))[:2]
        if ctx.sel:   # every selected band has the gradient of their sum
            gb = tuple(gb[0] if ctx.sel >> j & 1 else None for j in range(4))
        xc = ctx.xc if ctx.xc is not None else ctx.saved_tensors[0].contiguous(memory_format=CL)
        n, c, h, w = xc.shape
        conv: dict = {}

        def nhwc(g):   # one channels_last copy per distinct gradient (summed bands share one)
            if g is None:
                return None
            if id(g) not in conv:
                conv[id(g)] = g.contiguous(memory_format=CL)
            return conv[id(g)]
        gbc = [nhwc(g) for g in gb] + [None] * (4 - len(gb))
        k = torch.zeros(6, dtype=torch.float32)
        for j, s in ctx.scale.items():
            g = gcu if j % 2 == 0 else gcp
            if g is not None:
                k[j] = float(g) * s
        gx = torch.empty((n, h, w, c), dtype=torch.float32)
        wt: _Weights = ctx.wt
        size = 2 * (wt.k * wt.c + wt.c)

        threads = torch.get_num_threads()
        acc = torch.zeros((threads, size), dtype=torch.float64)   # one per thread, summed in order
        rc = lib.lift_backward(xc.data_ptr(), n, h, w, c, wt.k, int(ctx.two_d), *wt.args(),
                               ctx.sd.data_ptr(), *(_ptr(g) for g in gbc), k.data_ptr(),
                               gx.data_ptr(), acc.data_ptr(), threads)
        if rc != 0:
            raise MemoryError("LiftPool's native kernel could not allocate its scratch")
        acc = acc.sum(0)
        gx = gx.permute(0, 3, 1, 2)
        if not ctx.x_cl:
            gx = gx.contiguous()
        gp = wt.grads(acc)
        need = ctx.needs_input_grad
        pg = (gp[0] if need[7] else None, gp[1] if need[8] else None, None, None)
        ug = (gp[2] if need[11] else None, gp[3] if need[12] else None, None, None)
        return (gx if need[0] else None, None, None, None, None, None, None, *pg, *ug)


def _forward(ctx, x, two_d, predictor, updater, loss, loss_vertical, sel=0):
    lib = library()
    x_cl = x.is_contiguous(memory_format=CL)
    xc = x.contiguous(memory_format=CL)
    n, c, h, w = xc.shape
    wt = _Weights(predictor, updater, w // 2, h // 2 if two_d else 1)
    sd = torch.empty((2, n, h, w // 2, c), dtype=torch.float32)
    y = None
    if sel:
        bands = [y := torch.empty((n, h // 2, w // 2, c), dtype=torch.float32)]
    elif two_d:
        bands = [torch.empty((n, h // 2, w // 2, c), dtype=torch.float32) for _ in range(4)]
    else:
        bands = [sd[0], sd[1]]
    ss = torch.zeros((n, 6), dtype=torch.float64) if loss is not None else None
    outs = [_ptr(b) for b in bands] if two_d and not sel else [None] * 4

    rc = lib.lift_forward(xc.data_ptr(), n, h, w, c, wt.k, int(two_d), *wt.args(), sd.data_ptr(),
                          *outs, _ptr(y), sel, _ptr(ss), torch.get_num_threads())
    if rc != 0:
        raise MemoryError("LiftPool's native kernel could not allocate its scratch")
    outputs = tuple(b.permute(0, 3, 1, 2) for b in bands)
    c_u = c_p = None
    scale: dict = {}
    if loss is not None:
        c_u, c_p, scale = _losses(ss, x.numel() // 2, loss, two_d and loss_vertical)
    if ctx is not None:
        if xc is x:
            ctx.save_for_backward(x)
            ctx.xc = None
        else:
            ctx.xc = xc   # our own copy: nothing else can modify it
        ctx.two_d, ctx.sd, ctx.wt, ctx.scale, ctx.x_cl, ctx.sel = two_d, sd, wt, scale, x_cl, sel
        ctx.set_materialize_grads(False)
    return outputs if loss is None else (*outputs, c_u, c_p)


def lift_down(x: Tensor, predictor, updater, loss: str | None, loss_vertical: bool, two_d: bool,
              params: tuple, need: bool, sel: int = 0):
    """lift_fast.lift_down's contract on the kernel: (bands, c_u, c_p), bands channels_last;
    with ``sel`` (2-D), bands is (the sum of the selected bands,)."""
    if need:
        out = _NativeLiftFn.apply(x, two_d, predictor, updater, loss, loss_vertical, sel, *params)
    else:
        with torch.no_grad():
            out = _forward(None, x, two_d, predictor, updater, loss, loss_vertical, sel)
    nb = 1 if sel else 4 if two_d else 2
    if loss is None:
        return out[:nb], None, None
    return out[:nb], out[nb], out[nb + 1]
