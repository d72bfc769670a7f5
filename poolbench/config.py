"""Run configuration: suite preset TOML < environment < command-line flags.

Presets live in the repository's ``suites/`` folder (``quick`` is the built-in default) and are
package data: ``poolbench/presets`` links to that folder, so an editable install reads them in
place and a built wheel carries copies; they are read through ``importlib.resources``, never
found by guessing paths. ``--config FILE`` names any TOML file of the same shape.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .ranges import bounded, check_ranges

PRESET_DIR = importlib.resources.files(__package__) / "presets"
DEFAULT_PRESET = "quick"
# the longest recipe accepted: the published ones train 90 (ImageNet) to 300 (CIFAR) epochs, and
# a typo's billion would pass every other check and run forever
MAX_EPOCHS = 10_000


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model; its hash names the checkpoint.

    ``seed`` draws the initial weights and the data order; ``data_seed`` the data themselves
    (the built-in generated sets, corrupted and perturbed copies, shift offsets), fixed across
    the training seeds of a run so that every seed is evaluated on the same images (paired
    intervals) and the sets are generated once. ``data_fingerprint`` says what the dataset held
    (``poolbench.data.fingerprint``): set by ``poolbench.run`` so that a checkpoint or a stored
    cell of other data is never reused.
    """

    pool: str = "max"
    model: str = "convnet"
    policy: str | None = None
    dataset: str = "shapes"
    train_size: int | None = bounded(None, low=1)
    test_size: int | None = bounded(None, low=1)
    epochs: int = bounded(6, low=1, high=MAX_EPOCHS)
    batch_size: int = bounded(32, low=1)
    optimizer: str = "sgd"
    lr: float = bounded(0.05, low=0, low_open=True)
    momentum: float = bounded(0.9, low=0, high=1, high_open=True)
    nesterov: bool = True
    weight_decay: float = bounded(5e-4, low=0)
    schedule: str = "cosine"
    milestones: tuple[int, ...] = bounded((), low=1)
    gamma: float = bounded(0.1, low=0, low_open=True)
    warmup_epochs: int = bounded(0, low=0, high=MAX_EPOCHS)
    label_smoothing: float = bounded(0.0, low=0, high=1, high_open=True)
    seed: int = bounded(0, low=0)
    data_seed: int = bounded(0, low=0)
    data_fingerprint: str = ""
    amp: str = "off"  # mixed precision of training: off (float32), bf16 or fp16 autocast
    # training images held out as a validation split (poolbench.data.bundles.hold_out): the
    # model trains on the rest and is evaluated on them, never on the test set; 0: none
    holdout: int = bounded(0, low=0)

    def __post_init__(self):
        _check_types({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        check_ranges(self)
        if self.amp not in ("off", "bf16", "fp16"):
            raise UsageError(f"unknown amp {self.amp!r}; choose off, bf16 or fp16 (--amp)")
        if self.train_size is not None and self.train_size < self.batch_size:
            raise UsageError(f"train_size {self.train_size} is smaller than one batch of {self.batch_size}: "
                             f"lower --batch-size to {self.train_size} or less, or raise --train-size")
        if self.holdout and self.train_size is not None and self.train_size - self.holdout < self.batch_size:
            raise UsageError(f"holding out {self.holdout} of {self.train_size} training images leaves less "
                             f"than one batch of {self.batch_size}: raise --train-size or lower the holdout")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        if d["amp"] == "off":  # float32, what every recipe trained with before amp existed:
            del d["amp"]       # left out, so that their configs and hashes stay as they were
        if d["holdout"] == 0:  # no validation split, as before holdouts existed: likewise
            del d["holdout"]
        return d


_INT_FIELDS = {"train_size", "test_size", "epochs", "batch_size", "warmup_epochs", "seed", "data_seed",
               "holdout"}


def _check_types(values: dict[str, Any], source: str = "--{flag}") -> None:
    """Integer fields hold integers; the message names ``source`` (the flag, or a file's key)."""
    for name, value in values.items():
        if name in _INT_FIELDS and value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            where = source.format(name=name, flag=name.replace("_", "-"))
            raise UsageError(f"{name} must be an integer, got {value!r} ({where})")
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
_FLOAT_FIELDS = {f.name for f in dataclasses.fields(TrainConfig) if isinstance(f.default, float)}


def list_presets() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in PRESET_DIR.iterdir() if p.name.endswith(".toml"))


def load_preset(name_or_path: str | None) -> dict:
    """The preset named (``quick``, ``cifar100-vgg13``, ...) or a TOML file path."""
    name_or_path = name_or_path or os.environ.get("POOLBENCH_PRESET") or DEFAULT_PRESET
    path = Path(name_or_path)
    if not (path.suffix == ".toml" or path.exists()):
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            close = difflib.get_close_matches(str(name_or_path), list_presets(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(
                f"unknown preset {name_or_path!r}{hint} (presets: {', '.join(list_presets())}; "
                "or pass --config FILE.toml)"
            )
    if not path.is_file():
        raise UsageError(f"config file {path} not found; pass an existing TOML file to --config")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from exc
    data.setdefault("train", {})
    # [train.<dataset>] tables: the recipe's changes for one dataset (the quick preset trains
    # photos longer than shapes)
    tables = {k: v for k, v in data["train"].items() if isinstance(v, dict)}
    unknown = set(data["train"]) - TRAIN_FIELDS - {"seeds", "recipe"} - set(tables)
    for name, table in tables.items():
        unknown |= {f"{name}.{k}" for k in set(table) - TRAIN_FIELDS}
    if unknown:
        raise UsageError(
            f"config file {path}: unknown [train] keys {sorted(unknown)}; accepted: "
            f"{sorted(TRAIN_FIELDS | {'seeds', 'recipe'})} "
            "and [train.DATASET] tables of them"
        )
    data["_path"] = str(path)
    return data


def train_config(preset: dict, pool: str, seed: int, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The TrainConfig of one cell: the preset's [train] table, then its [train.<dataset>]
    table for the dataset trained on, then the flags."""
    table = preset.get("train", {})
    flags = {k: v for k, v in (overrides or {}).items() if v is not None and k in TRAIN_FIELDS}
    values = {k: v for k, v in table.items() if k in TRAIN_FIELDS}
    dataset = flags.get("dataset", values.get("dataset", TrainConfig.dataset))
    name = str(dataset).split(":", 1)[0]   # imagefolder:PATH -> [train.imagefolder]
    sections = {k: "[train]" for k in values}
    if isinstance(table.get(name), dict):
        values.update(table[name])
        sections.update({k: f"[train.{name}]" for k in table[name]})
    values.update(flags)
    values["pool"] = pool
    values["seed"] = seed
    if "milestones" in values:
        values["milestones"] = tuple(values["milestones"])
    for name in _FLOAT_FIELDS:  # `lr = 1` in TOML and `--lr 1` must name the same checkpoint
        if isinstance(values.get(name), int) and not isinstance(values[name], bool):
            values[name] = float(values[name])
    # a bad value from the file names the file's key, not a flag the user never typed
    for section in dict.fromkeys(sections.values()):
        keys = {k: values[k] for k, where in sections.items() if where == section and k not in flags}
        source = "key {name} in " + f"{section} of {preset.get('_path', 'the preset')}"
        _check_types(keys, source)
        check_ranges(TrainConfig, values=keys, source=source)
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise UsageError(f"bad training configuration: {exc}") from exc


def seeds_of(preset: dict, seed: int | None) -> list[int]:
    if seed is not None:
        return [seed]
    seeds = preset.get("train", {}).get("seeds", [0])
    if isinstance(seeds, (int, str)):  # `seeds = 0` means one seed
        seeds = [seeds]
    try:
        return [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise UsageError(f"[train] seeds must be a list of integers, got {seeds!r}") from None


def env_default(name: str, default: Any) -> Any:
    """A POOLBENCH_<NAME> environment variable, else the default (flags override both)."""
    return os.environ.get(f"POOLBENCH_{name.upper()}", default)


def cache_dir() -> Path:
    return Path(os.environ.get("POOLBENCH_CACHE") or Path.home() / ".cache" / "poolbench")
