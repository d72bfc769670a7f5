"""The checkpoint cache of trained models: one model per training recipe, under the hash of
its ``TrainConfig``, trained once (resuming an interrupted run of the same recipe) and read by
every suite; or a ``--checkpoint`` file the user names.

A cached model is verified before it is used: its record ``<hash>.json`` holds the sha256 of
the ``.pt`` as written and the recipe's hash, and the recipe inside the ``.pt`` must hash to its
name. A model that fails is set aside into ``<cache>/.damaged/`` (one warning line) and trained
again, or with ``strict`` refused. Its info says how it was trained (thread count, device,
precision, implementations), which every row of its values reports.
"""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..atomic import DiskFull, atomic_open, atomic_write_text, remove_stale_temps
from ..config import TrainConfig, cache_dir
from ..errors import UsageError, one_line
from ..integrity import Damaged, check_file, read_record, set_aside, sha256_bytes
from ..process import barrier, dist_info, file_lock, memory_format_for
from ..store import config_hash
from .checkpoint import read_state, remove_state, state_path
from .loop import CLASSIFICATION, Task, TrainResult, build_model, train
from .runtime import TrainSettings


def checkpoint_path(cfg: TrainConfig) -> Path:
    return cache_dir() / "checkpoints" / f"{config_hash(cfg.to_dict())}.pt"


def get_trained_model(cfg: TrainConfig, bundle, device: str = "cpu", progress: bool = True,
                      checkpoint: str | None = None, task: Task = CLASSIFICATION,
                      settings: TrainSettings = TrainSettings(), strict: bool = False) -> TrainResult:
    """The ``task`` model for ``cfg``: from ``checkpoint`` if given, else the cache, else trained
    (by :func:`train`, resuming an interrupted run of the same recipe) and cached under the hash
    of ``cfg``; the resume checkpoint is removed once the model is cached. A cached model that
    fails verification is set aside and trained again (``strict``: refused)."""
    build = task.build
    if checkpoint:
        return _load_checkpoint(Path(checkpoint), cfg, bundle, device, explicit=True, build=build)
    path = checkpoint_path(cfg)
    resume = state_path(path)
    rank, world = dist_info()
    if world > 1:
        if path.is_file():  # every process reads it: none may move it aside under the others
            try:
                verify_checkpoint(path, strict)
                return _load_checkpoint(path, cfg, bundle, device, build=build)
            except Damaged as damage:
                raise UsageError(f"{damage.path} failed verification ({damage.reason}); move it "
                                 "aside and run again to train the model again") from None
        threads = _training_threads(resume, device)
        result = train(cfg, bundle, device, progress, task=task, settings=settings, resume=resume)
        _record_provenance(result, threads, device)
        barrier()  # every process has read the resume checkpoint before it goes
        if rank == 0:
            _save_checkpoint(path, cfg, result)
            remove_state(resume)
        barrier()
        result.info["from_cache"] = False
        result.info["checkpoint"] = str(path)
        return result
    with file_lock(path):
        if path.is_file() or path.with_suffix(".json").is_file():
            try:
                verify_checkpoint(path, strict)
                return _load_checkpoint(path, cfg, bundle, device, build=build)
            except Damaged as damage:
                set_aside(damage, cache_dir(), (path, path.with_suffix(".json")), strict,
                          "the model is trained again")
        threads = _training_threads(resume, device)
        result = train(cfg, bundle, device, progress, task=task, settings=settings, resume=resume)
        _record_provenance(result, threads, device)
        try:
            _save_checkpoint(path, cfg, result)
        except DiskFull as exc:  # the resume checkpoint stays: a rerun continues from it
            raise DiskFull(f"{exc} (the training resumes from its last resume checkpoint, "
                           f"{resume.name})") from None
        remove_state(resume)
        remove_stale_temps(path.parent)  # of final writes killed before (their pid is gone)
    result.info["from_cache"] = False
    result.info["checkpoint"] = str(path)
    return result


def _training_threads(resume: Path, device: str) -> int:
    """The torch thread count the training about to run uses: a resumed CPU run keeps the count
    it started with (``loop.train``), else this process's."""
    if device == "cpu" and resume.is_file():
        state = read_state(resume)
        if state is not None and state.get("threads"):
            return int(state["threads"])
    return torch.get_num_threads()


