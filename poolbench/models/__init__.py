"""Backbones and pool surgery.

``create_model(name, num_classes, pool=..., policy=...)`` builds a backbone (Normalize first;
``name`` may carry ``:padding=circular``) and puts a registered pooling operator at its pooling
points; ``swap_pools`` does the surgery on any model. See ``surgery`` for the policies and the output-size rule.
"""
from .factory import (
    PADDINGS,
    ModelInfo,
    PoolNet,
    create_model,
    list_models,
    model_info,
    model_spec,
    parse_model,
    register_model,
    set_padding,
)
from .normalize import Normalize
from .surgery import POLICIES, PoolSite, pool_sites, swap_pools

__all__ = [
    "ModelInfo", "Normalize", "PADDINGS", "POLICIES", "PoolNet", "PoolSite", "create_model", "list_models",
    "model_info", "model_spec", "parse_model", "pool_sites", "register_model", "set_padding", "swap_pools",
]
