"""FLOPs of a forward pass: torch's FlopCounterMode plus formulas for the ops it leaves at 0.

torch.utils.flop_counter.FlopCounterMode counts convolutions and matrix products (a
multiply-add = 2 FLOPs) and gives every other op 0: pooling, elementwise arithmetic,
activations, normalisation, reductions, FFTs. ``count_flops`` runs the function once under
FlopCounterMode and under a dispatch mode of ours that sees the same aten ops, and returns

* ``counted``: FlopCounterMode's total (convolutions, matmuls);
* ``extra``: our formulas (``OP_FORMULAS``) for every other op that does arithmetic;
* ``total`` = counted + extra;
* ``unmodelled``: ops that are neither counted, nor modelled, nor known to be free (data
  movement, views, creation): their names and call counts, left out of ``total``, so that a
  gap is visible instead of silently zero.

Convention (``CONVENTION``): a multiply-add is 2 FLOPs (torch's, for conv/matmul); max and
average pooling cost one op per window element per output (``out * kh * kw``), adaptive
pooling the summed window sizes; every elementwise op (arithmetic, comparison, selection,
activation, transcendental functions included) one op per output element, a fused
multiply-add (addcmul, addcdiv, add with a scale) two; reductions one op per input element
(a norm two, a variance three, a softmax five per element); batch norm in eval two per element
(a multiply-add), plus three in training (the statistics); layer/group norm five per element;
an FFT of n points 5 n log2 n per complex transform (half for real input or output); data
movement (copies, views, padding, concatenation, nearest up-sampling, indexing, unpooling) and
random number generation 0. Only ops that run are counted, so two implementations of the same
function may differ (e.g. LiftPool's fast path computes tanh as 2 sigmoid(2u) - 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

CONVENTION = (
    "FLOPs of one forward pass; multiply-add = 2 FLOPs; flops_counted = "
    "torch.utils.flop_counter.FlopCounterMode (conv, matmul); flops_total adds poolbench's "
    "formulas: max/avg pooling one op per window element per output, elementwise ops one per "
    "output element (fused multiply-add two), reductions one per input element, batch norm two "
    "per element in eval, FFT 5 n log2 n; data movement and random numbers 0"
)

# --- op tables (aten overload-packet names, without the trailing "_" of in-place variants) ----

FREE_OPS = frozenset("""
view _unsafe_view reshape _reshape_alias t transpose permute expand expand_as unsqueeze squeeze
slice select split split_with_sizes unsafe_split chunk unbind narrow alias as_strided detach
clone copy _to_copy to contiguous empty empty_like empty_strided empty_permuted new_empty
new_empty_strided zeros zeros_like new_zeros ones ones_like new_ones full full_like new_full fill
zero cat stack flip roll repeat constant_pad_nd pad reflection_pad1d reflection_pad2d
reflection_pad3d replication_pad1d replication_pad2d replication_pad3d _pad_circular
upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d
_upsample_nearest_exact2d _upsample_nearest_exact3d _unsafe_index index index_select gather
scatter index_put _index_put_impl masked_fill max_unpool2d max_unpool3d view_as_real
view_as_complex _local_scalar_dense lift_fresh lift_fresh_copy scalar_tensor randn randn_like
rand rand_like randint randint_like randperm bernoulli normal uniform exponential arange
linspace pixel_shuffle pixel_unshuffle im2col unfold diagonal movedim _conj resolve_conj
resolve_neg real imag set resize is_same_size _has_compatible_shallow_copy_type
""".split())

# elementwise: FLOPs per output element
ELEMENTWISE = {name: 1 for name in """
add sub rsub mul div neg abs sign sgn relu exp exp2 expm1 log log2 log10 log1p sqrt rsqrt pow
square reciprocal sigmoid tanh softplus clamp clamp_min clamp_max clip maximum minimum fmax fmin
where gt lt ge le eq ne logical_and logical_or logical_not logical_xor bitwise_and bitwise_or
bitwise_not bitwise_xor threshold hardtanh leaky_relu gelu silu elu selu celu mish hardsigmoid
hardswish erf erfc sin cos tan asin acos atan atan2 sinh cosh asinh acosh atanh floor ceil round
trunc frac floor_divide remainder fmod nan_to_num isnan isinf isfinite signbit logit xlogy
heaviside copysign hypot prelu _prelu_kernel rrelu_with_noise glu
""".split()}
ELEMENTWISE.update({"addcmul": 2, "addcdiv": 2, "lerp": 3, "softshrink": 2, "hardshrink": 1})

# reductions: FLOPs per INPUT element
REDUCTIONS = {name: 1 for name in """
sum mean amax amin aminmax prod all any argmax argmin nansum nanmean count_nonzero cumsum cumprod
cummax cummin logcumsumexp median nanmedian mode kthvalue
""".split()}
REDUCTIONS.update({"linalg_vector_norm": 2, "norm": 2, "frobenius_norm": 2, "var": 3, "std": 3,
                   "var_mean": 3, "std_mean": 3, "logsumexp": 3, "_softmax": 5, "_log_softmax": 5,
                   "softmax": 5, "log_softmax": 5})

POOLING = ("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices",
           "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "_max_pool1d_cpu_forward", "fractional_max_pool2d", "fractional_max_pool3d")
ADAPTIVE_POOLING = ("adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
                    "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool1d",
                    "adaptive_max_pool2d", "adaptive_max_pool3d")
BATCH_NORMS = ("native_batch_norm", "_native_batch_norm_legit",
               "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional",
               "batch_norm", "cudnn_batch_norm", "miopen_batch_norm", "_batch_norm_impl_index",
               "_batch_norm_with_update", "_batch_norm_no_update", "batch_norm_stats")
OTHER_NORMS = ("native_layer_norm", "native_group_norm", "_fused_rms_norm", "layer_norm",
               "group_norm")


def _numel(t) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _first_tensor(out) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


def _as_tuple(v, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(i) for i in v)
    return v * n if len(v) == 1 else v


def pooling_flops(name: str, args: tuple, out: torch.Tensor) -> int:
    """One op per window element per output: out.numel() * prod(kernel_size)."""
    dims = 3 if "3d" in name else 1 if "1d" in name else 2
    kernel = _as_tuple(args[1], dims)
    return _numel(out) * math.prod(kernel)


def _adaptive_lengths(size_in: int, size_out: int) -> int:
    """Sum of the window lengths of adaptive pooling along one axis (torch's start/end rule)."""
    total = 0
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)
        total += end - start
    return total


