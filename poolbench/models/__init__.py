"""Backbones and pool surgery.

``create_model(name, num_classes, pool=..., policy=...)`` builds a backbone (Normalize first)
and puts a registered pooling operator at its pooling points; ``swap_pools`` does the surgery
on any model. See ``surgery`` for the policies and the output-size rule.
"""
from .factory import ModelInfo, PoolNet, create_model, list_models, model_info, register_model
from .normalize import Normalize
from .surgery import POLICIES, PoolSite, pool_sites, swap_pools

__all__ = [
    "ModelInfo", "Normalize", "POLICIES", "PoolNet", "PoolSite", "create_model", "list_models",
    "model_info", "pool_sites", "register_model", "swap_pools",
]
