"""The suite contract, typed options, and the pieces trained suites share.

A suite is a class with a frozen ``Options`` dataclass, built once from the preset's table of
the suite and the flags (flags win) by :func:`build_options`; ``cells`` expands a run into JSON
cells (each hashed by the runner), ``run_cell`` measures one cell into tidy rows, ``table``
turns stored rows into the wide view, ``notes`` says how to read it.
"""
from __future__ import annotations

import abc
import difflib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import pandas as pd
import torch

from ..config import TrainConfig
from ..errors import UsageError
from ..implementations import column_names, columns
from ..models.factory import model_info
from ..options import build_options, options_dict
from ..pools.base import count_parameters
from ..process import is_main_process
from ..registry import canonical_spec, get_spec
from ..store import Measured, make_row
from ..training.cache import checkpoint_path, get_trained_model
from ..training.loop import load_bundle

ALEXNET = "alexnet"


# --- the contract ------------------------------------------------------------------------------

class Suite(abc.ABC):
    """What every suite implements; the library entry point (``poolbench.run``) needs no more."""

    name: ClassVar[str]
    Options: ClassVar[type]
    #: the heading of the suite's section in reports (default: the name)
    title: ClassVar[str] = ""
    #: where the suite stands in `poolbench run all` and in reports (lower first)
    order: ClassVar[int] = 100
    #: False for suites whose cells must run one after another in one process (timing)
    parallel: ClassVar[bool] = True
    #: the metric whose verdict the narrow terminal table shows (default: the first with a Δ)
    verdict_metric: ClassVar[str | None] = None

    @property
    def summary(self) -> str:
        """The first paragraph of the class docstring: the suite's help on the command line."""
        return " ".join((type(self).__doc__ or self.name).strip().split("\n\n")[0].split())

    def options(self, values: dict[str, Any]):
        return build_options(self.Options, values, self.name)

    def pool_defaults(self, named_pools: tuple[str, ...]) -> dict[str, Any]:
        """Option defaults that depend on whether the user named pools (below the preset)."""
        return {}

    def run_settings(self, options) -> dict[str, Any]:
        """``RunContext`` fields the cells need that never change a result (official data paths)."""
        return {}

    def checkpoint_pool(self, pool: str) -> str:
        """The pool of the cells whose model a ``--checkpoint`` trained with ``pool`` replaces."""
        return pool

    def extra_pools(self, options) -> tuple[str, ...]:
        """Pools the run needs beside the user's (a reference measured on the same images)."""
        return ()

    def prepare(self, cells: list[dict], ctx) -> None:
        """Make what several cells read (a generated corrupted set) before they need it; the
        process executor runs this in its own process while the workers train. Default: none."""

    def training_key(self, cell: dict, ctx) -> str | None:
        """The training ``cell`` still needs (a hash, equal for cells that share it), which
        ``train_ahead`` makes in advance; None: the cell trains nothing, or its model is made."""
        return None

    def train_ahead(self, cell: dict, ctx) -> None:
        """Make the training of ``training_key`` (train and cache the model), so that
        ``run_cell`` then only reads it: the process executor trains every model first and
        evaluates each once its model is made, so that evaluations fill the cores that
        trainings of unequal length leave idle."""

    @abc.abstractmethod
    def cells(self, train_configs: list[TrainConfig], options) -> list[dict]:
        """JSON cells of the run; everything that changes a result is in the cell."""

    @abc.abstractmethod
    def run_cell(self, cell: dict, ctx) -> list[dict]:
        """Tidy rows of one cell (``store.make_row``)."""

    @abc.abstractmethod
    def error_row(self, cell: dict, ctx, message: str) -> dict:
        """The row stored when a cell fails with a PoolbenchError."""

    @abc.abstractmethod
    def table(self, frame: pd.DataFrame, options=None, store=None) -> pd.DataFrame:
        """The wide view of stored rows; ``options`` (this suite's Options, or None at report
        time) may only narrow what is shown; what normalises a value is read from the rows.
        ``store`` (a ``ResultStore``) gives the cells' per-image predictions, from which the
        evaluation intervals are computed (``suites.intervals``); without it only the seed
        intervals are shown."""

    def notes(self, options) -> list[str]:
        """How to read the table (printed below it)."""
        return []


