"""Shared pieces of the suites: the columns every row carries and cached data bundles."""
from __future__ import annotations

import functools

from ..config import TrainConfig
from ..registry import format_spec, get_spec, parse_spec


def pool_columns(pool: str) -> dict:
    """``pool`` is the canonical spec string (unique per option set); source/version from the registry."""
    name, options = parse_spec(pool)
    spec = get_spec(name)
    canonical = format_spec(name, options)
    return {
        "pool": canonical,
        "pool_options": canonical.partition(":")[2],
        "pool_source": spec.source,
        "pool_version": spec.version,
    }


def train_columns(cfg: TrainConfig) -> dict:
    return {**pool_columns(cfg.pool), "model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed,
            "dtype": "float32", "memory_format": "channels_last"}


@functools.lru_cache(maxsize=4)
def _bundle(dataset: str, seed: int, train_size, test_size, data_root):
    from ..train import load_bundle

    cfg = TrainConfig(dataset=dataset, seed=seed, train_size=train_size, test_size=test_size)
    return load_bundle(cfg, data_root)


def bundle_for(cfg: TrainConfig, data_root: str | None):
    """The dataset of a training config, loaded once per process."""
    return _bundle(cfg.dataset, cfg.seed, cfg.train_size, cfg.test_size, data_root)


class TrainedSuite:
    """Base for suites that evaluate a trained model per (pool, training config)."""

    name = ""

    def cells(self, train_configs: list[TrainConfig], options: dict) -> list[dict]:
        return [{"train": cfg.to_dict(), **options} for cfg in train_configs]

    @staticmethod
    def train_config(cell: dict) -> TrainConfig:
        d = dict(cell["train"])
        d["milestones"] = tuple(d.get("milestones", ()))
        return TrainConfig(**d)

    def trained(self, cell: dict, ctx):
        from ..train import get_trained_model

        cfg = self.train_config(cell)
        bundle = bundle_for(cfg, ctx.data_root)
        return cfg, bundle, get_trained_model(cfg, bundle, ctx.device, ctx.progress, ctx.checkpoint_for(cell))

    def error_row(self, cell: dict, ctx, message: str) -> dict:
        from ..store import make_row

        return make_row(train_columns(self.train_config(cell)), "error", None, error=message)
