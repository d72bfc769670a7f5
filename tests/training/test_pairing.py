"""Paired training: at one training seed every pool starts from the same backbone weights, sees
the same batches and the same augmentation draws as its reference. Stochastic pools draw from
their own generators (pools.base.OwnRandomness), seeded by the training loop, so they no longer
move the global generator that RandomCrop and RandomHorizontalFlip draw from."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import poolbench
from helpers import interrupted_then_resumed
from poolbench.config import TrainConfig
from poolbench.pools.base import seed_stochastic, stochastic_modules
from poolbench.training import loop as train
from poolbench.training.runtime import TrainSettings

BUILT_IN = [n for n in poolbench.list_pools() if poolbench.get_spec(n).source == "built-in"]
STOCHASTIC = ["gauss", "s3", "lps", "spectral:random_cutoff=true"]
TINY = TrainConfig(pool="max", train_size=256, test_size=64, epochs=1, batch_size=64)


@pytest.mark.parametrize("spec", [*BUILT_IN, "spectral:random_cutoff=true"])
def test_a_seeded_pool_leaves_the_global_generator_alone(spec):
    pool = poolbench.get_pool(spec, 16).train()
    seed_stochastic(pool, 0)
    x = torch.randn(4, 16, 12, 12)
    before = torch.get_rng_state()
    pool(x)
    assert torch.equal(torch.get_rng_state(), before), f"{spec} drew from the global generator"


@pytest.mark.parametrize("spec", STOCHASTIC)
def test_a_stochastic_pool_is_reproducible_from_its_seed_and_differs_across_seeds(spec):
    pool = poolbench.get_pool(spec, 16).train()
    assert len(stochastic_modules(pool)) == 1
    x = torch.randn(4, 16, 32, 32)

    def out(seed):
        seed_stochastic(pool, seed)
        y = pool(x)
        return y[0] if isinstance(y, tuple) else y

    assert torch.equal(out(1), out(1))
    assert any(not torch.equal(out(1), out(s)) for s in range(2, 10))


def test_unseeded_pools_draw_from_the_global_generator_as_before():
    pool = poolbench.get_pool("gauss", 16).train()
    x = torch.randn(4, 16, 12, 12)
    torch.manual_seed(5)
    a = pool(x)
    torch.manual_seed(5)
    assert torch.equal(pool(x), a)


def _training_trace(pool: str, monkeypatch) -> tuple[list[torch.Tensor], dict]:
    """The global generator's state at every step's learning-rate lookup (after its batch was
    drawn and augmented) and the initial weights of a training of ``pool`` at seed 0."""
    states, real = [], train.lr_at
    monkeypatch.setattr(train, "lr_at", lambda c, e: states.append(torch.get_rng_state()) or real(c, e))
    cfg = dataclasses.replace(TINY, pool=pool)
    bundle = train.load_bundle(cfg)
    initial = train.Run.start(cfg, bundle, "cpu", train.CLASSIFICATION, TrainSettings(), None).model.state_dict()
    train.train(cfg, bundle, progress=False)
    monkeypatch.setattr(train, "lr_at", real)
    return states, initial


@pytest.mark.slow  # trains each built-in stochastic pool and the reference
def test_every_pool_at_one_seed_sees_the_references_augmentation_and_starts_from_its_weights(monkeypatch):
    ref_states, ref_weights = _training_trace("max", monkeypatch)
    for pool in ["gauss", "s3", "lps", "lift", "avg"]:
        states, weights = _training_trace(pool, monkeypatch)
        assert len(states) == len(ref_states) == 4
        assert all(torch.equal(a, b) for a, b in zip(states, ref_states)), pool
        shared = [k for k in ref_weights if k.startswith("backbone.") and k in weights
                  and weights[k].shape == ref_weights[k].shape]
        assert shared and all(torch.equal(weights[k], ref_weights[k]) for k in shared), pool


@pytest.mark.slow  # trains twice
def test_a_stochastic_pool_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """The pools' generator states are in the resume checkpoint."""
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    cfg = dataclasses.replace(TINY, pool="gauss", epochs=2, warmup_epochs=1)
    data = train.load_bundle(cfg)
    expected = train.train(cfg, data, progress=False).model.state_dict()
    result = interrupted_then_resumed(cfg, data, monkeypatch)
    assert result.info["resumed_from"] == {"epoch": 1, "step": 1}
    got = result.model.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