def expand_names(spec, groups: dict[str, tuple[str, ...]], known: tuple[str, ...], what: str) -> list[str]:
    """Group names and item names (a comma-separated string or a list that may mix them) as the
    items they stand for, in order, each once; an unknown item fails in one line."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    names: list[str] = []
    for item in (str(i).strip().lower() for i in items):
        if item:
            names.extend(groups.get(item, (item,)))
    names = list(dict.fromkeys(names))
    known = tuple(dict.fromkeys(known))
    for n in names:
        if n not in known:
            close = difflib.get_close_matches(n, known, n=2)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"unknown {what} {n!r}{hint} (use {', '.join(groups)} or names from "
                             f"{', '.join(known)})")
    return names


# --- trained suites ----------------------------------------------------------------------------

def pool_columns(pool: str) -> dict:
    """``pool`` is the canonical spec string (unique per option set); source/version from the registry."""
    spec = get_spec(pool)
    canonical = canonical_spec(pool)
    return {
        "pool": canonical,
        "pool_options": canonical.partition(":")[2],
        "pool_source": spec.source,
        "pool_version": spec.version,
    }


# the precision of a recipe's training (TrainConfig.amp), as the rows' dtype column
AMP_DTYPES = {"off": "float32", "bf16": "bfloat16", "fp16": "float16"}


def train_columns(cfg: TrainConfig) -> dict:
    """The columns of a trained model's rows; a model trained with a validation split says so
    (``holdout``, ``split``) and with which learning rate, so that its rows are never read as
    test results (the report keeps them for the recipe selection)."""
    held = {"holdout": cfg.holdout, "split": "validation", "lr": cfg.lr} if cfg.holdout else {}
    return {**pool_columns(cfg.pool), "model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed,
            "dtype": AMP_DTYPES[cfg.amp], "memory_format": "channels_last", **held}


def trained_with(info: dict, eval_device: str) -> dict:
    """The columns that say how a trained model's values were made, from its checkpoint's info
    (``training.cache``): the thread count and device of its training (None for a model cached
    before they were recorded: unknown, never this process's) and the implementations that ran
    in it; and, as eval_*, where this evaluation ran."""
    return {"threads": info.get("threads"), "device": info.get("device"),
            "eval_threads": torch.get_num_threads(), "eval_device": eval_device,
            **columns(_ran_in_training(info), prefix="train_")}


def _ran_in_training(info: dict) -> dict:
    """The implementations that ran in a training, which may have run in another process: from
    the checkpoint's info (models cached before the hook was generic say only "lift_impl")."""
    return info.get("implementations") or ({"lift": info["lift_impl"]} if info.get("lift_impl") else {})


@functools.lru_cache(maxsize=4)
def _bundle(dataset: str, data_seed: int, train_size, test_size, data_root, holdout: int = 0):
    cfg = TrainConfig(dataset=dataset, data_seed=data_seed, train_size=train_size, test_size=test_size,
                      batch_size=1, holdout=holdout)
    return load_bundle(cfg, data_root)


def bundle_for(cfg: TrainConfig, data_root: str | None):
    """The dataset of a training config, loaded once per process (and once for all its
    training seeds: the data come from ``data_seed``); with a holdout, its validation split
    in place of the test split."""
    return _bundle(cfg.dataset, cfg.data_seed, cfg.train_size, cfg.test_size, data_root, cfg.holdout)


def training_rows(base: dict, result) -> list[dict]:
    """What a trained model cost: learnable parameters, training time and throughput, and the
    final value of every auxiliary loss term (``train.TrainResult``)."""
    info = result.info
    base = {**base, **columns(_ran_in_training(info), prefix="train_")}
    rows = [
        make_row(base, "params", count_parameters(result.model)[0], "count"),
        make_row(base, "train_time", info.get("train_time_s"), "s"),
        make_row(base, "train_throughput", info.get("images_per_s"), "img/s"),
    ]
    rows += [make_row(base, f"final_{term}", value, "loss")
             for term, value in (info.get("final_aux_terms") or {}).items()]
    return rows + curve_rows(base, info.get("history") or [])


def shared_columns(rows: list[dict]) -> dict:
    """The columns with one value in every row (what the rows of one cell have in common),
    less the measured ones."""
    measured = ("metric", "value", "unit", "n", "predictions")
    first = {k: v for k, v in rows[0].items() if k not in measured}
    return {k: v for k, v in first.items() if all(k in r and r[k] == v for r in rows[1:])}


def curve_rows(base: dict, history: list[dict]) -> list[dict]:
    """The learning curve (``train`` info "history"): per epoch the mean training loss, the
    mean of every auxiliary term, the learning rate and, where measured, the test error."""
    rows = []
    for point in history:
        epoch = point["epoch"]
        rows.append(make_row(base, "curve_train_loss", point["train_loss"], "loss", epoch=epoch))
        rows += [make_row(base, f"curve_{term}", value, "loss", epoch=epoch)
                 for term, value in point.get("aux", {}).items()]
        rows.append(make_row(base, "curve_lr", point["lr"], "lr", epoch=epoch))
        if point.get("test_error") is not None:
            rows.append(make_row(base, "curve_test_error", point["test_error"], "%", epoch=epoch))
    return rows


def train_config_of(cell: dict) -> TrainConfig:
    d = dict(cell["train"])
    d["milestones"] = tuple(d.get("milestones", ()))
    return TrainConfig(**d)


class TrainedSuite(Suite):
    """Base for suites that evaluate the classifier trained per (pool, training config)."""

    def cells(self, train_configs: list[TrainConfig], options) -> list[dict]:
        for model in dict.fromkeys(cfg.model for cfg in train_configs):
            model_info(model)  # an unknown backbone fails now, not after the first cell trained
        return [{"train": cfg.to_dict(), **self.cell_options(options)} for cfg in train_configs]

    def cell_options(self, options) -> dict:
        """The options that change a result, as they go into every cell."""
        return options_dict(options)

    def training_key(self, cell: dict, ctx) -> str | None:
        if ctx.checkpoint_for(cell):
            return None
        path = checkpoint_path(train_config_of(cell))  # named by the training config's hash
        return None if path.is_file() else path.stem

    def train_ahead(self, cell: dict, ctx) -> None:
        self.trained(cell, ctx)

    def trained(self, cell: dict, ctx):
        cfg = train_config_of(cell)
        bundle = bundle_for(cfg, ctx.data_root)
        return cfg, bundle, get_trained_model(cfg, bundle, ctx.device, ctx.progress, ctx.checkpoint_for(cell),
                                              settings=ctx.train, strict=bool(ctx.extra.get("strict")))

    def run_cell(self, cell: dict, ctx) -> Measured | list[dict]:
        cfg, bundle, result = self.trained(cell, ctx)
        if not is_main_process():
            return []  # every process of a distributed run trains; the main one evaluates
        measured = self.evaluate(cell, ctx, cfg, bundle, result)
        rows = measured.rows if isinstance(measured, Measured) else measured
        if rows and not any(r["metric"] == "curve_test_error" for r in rows):
            # every trained cell carries its learning curve, so that any suite's table can say
            # whether a pool was still learning (suites.convergence); its rows hold the columns
            # every row of the cell shares (the view options included)
            rows += [r for r in curve_rows(shared_columns(rows), result.info.get("history") or [])
                     if r["metric"] == "curve_test_error"]
        provenance = trained_with(result.info, ctx.device)
        for row in rows:  # every value of this cell comes from the model as it was trained
            row.update(provenance)
        return measured

    @abc.abstractmethod
    def evaluate(self, cell: dict, ctx, cfg: TrainConfig, bundle, result) -> Measured | list[dict]:
        """Tidy rows (and per-image predictions) of the model trained for ``cell`` (``result``,
        a ``TrainResult``) on ``bundle``, the dataset of ``cfg``."""

    def error_row(self, cell: dict, ctx, message: str) -> dict:
        return make_row(train_columns(train_config_of(cell)), "error", None, error=message)


# --- views -------------------------------------------------------------------------------------

DEFAULT_REFERENCE = "max"


# columns that say how or when a value was measured, not which measurement it is
_NOT_IDENTITY = frozenset({"value", "unit", "n", "time", "error", "config_hash", "reference", "device",
                           "threads", "eval_device", "eval_threads", "world_size", "host", "torch_version", "poolbench_version",
                           "git_commit"})


def generator_options(options, key: str, names, engine_for: Callable[[str, str], str], engine: str) -> dict:
    """What a cell of generated corruptions or perturbations holds: the parameter set, and under
    ``key`` the engine of each of ``names``, resolved here so that a change of the torch default
    changes the cell hash; nothing for official data (``options.source``)."""
    if options.source != "generated":
        return {}
    return {"corruption_params": options.corruption_params, key: {n: engine_for(n, engine) for n in names}}


def with_reference(frame: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """``frame`` (a copy) with the ``reference`` column every normalised view groups by.

    Without ``reference`` each row keeps the reference its run recorded (rows written before
    runs recorded one count as ``max``, the default then). With one, every measurement counts
    once (the latest of the runs that measured it under any reference) and is normalised by
    ``reference``.
    """
    frame = frame.copy()
    if "reference" not in frame.columns:
        frame["reference"] = DEFAULT_REFERENCE
    frame["reference"] = frame["reference"].fillna(DEFAULT_REFERENCE)
    if reference is None:
        return frame
    identity = [c for c in frame.columns if c not in _NOT_IDENTITY | column_names(frame.columns)]
    if "time" in frame.columns:
        frame = frame.sort_values("time", kind="mergesort")
    frame = frame.drop_duplicates(subset=identity, keep="last").copy()
    frame["reference"] = reference
    return frame


def headline_table(derived: pd.DataFrame, columns: Mapping[str, str], dropna: bool = True) -> pd.DataFrame:
    """One row per pool of a derived view (in the order the pools come) and one column per
    metric of ``columns`` (metric -> column name, in that order): the mean of its values."""
    summary = derived[derived["metric"].isin(list(columns))].pivot_table(
        index="pool", columns="metric", values="value", aggfunc="mean", sort=False, dropna=dropna)
    return summary[[c for c in columns if c in summary]].rename(columns=columns)


def with_item_columns(summary: pd.DataFrame, derived: pd.DataFrame, metric: str, item: str,
                      order: Sequence[str] | None = None, short: Callable[[str], str] | None = None,
                      dropna: bool = True) -> pd.DataFrame:
    """``summary`` joined with ``metric`` per ``item`` (a corruption, a perturbation) as columns
    "metric item", with the derived view's notes; ``order`` keeps those items in that order,
    ``short`` names them in the column."""
    per_item = derived[derived["metric"] == metric].pivot_table(
        index="pool", columns=item, values="value", aggfunc="mean", sort=False, dropna=dropna)
    if order is not None:
        per_item = per_item[[c for c in order if c in per_item.columns]]
    per_item.columns = [f"{metric} {short(c) if short else c}" for c in per_item.columns]
    out = summary.join(per_item)
    out.attrs["notes"] = derived.attrs.get("notes", [])
    return out