def adaptive_pooling_flops(name: str, args: tuple, out: torch.Tensor) -> int:
    """One op per window element per output: the summed window sizes of every output."""
    x = args[0]
    dims = 3 if "3d" in name else 1 if "1d" in name else 2
    spatial_in = x.shape[-dims:]
    spatial_out = out.shape[-dims:]
    lead = x.numel() // max(1, math.prod(spatial_in))
    per_axis = [_adaptive_lengths(i, o) for i, o in zip(spatial_in, spatial_out)]
    # every output window is a product of its per-axis windows: the sum factorises
    return lead * math.prod(per_axis)


def _training_flag(args: tuple, kwargs: dict) -> bool:
    if "training" in kwargs:
        return bool(kwargs["training"])
    for a in args[1:]:
        if isinstance(a, bool):
            return a
    return False


def fft_flops(name: str, args: tuple, out: torch.Tensor) -> int:
    """5 n log2 n per complex transform of n points (2.5 n log2 n with real input or output)."""
    x = args[0]
    dims = args[1] if len(args) > 1 else ()
    dims = [dims] if isinstance(dims, int) else list(dims)
    if name == "_fft_c2r":  # the real output carries the transform length
        ref, factor = out, 2.5
    else:
        ref, factor = x, (2.5 if name == "_fft_r2c" else 5.0)
    n = math.prod(ref.shape[d] for d in dims) if dims else 1
    if n <= 1:
        return 0
    return int(round(factor * ref.numel() * math.log2(n)))


def attention_flops(args: tuple) -> int:
    """torch's fused multi-head attention (``nn.MultiheadAttention``'s inference fast path; query
    and key batch-first, (B, L, E) and (B, S, E)): the q, k, v and output projections as matrix
    products (2 per multiply-add, biases free, as FlopCounterMode counts ``addmm``), the scores
    and the weighted values (2 B L S E each) and the softmax (5 per score, as ``_softmax``)."""
    query, key, heads = args[0], args[1], int(args[4])
    embed = query.shape[-1]
    bl, bs, s = query.numel() // embed, key.numel() // embed, key.shape[-2]
    projections = 2 * (bl + 2 * bs + bl) * embed * embed
    return projections + 2 * 2 * bl * s * embed + 5 * heads * bl * s