def _record_provenance(result: TrainResult, threads: int, device: str) -> None:
    """How the model was trained, in its info (and so in its checkpoint): rows of its values
    state these, not the settings of the process that reads it later."""
    result.info.update({"threads": threads, "device": device})


def _save_checkpoint(path: Path, cfg: TrainConfig, result: TrainResult) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    buf = io.BytesIO()  # serialised first: its digest goes into the record
    torch.save({"state_dict": state, "config": cfg.to_dict(), "info": json.dumps(result.info, default=str)}, buf)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getbuffer())
    atomic_write_text(path.with_suffix(".json"), json.dumps(
        {"hash": path.stem, "sha256": sha256_bytes(buf.getbuffer()), "config": cfg.to_dict(),
         "info": result.info}, indent=1, default=str))


def verify_checkpoint(path: Path, strict: bool = False) -> None:
    """Raise :class:`Damaged` unless the cached model ``path`` is the file its record describes:
    the record's hash is the name and its sha256 the file's (a record written before digests
    passes on the recipe check of ``_load_checkpoint`` alone, except under ``strict``)."""
    record_path = path.with_suffix(".json")
    record = read_record(record_path, "the record of the cached model")
    if "sha256" not in record:
        if strict:
            raise Damaged(path, "it was cached before models carried a digest and cannot be verified")
        return
    if record.get("hash") != path.stem:
        raise Damaged(record_path, f"it is the record of {str(record.get('hash'))[:12]}, not of {path.stem[:12]}")
    check_file(path, record["sha256"], "cached model")


def _load_checkpoint(path: Path, cfg: TrainConfig, bundle, device: str, explicit: bool = False,
                     build: Callable[[TrainConfig, Any], nn.Module] = build_model) -> TrainResult:
    """The model in ``path``: the user's ``--checkpoint`` (``explicit``: a problem is one
    UsageError) or a cache entry (a problem is :class:`Damaged`: it is set aside, trained again)."""
    if not path.is_file():
        if not explicit:
            raise Damaged(path, "the cached model is missing")
        raise UsageError(f"checkpoint {path} not found; pass an existing file to --checkpoint")
    fix = "pass the --model/--pool it was trained with"

    def bad(reason: str, exc: BaseException | None = None):
        if not explicit:
            return Damaged(path, reason)
        return UsageError(f"checkpoint {path} {reason}; "
                          + (fix if exc is None else "pass a state_dict saved with torch.save"))

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text ends in advice to set weights_only=False, i.e. to run the file's code
        if not explicit:
            raise Damaged(path, "it holds pickled Python objects, not only tensors") from None
        raise UsageError(
            f"checkpoint {path} holds pickled Python objects, not only tensors, and poolbench never "
            "unpickles them (that can run arbitrary code); load it where it was made and save its "
            "weights with torch.save(model.state_dict(), FILE), then pass FILE") from exc
    except Exception as exc:  # noqa: BLE001 - not a zip/pickle file, truncated...
        raise bad(f"is not a readable weights-only PyTorch checkpoint ({type(exc).__name__}: "
                  f"{one_line(exc)})", exc) from None
    saved = payload.get("config") if isinstance(payload, dict) else None
    if explicit and isinstance(saved, dict):
        differs = [f"{k} {saved[k]!r} (asked for {getattr(cfg, k)!r})" for k in ("model", "pool")
                   if k in saved and saved[k] != getattr(cfg, k)]
        if differs:
            raise UsageError(f"checkpoint {path} was trained with {', '.join(differs)}; {fix}")
    if not explicit and (not isinstance(saved, dict) or config_hash(saved) != path.stem):
        held = config_hash(saved)[:12] if isinstance(saved, dict) else "none"
        raise Damaged(path, f"it holds the model of recipe {held}, not of {path.stem[:12]} it is named after")
    state = payload["state_dict"] if isinstance(payload, dict) and "state_dict" in payload else payload
    model = build(cfg, bundle)
    try:
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not a state_dict")
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise bad(f"does not fit {cfg.model} with pool {cfg.pool} ({one_line(exc)})") from None
    model = model.to(device).to(memory_format=memory_format_for(device)).eval()
    info = {}
    if isinstance(payload, dict) and "info" in payload:
        try:
            info = json.loads(payload["info"])
        except (TypeError, ValueError):
            info = {}
    info.update({"from_cache": not explicit, "checkpoint": str(path)})
    return TrainResult(model=model, info=info, num_classes=bundle.num_classes)
