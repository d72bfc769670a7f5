"""Training: determinism, schedules, weight-decay groups, divergence, checkpoint cache, aux losses."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import interrupted_then_resumed
from poolbench import registry
from poolbench.auxiliary import auxiliary_loss
from poolbench.config import TrainConfig, seeds_of, train_config
from poolbench.errors import UsageError
from poolbench.runner import RunContext, run_cells
from poolbench.suites import get_suite
from poolbench.training import cache
from poolbench.training import loop as train
from poolbench.training.cache import checkpoint_path, get_trained_model
from poolbench.training.evaluate import predict
from poolbench.training.loop import (
    CLASSIFICATION,
    Task,
    TrainingDiverged,
    load_bundle,
    lr_at,
)
from poolbench.training.runtime import TrainSettings

TINY = TrainConfig(pool="max", train_size=256, test_size=64, epochs=1, batch_size=64)


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(TINY)


@pytest.fixture
def scratch_pools():
    before = set(registry.list_pools())
    yield
    for name in set(registry.list_pools()) - before:
        registry.unregister_pool(name)


class NaNPool(nn.Module):
    def forward(self, x):
        return F.max_pool2d(x, 2) * float("nan")


class AuxPool(nn.Module):
    """Max pooling that asks the trainer to keep its outputs small (a weighted auxiliary term)."""

    def __init__(self):
        super().__init__()
        self._terms = {}

    def forward(self, x):
        y = F.max_pool2d(x, 2)
        self._terms = {"aux_energy": (0.25, y.pow(2).mean())} if self.training else {}
        return y

    def auxiliary_losses(self):
        return dict(self._terms)


class Opaque:
    pass


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- determinism --------------------------------------------------------------------------------

@pytest.mark.slow
def test_same_seed_gives_identical_weights_and_logits(bundle):
    a = train.train(TINY, bundle, progress=False)
    b = train.train(TINY, bundle, progress=False)
    sa, sb = _state(a.model), _state(b.model)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    images = torch.stack([bundle.test[i][0] for i in range(16)])
    assert torch.equal(predict(a.model, images), predict(b.model, images))
    assert a.info["final_task_loss"] == b.info["final_task_loss"]
    other = dataclasses.replace(TINY, seed=1)
    sc = _state(train.train(other, load_bundle(other), progress=False).model)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)  # the seed matters


# --- learning-rate schedule ----------------------------------------------------------------------

@pytest.mark.parametrize("epoch,expected", [(0, 0.1), (2.5, 0.05 * (1 + math.cos(math.pi / 4))),
                                            (5, 0.05), (10, 0.0), (12, 0.0)])
def test_cosine_schedule(epoch, expected):
    cfg = TrainConfig(lr=0.1, epochs=10, schedule="cosine")
    assert lr_at(cfg, epoch) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("epoch,expected", [(0, 0.1), (2.99, 0.1), (3, 0.01), (5.5, 0.01), (6, 0.001),
                                            (9.9, 0.001)])
def test_step_schedule(epoch, expected):
    cfg = TrainConfig(lr=0.1, epochs=10, schedule="step", milestones=(3, 6), gamma=0.1)
    assert lr_at(cfg, epoch) == pytest.approx(expected)


@pytest.mark.parametrize("epoch,expected", [(0.5, 0.025), (1.0, 0.05), (1.5, 0.075),
                                            (2.0, 0.1), (6.0, 0.05), (10.0, 0.0)])
def test_warmup_then_cosine(epoch, expected):
    cfg = TrainConfig(lr=0.1, epochs=10, schedule="cosine", warmup_epochs=2)
    assert lr_at(cfg, epoch) == pytest.approx(expected, abs=1e-8)


def test_unknown_schedule_is_usage_error():
    with pytest.raises(UsageError, match="unknown schedule"):
        lr_at(TrainConfig(schedule="poly"), 0.5)


@pytest.mark.slow
def test_training_applies_the_schedule(bundle, monkeypatch):
    seen = []
    real = train.lr_at
    monkeypatch.setattr(train, "lr_at", lambda cfg, e: seen.append(e) or real(cfg, e))
    cfg = dataclasses.replace(TINY, epochs=2, lr=0.04)
    train.train(cfg, bundle, progress=False)
    assert seen == [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75]  # 256 images / batch 64 = 4 steps


# --- weight decay ----------------------------------------------------------------------------------

def test_no_weight_decay_parameters_get_their_own_group(bundle):
    cfg = dataclasses.replace(TINY, pool="dpp", weight_decay=5e-4)
    model = train.build_model(cfg, bundle)
    opt = train.build_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in opt.param_groups}
    assert set(by_decay) == {5e-4, 0.0}
    no_decay = by_decay[0.0]
    assert no_decay and all(n.rsplit(".", 1)[-1] in ("t_lambda", "t_alpha") for n in no_decay)
    n_dpp = sum(1 for m in model.modules() if type(m).__name__ == "DetailPreservingPool")
    assert n_dpp >= 1 and len(no_decay) == 2 * n_dpp
    assert not any(n.endswith(("t_lambda", "t_alpha")) for n in by_decay[5e-4])
    assert len(no_decay) + len(by_decay[5e-4]) == len(list(model.parameters()))


def test_plain_model_has_one_group(bundle):
    opt = train.build_optimizer(train.build_model(TINY, bundle), TINY)
    assert [g["weight_decay"] for g in opt.param_groups] == [TINY.weight_decay]


def test_adamw_keeps_the_groups_and_unknown_optimizer_is_usage_error(bundle):
    cfg = dataclasses.replace(TINY, pool="dpp", optimizer="adamw", lr=2e-3, weight_decay=1e-2)
    opt = train.build_optimizer(train.build_model(cfg, bundle), cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 1e-2]
    assert {g["lr"] for g in opt.param_groups} == {2e-3}
    with pytest.raises(UsageError, match="choose sgd or adamw"):
        train.build_optimizer(train.build_model(TINY, bundle), dataclasses.replace(TINY, optimizer="adam"))


# --- divergence -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_nan_loss_raises_training_diverged(bundle, scratch_pools):
    registry.register_pool("test_nan")(lambda channels: NaNPool())
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1 step 1 .*lower --lr"):
        train.train(dataclasses.replace(TINY, pool="test_nan"), bundle, progress=False)


@pytest.mark.slow
def test_weights_blown_up_by_the_last_step_raise(bundle):
    # lr 1e6: every loss seen is finite, but the last update leaves non-finite weights
    with pytest.raises(TrainingDiverged, match="not finite"):
        train.train(dataclasses.replace(TINY, lr=1e6), bundle, progress=False)


@pytest.mark.slow
def test_divergence_through_the_runner_is_an_error_row(tmp_path, scratch_pools):
    registry.register_pool("test_nan")(lambda channels: NaNPool())
    cfg = train_config({"train": TINY.to_dict()}, "test_nan", 0)
    suite = get_suite("accuracy")
    cells = suite.cells([cfg], suite.options({}))
    ctx = RunContext(results=str(tmp_path), progress=False)
    report = run_cells("accuracy", cells, ctx, log=lambda m: None)
    assert report.failed == 1 and report.computed == 1
    (row,) = report.rows
    assert row["pool"] == "test_nan" and row["value"] is None and row["metric"] == "error"
    assert "diverged" in row["error"] and "\n" not in row["error"]
    # the error is stored (for reports) but the cell is not finished: a rerun tries again
    assert len(list((tmp_path / "accuracy").glob("*.json"))) == 1
    again = run_cells("accuracy", cells, ctx, log=lambda m: None)
    assert again.computed == 1 and again.skipped == 0 and again.failed == 1


@pytest.mark.slow
def test_the_loop_takes_its_model_loss_and_name_from_the_task(bundle):
    seen = []

    def loss(logits, labels, cfg):
        seen.append(tuple(logits.shape))
        return CLASSIFICATION.loss(logits, labels, cfg) * float("nan")

    task = Task(build=train.build_model, loss=loss, describe=lambda cfg: f"probe {cfg.pool}")
    with pytest.raises(TrainingDiverged, match=r"^training probe max diverged at epoch 1 step 1"):
        train.train(TINY, bundle, progress=False, task=task)
    assert seen == [(TINY.batch_size, bundle.num_classes)]


# --- checkpoint cache -------------------------------------------------------------------------------

@pytest.mark.slow
def test_second_call_loads_from_cache_with_weights_only(bundle, monkeypatch):
    cfg = dataclasses.replace(TINY, seed=5)
    first = get_trained_model(cfg, bundle, progress=False)
    assert first.info["from_cache"] is False
    path = checkpoint_path(cfg)
    assert first.info["checkpoint"] == str(path) and path.is_file()

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    monkeypatch.setattr(cache, "train", lambda *a, **k: pytest.fail("trained again instead of loading"))
    second = get_trained_model(cfg, bundle, progress=False)
    assert second.info["from_cache"] is True
    assert calls and all(k.get("weights_only") is True for k in calls)
    s1, s2 = _state(first.model), _state(second.model)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert second.info["final_task_loss"] == first.info["final_task_loss"]
    images = torch.stack([bundle.test[i][0] for i in range(8)])
    assert torch.equal(predict(first.model, images), predict(second.model, images))


def test_checkpoint_with_pickled_objects_is_refused(tmp_path, bundle):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "extra": Opaque()}, path)  # loads only with weights_only=False
    with pytest.raises(UsageError) as info:
        get_trained_model(TINY, bundle, progress=False, checkpoint=str(path))
    message = str(info.value)
    assert "never unpickles" in message and "weights_only" not in message and "\n" not in message


@pytest.mark.slow
def test_explicit_checkpoint_for_another_pool_is_one_line_usage_error(tmp_path, bundle):
    trained = get_trained_model(TINY, bundle, progress=False)  # the max model (cached)
    with pytest.raises(UsageError) as info:
        get_trained_model(dataclasses.replace(TINY, pool="avg"), bundle, progress=False,
                          checkpoint=trained.info["checkpoint"])
    msg = str(info.value)
    assert "\n" not in msg and "pool 'max'" in msg and "--model/--pool" in msg


def test_explicit_state_dict_that_does_not_fit_is_one_line_usage_error(tmp_path, bundle):
    path = tmp_path / "other.pt"
    other = train.build_model(dataclasses.replace(TINY, pool="dpp"), bundle)
    torch.save(other.state_dict(), path)  # a bare state_dict: no recorded config
    with pytest.raises(UsageError) as info:
        get_trained_model(TINY, bundle, progress=False, checkpoint=str(path))
    msg = str(info.value)
    assert "\n" not in msg and "does not fit convnet with pool max" in msg and "t_lambda" in msg


@pytest.mark.slow
def test_explicit_checkpoint_loads(tmp_path, bundle):
    trained = get_trained_model(TINY, bundle, progress=False)
    loaded = get_trained_model(TINY, bundle, progress=False, checkpoint=trained.info["checkpoint"])
    assert loaded.info["from_cache"] is False and loaded.info["checkpoint"] == trained.info["checkpoint"]
    s1, s2 = _state(trained.model), _state(loaded.model)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_missing_checkpoint_is_usage_error(tmp_path, bundle):
    with pytest.raises(UsageError, match="not found"):
        get_trained_model(TINY, bundle, checkpoint=str(tmp_path / "nope.pt"))


# --- auxiliary losses -----------------------------------------------------------------------------

@pytest.mark.slow
def test_auxiliary_terms_are_logged_and_trained(tmp_path, bundle, scratch_pools):
    registry.register_pool("test_aux")(lambda channels: AuxPool())
    cfg = dataclasses.replace(TINY, pool="test_aux")
    result = train.train(cfg, bundle, progress=False)
    terms = result.info["final_aux_terms"]
    assert set(terms) == {"aux_energy"}
    n_pools = sum(isinstance(m, AuxPool) for m in result.model.modules())
    assert n_pools >= 1 and terms["aux_energy"] > 0  # unweighted, summed over layers
    # eval-mode forwards contribute nothing
    result.model(torch.rand(2, 3, 32, 32))
    assert auxiliary_loss(result.model)[1] == {}
    # and the term reaches the accuracy rows
    suite = get_suite("accuracy")
    cells = suite.cells([train_config({"train": TINY.to_dict()}, "test_aux", 0)], suite.options({}))
    rows = run_cells("accuracy", cells, RunContext(results=str(tmp_path), progress=False),
                     log=lambda m: None).rows
    aux = [r for r in rows if r["metric"] == "final_aux_energy"]
    assert len(aux) == 1 and aux[0]["value"] == pytest.approx(terms["aux_energy"])


@pytest.mark.slow
def test_auxiliary_weight_enters_the_loss(bundle, scratch_pools, monkeypatch):
    registry.register_pool("test_aux")(lambda channels: AuxPool())
    totals = []
    real_backward = torch.Tensor.backward

    def spy(self, *a, **k):
        totals.append(float(self.detach()))
        return real_backward(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "backward", spy)
    seen = []
    real_ce = F.cross_entropy
    monkeypatch.setattr(train.F, "cross_entropy", lambda *a, **k: seen.append(real_ce(*a, **k)) or seen[-1])
    result = train.train(dataclasses.replace(TINY, pool="test_aux"), bundle, progress=False)
    # last step: total = task loss + 0.25 * aux term
    assert totals[-1] == pytest.approx(float(seen[-1].detach()) + 0.25 * result.info["final_aux_terms"]["aux_energy"],
                                       rel=1e-5)


# --- configuration -----------------------------------------------------------------------------------

def test_integer_valued_floats_name_the_same_checkpoint():
    from_toml = train_config({"train": {"lr": 1, "weight_decay": 0, "momentum": 0}}, "max", 0)
    from_flag = train_config({"train": {}}, "max", 0, {"lr": 1.0, "weight_decay": 0.0, "momentum": 0.0})
    assert from_toml == from_flag
    assert checkpoint_path(from_toml) == checkpoint_path(from_flag)
    assert train_config({"train": {"lr": 2}}, "max", 0) != train_config({"train": {}}, "max", 0)


def test_seeds_from_preset():
    assert seeds_of({"train": {"seeds": [0, 1, 2]}}, None) == [0, 1, 2]
    assert seeds_of({"train": {"seeds": 3}}, None) == [3]
    assert seeds_of({"train": {"seeds": [0, 1]}}, 7) == [7]
    with pytest.raises(UsageError, match="seeds"):
        seeds_of({"train": {"seeds": ["a"]}}, None)


# --- the engine: deferred divergence checks, learning curves, precision, resume ------------------------

@pytest.mark.slow
def test_divergence_looked_at_every_n_steps_still_names_the_first_bad_step(bundle, scratch_pools):
    from poolbench.training.runtime import TrainSettings

    registry.register_pool("test_nan")(lambda channels: NaNPool())
    steps = []
    real = train.lr_at
    cfg = dataclasses.replace(TINY, pool="test_nan")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "lr_at", lambda c, e: steps.append(e) or real(c, e))
        with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1 step 1 \(loss nan\)"):
            train.train(cfg, bundle, progress=False, settings=TrainSettings(check_every=3))
    assert len(steps) == 3  # no host look before the third step; stopped there


@pytest.mark.slow
def test_learning_curve_per_epoch(tmp_path, bundle, scratch_pools):
    registry.register_pool("test_aux")(lambda channels: AuxPool())
    cfg = dataclasses.replace(TINY, pool="test_aux", epochs=2, lr=0.04)
    result = train.train(cfg, bundle, progress=False)
    history = result.info["history"]
    assert [p["epoch"] for p in history] == [1, 2]
    for p in history:
        assert math.isfinite(p["train_loss"]) and p["train_loss"] > 0
        assert set(p["aux"]) == {"aux_energy"} and p["aux"]["aux_energy"] > 0
        assert 0 <= p["test_error"] <= 100
    # the rate of each epoch's last step (4 steps per epoch)
    assert [p["lr"] for p in history] == [lr_at(cfg, 0.75), lr_at(cfg, 1.75)]
    # the curve's last test error is the accuracy suite's top-1 error of the same model
    logits, labels = train.predict_dataset(result.model, bundle.test)
    assert history[-1]["test_error"] == pytest.approx(100 * train.topk_error(logits, labels, 1))
    # and the points become rows of the cell
    suite = get_suite("accuracy")
    cells = suite.cells([train_config({"train": cfg.to_dict()}, "test_aux", 0)], suite.options({}))
    rows = run_cells("accuracy", cells, RunContext(results=str(tmp_path), progress=False), log=lambda m: None).rows
    curve = {(r["metric"], r["epoch"]) for r in rows if r["metric"].startswith("curve_")}
    assert curve == {(m, e) for e in (1, 2) for m in ("curve_train_loss", "curve_lr", "curve_test_error",
                                                      "curve_aux_energy")}


def test_amp_is_in_the_recipe_hash_only_when_on():
    off = TrainConfig()
    assert "amp" not in off.to_dict()  # hashes of float32 recipes are what they were
    bf16 = dataclasses.replace(off, amp="bf16")
    assert bf16.to_dict()["amp"] == "bf16"
    assert checkpoint_path(bf16) != checkpoint_path(off)
    with pytest.raises(UsageError, match="unknown amp"):
        TrainConfig(amp="fp8")


def test_precision_scales_only_fp16():
    from poolbench.training.runtime import Precision, default_amp

    assert Precision("fp16", "cpu").scaler is not None
    assert Precision("bf16", "cpu").scaler is None and Precision("off", "cpu").dtype is None
    assert default_amp("cuda:1") == "bf16" and default_amp("cpu") == "off"


@pytest.mark.slow
def test_bf16_autocast_trains_lift_on_cpu(bundle):
    cfg = dataclasses.replace(TINY, pool="lift", amp="bf16")
    result = train.train(cfg, bundle, progress=False)
    assert result.info["amp"] == "bf16"
    assert all(torch.isfinite(t).all() for t in result.model.state_dict().values() if t.is_floating_point())
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast, not a cast


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_interrupted_in_process_then_resumed(tmp_path, monkeypatch, device):
    """An exception in the middle of epoch 2 (after mid-epoch checkpoints), then the same call:
    it resumes and ends with the uninterrupted run's weights (equal on CPU; on CUDA, whose
    kernels need not be deterministic, close)."""
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    cfg = dataclasses.replace(TINY, pool="lift", epochs=2, warmup_epochs=1)
    data = load_bundle(cfg)
    expected = train.train(cfg, data, device, progress=False).model.state_dict()
    result = interrupted_then_resumed(cfg, data, monkeypatch, device)
    assert result.info["resumed_from"] == {"epoch": 1, "step": 1}
    got = result.model.state_dict()
    for k in expected:
        if device == "cpu":
            assert torch.equal(got[k], expected[k]), k
        else:
            torch.testing.assert_close(got[k], expected[k], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("pool", ["lift", "max"])
def test_bf16_training_on_cuda(pool):
    cfg = dataclasses.replace(TINY, pool=pool, amp="bf16")
    result = train.train(cfg, load_bundle(cfg), "cuda", progress=False)
    assert result.info["amp"] == "bf16" and result.info["final_task_loss"] < 10
    assert all(torch.isfinite(t).all() for t in result.model.state_dict().values() if t.is_floating_point())


def test_training_loader_settings(bundle):
    from poolbench.training.runtime import TrainSettings, train_loader

    loader, sampler, _ = train_loader(bundle.train, 64, 0, 0, 1, 2, "cpu")
    assert loader.num_workers == 2 and loader.persistent_workers and not loader.pin_memory
    cuda_loader, _, _ = train_loader(bundle.train, 64, 0, 0, 1, 0, "cuda:1")
    assert cuda_loader.pin_memory and not cuda_loader.persistent_workers
    settings = TrainSettings()
    assert settings.loader_workers_for("shapes") == 0 and settings.loader_workers_for("imagefolder") >= 1
    assert settings.eval_every_for("shapes") == 1 and settings.eval_every_for("imagefolder") == 0
    assert settings.check_every_for("cpu") == 1 and settings.check_every_for("cuda") == 50
    with pytest.raises(UsageError, match="checkpoint-minutes"):
        TrainSettings(checkpoint_minutes=-1)


class _Recorder(nn.Module):
    """A fixed per-image function that records the batch sizes it sees (in a list its
    evaluation copies share: predict evaluates a copy of the model)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.sizes: list[int] = []
        sizes = self.sizes
        self.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))

    def forward(self, x):
        return self.conv(x).mean((2, 3))


@pytest.mark.parametrize("side, n, expected", [(224, 45, [20, 20, 5]), (32, 300, [256, 44])])
def test_evaluation_batches_are_bounded_by_pixels_and_do_not_change_the_logits(side, n, expected):
    torch.manual_seed(0)
    model = _Recorder()
    images = torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8)
    logits = predict(model, images)
    assert model.sizes == expected  # 2**20 pixels: 20 images at 224 px, 256 (the cap) at 32
    one_by_one = torch.cat([predict(model, images[i:i + 1]) for i in range(0, n, 7)])
    torch.testing.assert_close(logits[::7], one_by_one, rtol=1e-5, atol=1e-5)


def test_steps_per_epoch_stay_fixed_while_a_resume_skips(bundle):
    """Regression: Run.steps read len(loader), which shrinks while a resumed epoch skips the
    batches it already trained, so a resumed run used the wrong learning rate and step index."""
    run = train.Run.start(TINY, bundle, "cpu", CLASSIFICATION, TrainSettings(), None)
    run.sampler.skip = TINY.batch_size
    assert len(run.loader) == run.steps - 1 and run.steps == TINY.train_size // TINY.batch_size
