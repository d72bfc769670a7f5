"""poolbench: a reproducible benchmark suite for pooling layers in ConvNets, built around LiftPool."""
__version__ = "0.1.0"

from .auxiliary import auxiliary_loss
from .errors import PoolbenchError, UsageError
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

__all__ = [
    "__version__", "Paper", "PoolSpec", "PoolbenchError", "UsageError", "auxiliary_loss",
    "format_spec", "get_pool", "get_spec", "list_pools", "load_plugin", "parse_spec",
    "plugin_failures", "register_pool", "register_spec",
]
