"""The operator listing behind `poolbench pools`: metadata plus counts measured at C channels."""
from __future__ import annotations

import torch

from .pools.base import count_parameters
from .registry import get_pool, get_spec, list_pools, plugin_failures


def pool_rows(pattern: str = "*", channels: int = 64) -> list[dict]:
    rows = []
    for name in list_pools(pattern):
        spec = get_spec(name)
        row = {
            "name": spec.name,
            "paper": spec.paper.short() if spec.paper else "",
            "year": spec.year,
            "licence": spec.licence,
            "params": None,
            "buffers": None,
            "stochastic": spec.stochastic,
            "invertible": spec.invertible,
            "source": spec.source,
            "version": spec.version,
            "status": "ok",
            "error": "",
        }
        try:
            with torch.random.fork_rng():
                row["params"], row["buffers"] = count_parameters(get_pool(name, channels))
        except Exception as exc:  # a plugin whose factory fails is shown, not fatal
            row["status"], row["error"] = "error", f"{type(exc).__name__}: {exc}"
        rows.append(row)
    for failure in plugin_failures():
        rows.append({
            "name": failure.name, "paper": "", "year": None, "licence": "", "params": None, "buffers": None,
            "stochastic": False, "invertible": False, "source": failure.source,
            "version": failure.version, "status": "broken", "error": failure.error,
        })
    return rows
