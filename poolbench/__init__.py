"""poolbench: a reproducible benchmark suite for pooling layers in ConvNets, built around LiftPool."""
from . import pools  # the built-in operators register as they import: explicitly, first
from .api import RunResult, run
from .auxiliary import auxiliary_loss
from .errors import PoolbenchError, UsageError
from .models import create_model, swap_pools
from .registry import (
    Paper,
    PoolSpec,
    format_spec,
    get_pool,
    get_spec,
    list_pools,
    load_plugin,
    parse_spec,
    plugin_failures,
    register_pool,
    register_spec,
)
from .store import load_results
from .version import __version__

__all__ = [
    "__version__", "Paper", "PoolSpec", "PoolbenchError", "RunResult", "UsageError", "auxiliary_loss",
    "create_model", "format_spec", "get_pool", "get_spec", "list_pools", "load_plugin",
    "load_results", "parse_spec", "plugin_failures", "register_pool", "register_spec", "run",
    "swap_pools",
]
