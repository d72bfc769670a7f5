"""Cold torch.compile: each compile's time is its own, not a cache hit of an earlier one."""
from __future__ import annotations

import contextlib
import tempfile

import torch

_WARM: set[str] = set()


@contextlib.contextmanager
def cold_compile():
    """Cold compile times: inductor's caches off (FX graph and AOT autograd caches, and a fresh
    temporary inductor cache directory, so generated C++/Triton code is compiled again) and
    dynamo reset, after a one-time warm-up of the compile machinery in this process (imports,
    worker pool), so that each compile time is its own."""
    # imported here, not at the top: torch._inductor costs about a second to import, paid
    # only by runs that compile (every report and CLI start would pay it otherwise)
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    try:
        from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    except ImportError:  # older torch: the on-disk code cache stays (compile times too low)
        temporary_cache_dir = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(inductor_config.patch(fx_graph_cache=False))
        if hasattr(functorch_config, "enable_autograd_cache"):
            stack.enter_context(functorch_config.patch(enable_autograd_cache=False))
        if temporary_cache_dir is not None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="poolbench-inductor-"))
            stack.enter_context(temporary_cache_dir(tmp))
        torch._dynamo.reset()
        if "warm" not in _WARM:
            try:
                torch.compile(lambda t: (t.relu() * 2).sum(), dynamic=False)(torch.randn(4, 4))
                _WARM.add("warm")
            except Exception:  # noqa: BLE001 - the measured compile will report it
                pass
            torch._dynamo.reset()
        try:
            yield
        finally:
            torch._dynamo.reset()
