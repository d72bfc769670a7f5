"""The checkpoint cache of trained models: one model per training recipe, under the hash of
its ``TrainConfig``, trained once (resuming an interrupted run of the same recipe) and read by
every suite; or a ``--checkpoint`` file the user names."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..atomic import atomic_open, atomic_write_text, remove_stale_temps
from ..config import TrainConfig, cache_dir
from ..errors import UsageError, one_line
from ..process import barrier, dist_info, file_lock, memory_format_for
from ..store import config_hash
from .checkpoint import remove_state, state_path
from .loop import CLASSIFICATION, Task, TrainResult, build_model, train
from .runtime import TrainSettings


def checkpoint_path(cfg: TrainConfig) -> Path:
    return cache_dir() / "checkpoints" / f"{config_hash(cfg.to_dict())}.pt"


def get_trained_model(cfg: TrainConfig, bundle, device: str = "cpu", progress: bool = True,
                      checkpoint: str | None = None, task: Task = CLASSIFICATION,
                      settings: TrainSettings = TrainSettings()) -> TrainResult:
    """The ``task`` model for ``cfg``: from ``checkpoint`` if given, else the cache, else trained
    (by :func:`train`, resuming an interrupted run of the same recipe) and cached under the hash
    of ``cfg``; the resume checkpoint is removed once the model is cached."""
    build = task.build
    if checkpoint:
        return _load_checkpoint(Path(checkpoint), cfg, bundle, device, explicit=True, build=build)
    path = checkpoint_path(cfg)
    resume = state_path(path)
    rank, world = dist_info()
    if world > 1:
        if path.is_file():
            return _load_checkpoint(path, cfg, bundle, device, build=build)
        result = train(cfg, bundle, device, progress, task=task, settings=settings, resume=resume)
        barrier()  # every process has read the resume checkpoint before it goes
        if rank == 0:
            _save_checkpoint(path, cfg, result)
            remove_state(resume)
        barrier()
        result.info["from_cache"] = False
        result.info["checkpoint"] = str(path)
        return result
    with file_lock(path):
        if path.is_file():
            return _load_checkpoint(path, cfg, bundle, device, build=build)
        result = train(cfg, bundle, device, progress, task=task, settings=settings, resume=resume)
        _save_checkpoint(path, cfg, result)
        remove_state(resume)
        remove_stale_temps(path.parent)  # of final writes killed before (their pid is gone)
    result.info["from_cache"] = False
    result.info["checkpoint"] = str(path)
    return result


def _save_checkpoint(path: Path, cfg: TrainConfig, result: TrainResult) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    with atomic_open(path, "wb") as fh:
        torch.save({"state_dict": state, "config": cfg.to_dict(), "info": json.dumps(result.info, default=str)}, fh)
    atomic_write_text(path.with_suffix(".json"), json.dumps({"config": cfg.to_dict(), "info": result.info},
                                                            indent=1, default=str))


def _load_checkpoint(path: Path, cfg: TrainConfig, bundle, device: str, explicit: bool = False,
                     build: Callable[[TrainConfig, Any], nn.Module] = build_model) -> TrainResult:
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found; pass an existing file to --checkpoint")
    fix = "pass the --model/--pool it was trained with" if explicit else "delete it and run again"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text ends in advice to set weights_only=False, i.e. to run the file's code
        raise UsageError(
            f"checkpoint {path} holds pickled Python objects, not only tensors, and poolbench never "
            "unpickles them (that can run arbitrary code); "
            + ("load it where it was made and save its weights with torch.save(model.state_dict(), FILE), "
               "then pass FILE" if explicit else "delete it and run again")
        ) from exc
    except Exception as exc:  # not a zip/pickle file, truncated...
        raise UsageError(
            f"checkpoint {path} is not a readable weights-only PyTorch checkpoint "
            f"({type(exc).__name__}: {one_line(exc)}); "
            + ("pass a state_dict saved with torch.save" if explicit else "delete it and run again")
        ) from exc
    saved = payload.get("config") if isinstance(payload, dict) else None
    if explicit and isinstance(saved, dict):
        differs = [f"{k} {saved[k]!r} (asked for {getattr(cfg, k)!r})" for k in ("model", "pool")
                   if k in saved and saved[k] != getattr(cfg, k)]
        if differs:
            raise UsageError(f"checkpoint {path} was trained with {', '.join(differs)}; {fix}")
    state = payload["state_dict"] if isinstance(payload, dict) and "state_dict" in payload else payload
    model = build(cfg, bundle)
    try:
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not a state_dict")
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise UsageError(
            f"checkpoint {path} does not fit {cfg.model} with pool {cfg.pool} ({one_line(exc)}); {fix}"
        ) from exc
    model = model.to(device).to(memory_format=memory_format_for(device)).eval()
    info = {}
    if isinstance(payload, dict) and "info" in payload:
        try:
            info = json.loads(payload["info"])
        except (TypeError, ValueError):
            info = {}
    info.update({"from_cache": not explicit, "checkpoint": str(path)})
    return TrainResult(model=model, info=info, num_classes=bundle.num_classes)