def elementwise_flops(name: str, args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    per = ELEMENTWISE[name]
    if name in ("add", "sub"):
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        if not isinstance(alpha, torch.Tensor) and alpha not in (1, -1):
            per = 2
    if out.is_complex():  # a complex add is 2 real ops, a complex multiply 6
        per *= 6 if name in ("mul", "div") else 2
    return per * out.numel()


def op_flops(func, args: tuple, kwargs: dict, out) -> int | None:
    """FLOPs of one aten call under the convention, or None when no formula models it
    (and it is not known to be free)."""
    name = func.overloadpacket.__name__
    base = name[:-1] if name.endswith("_") else name
    if base in FREE_OPS or name in FREE_OPS:
        return 0
    res = _first_tensor(out)
    if res is None:
        res = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if base in ("max", "min"):  # binary (elementwise) or a reduction
        if len(args) > 1 and isinstance(args[1], torch.Tensor):
            return _numel(res)
        return _numel(args[0])
    if base in ELEMENTWISE:
        return elementwise_flops(base, args, kwargs, res) if res is not None else 0
    if base in REDUCTIONS:
        return REDUCTIONS[base] * _numel(args[0])
    if base in POOLING:
        return pooling_flops(base, args, res)
    if base in ADAPTIVE_POOLING:
        return adaptive_pooling_flops(base, args, res)
    if base in BATCH_NORMS:
        x = args[0]
        return (2 + (3 if _training_flag(args, kwargs) else 0)) * _numel(x)
    if base in OTHER_NORMS:
        return 5 * _numel(args[0])
    if base in ("_fft_c2c", "_fft_r2c", "_fft_c2r"):
        return fft_flops(base, args, res)
    if base in ("upsample_bilinear2d", "_upsample_bilinear2d_aa", "grid_sampler_2d",
                "upsample_linear1d"):
        return 8 * _numel(res)       # 4 multiply-adds per output
    if base in ("upsample_bicubic2d", "_upsample_bicubic2d_aa"):
        return 32 * _numel(res)      # 16 multiply-adds per output
    if base in ("index_add", "scatter_add", "scatter_reduce", "index_reduce"):
        src = args[3] if len(args) > 3 else None
        return _numel(src)
    if base in ("sort", "topk", "argsort"):
        x = args[0]
        dim = -1
        n = x.shape[dim] if x.dim() else 1
        return _numel(x) * max(1, math.ceil(math.log2(max(n, 2))))
    if base == "_native_multi_head_attention":
        return attention_flops(args)
    if base == "col2im":
        return _numel(args[0])
    if base == "_convolution_pointwise":   # oneDNN's fused conv + activation (LiftPool's CPU path)
        weight, bias = args[1], args[2]
        per_output = 2 * math.prod(weight.shape[1:])           # multiply-adds over C_in/groups x kh x kw
        return _numel(res) * (per_output + (bias is not None) + 1)   # + bias + the activation
    return None


@dataclass
class FlopCount:
    counted: int = 0                      # torch's FlopCounterMode
    extra: int = 0                        # poolbench's formulas
    by_op: dict[str, int] = field(default_factory=dict)
    unmodelled: dict[str, int] = field(default_factory=dict)  # op -> calls

    @property
    def total(self) -> int:
        return self.counted + self.extra


class _FormulaMode(TorchDispatchMode):
    """Counts, with ``op_flops``, every aten op that FlopCounterMode does not count."""

    def __init__(self, result: FlopCount):
        super().__init__()
        self.result = result

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if packet in flop_registry:
            return out
        flops = op_flops(func, args, kwargs, out)
        name = str(packet)
        if flops is None:
            self.result.unmodelled[name] = self.result.unmodelled.get(name, 0) + 1
        elif flops:
            self.result.extra += flops
            self.result.by_op[name] = self.result.by_op.get(name, 0) + flops
        return out


def count_flops(fn: Callable[[], Any]) -> FlopCount:
    """Run ``fn()`` once and count its FLOPs (see the module docstring)."""
    result = FlopCount()
    counter = FlopCounterMode(display=False)
    with counter, _FormulaMode(result):
        fn()
    result.counted = int(counter.get_total_flops())
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        result.by_op[str(op)] = result.by_op.get(str(op), 0) + int(flops)
    return result


def module_flops(module: torch.nn.Module, x: torch.Tensor) -> FlopCount:
    """FLOPs of ``module(x)`` in eval mode without gradients (the inference forward)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return count_flops(lambda: module(x))
    finally:
        module.train(was_training)
