"""SegNet with paired down/up-pooling, reconstruction PSNR, and the segmentation suite."""
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import poolbench
from poolbench import registry
from poolbench.config import TrainConfig
from poolbench.errors import UsageError
from poolbench.models.segnet import DEFAULT_WIDTHS, VARIANTS, create_segnet, resolve_variant, segnet_widths
from poolbench.runner import RunContext
from poolbench.suites.base import train_config_of
from poolbench.suites.segmentation.reconstruction import load_sample_image, reconstruct, reconstruction_psnr
from poolbench.suites.segmentation.suite import RECIPE_KEYS, SUITE, SegmentationOptions, variants_for
from poolbench.suites.segmentation.task import SEGNET, load_segmentation_data
from poolbench.training.loop import TrainingDiverged, train

HAS_LIFT = "lift" in poolbench.list_pools()
TINY_RECIPE = {"train_size": 16, "test_size": 8, "epochs": 1, "batch_size": 8}
needs_lift = pytest.mark.skipif(not HAS_LIFT, reason="poolbench/pools/lift.py not registered yet")


def cells(train_configs, **options):
    return SUITE.cells(train_configs, SUITE.options(options))


def _variants():
    return [pytest.param(v, marks=needs_lift) if v == "lift" else v for v in VARIANTS]


# --- variants ---------------------------------------------------------------------------------

def test_resolve_variant_maps_pool_specs():
    assert resolve_variant("max").name == "max_unpool"
    assert resolve_variant("max:up=unpool_blur") == VARIANTS["max_unpool_blur"]
    assert resolve_variant("bilinear") == VARIANTS["bilinear"]
    v = resolve_variant("avg")
    assert (v.name, v.pool, v.upsample) == ("bilinear_avg", "avg", "bilinear")
    assert resolve_variant("bilinear_avg") == v
    assert resolve_variant("max", upsample="bilinear") == VARIANTS["bilinear"]
    with pytest.raises(UsageError, match="not invertible"):
        resolve_variant("avg", upsample="paired")
    with pytest.raises(UsageError, match="unknown pool"):
        resolve_variant("nosuchpool")


@needs_lift
def test_resolve_variant_lift_keeps_ll_by_default():
    assert resolve_variant("lift") == VARIANTS["lift"]
    v = resolve_variant("lift:kernel_size=3")
    assert (v.name, v.pool) == ("lift", "lift:bands=LL,kernel_size=3")
    assert resolve_variant("lift:bands=sum").pool == "lift:bands=sum"  # an explicit choice stays


def test_default_variants_are_the_four():
    names = [v.name for v in variants_for([], None)]
    assert names == ["max_unpool", "max_unpool_blur", "lift", "bilinear"] or not HAS_LIFT
    assert [v.name for v in variants_for(["max", "max:up=unpool_blur"])] == ["max_unpool", "max_unpool_blur"]
    assert [v.name for v in variants_for(["max"], "bilinear,max:up=unpool_blur,blur_size=5")] == \
        ["bilinear", "max_unpool_blur"]


# --- the model --------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", _variants())
@pytest.mark.parametrize("size", [(32, 32), (20, 27)])
def test_segnet_output_shape(variant, size):
    torch.manual_seed(0)
    model = create_segnet(5, variant, widths=(8, 16, 16))
    x = torch.rand(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 5, *size)
    out.sum().backward()                      # gradients flow through every up-pool
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_segnet_decoder_channels_follow_pooled_state():
    """A down-pool that changes channels (lift bands=concat: 4C) is still paired correctly."""
    if not HAS_LIFT:
        pytest.skip("lift not registered yet")
    model = create_segnet(3, "lift:bands=concat", widths=(4, 8))
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    assert model.encoder[1][0][0].in_channels == 16


def test_segnet_rejects_non_invertible_paired():
    with pytest.raises(UsageError, match="not invertible"):
        create_segnet(3, "avg", upsample="paired")
    assert create_segnet(3, "avg", widths=(4,))(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)


@needs_lift
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_lift_segnet_pools_round_trip_exact(dtype, tol):
    """With the decoder passing the pooled map unchanged, up(down(x)) through all three paired
    LiftPool layers gives x back, for random (untrained) P and U, in training mode too."""
    torch.manual_seed(0)
    model = create_segnet(4, "lift", widths=(6, 6, 6)).to(dtype)
    for p in model.parameters():
        p.data.normal_(0, 0.5)
    x = torch.randn(2, 6, 16, 24, dtype=dtype)
    for mode in (True, False):
        model.train(mode)
        y, states = x, []
        for pool in model.pools:
            y, s = pool.down(y)
            states.append(s)
        assert y.shape == (2, 6, 2, 3)
        for pool, s in zip(reversed(model.pools), reversed(states)):
            y = pool.up(y, s)
        assert torch.allclose(y, x, atol=tol, rtol=0)


def test_max_unpool_round_trip_is_not_exact():
    model = create_segnet(4, "max_unpool", widths=(3,))
    x = torch.rand(1, 3, 8, 8)
    y, s = model.pools[0].down(x)
    back = model.pools[0].up(y, s)
    assert (back == 0).sum() == 3 * 16 * 3        # 3 holes in each of the 16 windows per channel
    assert torch.equal(back.amax((-1, -2)), x.amax((-1, -2)))


# --- reconstruction ---------------------------------------------------------------------------

def test_max_unpool_psnr_on_crafted_images():
    one = np.array([[1.0, 0.0], [0.0, 0.0]])
    value, out = reconstruction_psnr(one, "max_unpool")
    assert value == math.inf and np.array_equal(out, one)
    flat = np.ones((2, 2))
    value, out = reconstruction_psnr(flat, "max_unpool")
    assert np.array_equal(out, [[1.0, 0.0], [0.0, 0.0]])      # 3 of 4 pixels lost: MSE 0.75
    assert value == pytest.approx(10 * math.log10(1 / 0.75))
    value, out = reconstruction_psnr(flat, "bilinear_avg")
    assert value == math.inf                                  # a constant survives bilinear


def test_reconstruct_layout_and_crop():
    rgb = np.random.default_rng(0).random((9, 13, 3))
    out = reconstruct(rgb, "max_unpool", levels=2)
    assert out.shape == (8, 12, 3)
    u8 = (rgb[..., 0] * 255).astype(np.uint8)
    assert reconstruct(u8, "bilinear").shape == (8, 12)
    with pytest.raises(UsageError):
        reconstruct(rgb, "max", levels=0)


@needs_lift
def test_lift_reconstruction_of_a_natural_image_is_exact():
    image = load_sample_image("camera")[:128, :128]
    p64, out = reconstruction_psnr(image, "lift", dtype="float64", levels=2)
    p32, _ = reconstruction_psnr(image, "lift", dtype="float32", levels=2)
    pmax, _ = reconstruction_psnr(image, "max_unpool", dtype="float64", levels=2)
    assert out.shape == image.shape
    assert p64 > 200 and p32 > 100
    assert math.isfinite(pmax) and pmax < 20 and p32 - pmax > 80


def test_sample_images_load():
    a = load_sample_image("astronaut")
    assert a.shape == (512, 512, 3) and 0 <= a.min() and a.max() <= 1
    assert load_sample_image("camera").ndim == 2
    with pytest.raises(UsageError):
        load_sample_image("no_such_image")


# --- the suite --------------------------------------------------------------------------------

def test_cells_are_json_and_cover_variants_and_reconstruction():
    made = cells([TrainConfig(pool="max", seed=3)], variants="all", epochs=2)
    json.dumps(made)
    trained = [c for c in made if c["kind"] == "train"]
    rec = [c for c in made if c["kind"] == "reconstruction"]
    expect = ["max_unpool", "max_unpool_blur", "lift", "bilinear"] if HAS_LIFT else None
    if expect:
        assert [c["variant"] for c in trained] == expect
    assert {c["train"]["model"] for c in trained} == {"segnet"}
    assert {c["train"]["dataset"] for c in trained} == {"shapes-seg"}
    assert {c["train"]["seed"] for c in trained} == {3} and {c["train"]["epochs"] for c in trained} == {2}
    assert "bilinear_avg" in [c["method"] for c in rec]
    # bilinear and max_unpool share the pool "max" but not the checkpoint (policy differs)
    bil = next(c for c in trained if c["variant"] == "bilinear")["train"]
    mx = next(c for c in trained if c["variant"] == "max_unpool")["train"]
    assert bil["pool"] == mx["pool"] == "max" and bil["policy"] != mx["policy"]
    wide = cells([TrainConfig()], variants="max", widths=[32, 64, 128], reconstruction=False)
    assert [c["train"]["model"] for c in wide] == ["segnet-32-64-128"]    # its own checkpoint hash
    assert segnet_widths("segnet-32-64-128") == (32, 64, 128) and segnet_widths("segnet") == DEFAULT_WIDTHS
    with pytest.raises(UsageError, match="unknown segmentation model"):
        segnet_widths("segnet-x")


def test_seeds_option_makes_one_cell_per_variant_and_seed():
    made = cells([TrainConfig(pool="max")], variants="max_unpool", seeds=[0, 1, 2], reconstruction=False)
    assert [c["train"]["seed"] for c in made] == [0, 1, 2]
    assert {c["train"]["warmup_epochs"] for c in made} == {2}     # the recipe default
    # without the option the seeds are those of the training configs
    made = cells([TrainConfig(pool="max", seed=s) for s in (4, 5)], variants="max_unpool", reconstruction=False)
    assert [c["train"]["seed"] for c in made] == [4, 5]


def test_table_gives_the_mean_and_the_seed_interval():
    rows = [{"pool": "max", "up_pool": "max_unpool", "metric": "miou", "value": v, "seed": s}
            for s, v in enumerate((40.0, 70.0, 100.0))]
    rows.append({"pool": "lift:bands=LL", "up_pool": "lift", "metric": "miou", "value": 55.0, "seed": 0})
    table = SUITE.table(pd.DataFrame(rows))
    assert table.loc["max_unpool", "mIoU %"] == pytest.approx(70.0)
    # Student-t over 40/70/100: 70 +- t(0.975, 2) * 30 / sqrt(3)
    half = 4.302653 * 30.0 / 3 ** 0.5
    assert table.loc["max_unpool", "mIoU % seeds lo"] == pytest.approx(70.0 - half, rel=1e-5)
    assert table.loc["max_unpool", "mIoU % seeds hi"] == pytest.approx(70.0 + half, rel=1e-5)
    assert pd.isna(table.loc["lift", "mIoU % seeds lo"]) and table.loc["lift", "seeds"] == 1


def test_miou_interval_comes_from_the_per_image_pixel_counts():
    # two images of 2 classes: image 0 all right, image 1 all wrong (class 1 predicted as 0)
    counts = np.zeros((2, 3, 2), np.int32)
    counts[0] = [[10, 10], [10, 10], [10, 10]]     # inter, predicted, target per class
    counts[1] = [[0, 0], [20, 0], [0, 20]]

    class Store:
        def arrays(self, suite, chash):
            return {"counts": counts}

    rows = [{"pool": "max", "up_pool": "max_unpool", "metric": m, "value": v, "seed": 0,
             "config_hash": "h", "predictions": "counts"} for m, v in (("miou", 100 * (10 / 30 + 10 / 30) / 2),
                                                                     ("pixel_accuracy", 50.0))]
    table = SUITE.table(pd.DataFrame(rows), None, Store())
    # resamples: both images once (1/2), image 0 twice (1/4: 100%), image 1 twice (1/4: 0%)
    assert table.loc["max_unpool", "mIoU % lo"] == pytest.approx(0.0)
    assert table.loc["max_unpool", "mIoU % hi"] == pytest.approx(100.0)
    assert table.loc["max_unpool", "pixel acc %"] == pytest.approx(50.0)


def test_reconstruction_cell_rows():
    cell = {"kind": "reconstruction", "method": "max_unpool", "pool": "max", "upsample": "paired",
            "images": ["camera"], "levels": 1, "dtypes": ["float32"], "seed": 0}
    rows = SUITE.run_cell(cell, RunContext(progress=False))
    assert [r["image"] for r in rows] == ["camera", "mean"]
    assert all(r["metric"] == "psnr" and r["unit"] == "dB" and 3 < r["value"] < 15 for r in rows)
    assert rows[0]["pool"] == "max" and rows[0]["up_pool"] == "max_unpool"
    bil = SUITE.run_cell({**cell, "method": "bilinear", "upsample": "bilinear"}, RunContext(progress=False))
    assert bil[0]["value"] > rows[0]["value"] + 10          # the cell's upsample is honoured


@needs_lift
def test_reconstruction_cell_uses_the_cells_pool_options():
    made = cells([TrainConfig(pool="lift:kernel_size=3")], images="camera", dtypes="float64")
    rec = [c for c in made if c["kind"] == "reconstruction"]
    assert [(c["method"], c["pool"]) for c in rec] == [("lift", "lift:bands=LL,kernel_size=3")]
    rows = SUITE.run_cell(rec[0], RunContext(progress=False))
    assert rows[0]["pool"] == "lift:bands=LL,kernel_size=3" and rows[0]["value"] > 200


@pytest.mark.slow
def test_train_cell_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    variant = "lift" if HAS_LIFT else "max_unpool"
    made = cells([TrainConfig(pool="max")], variants=variant, reconstruction=False, **TINY_RECIPE)
    assert len(made) == 1
    ctx = RunContext(results=str(tmp_path / "results"), progress=False)
    measured = SUITE.run_cell(made[0], ctx)
    rows = measured.rows
    counts = measured.arrays["counts"]                      # per image: inter, predicted, target
    assert counts.shape[1:] == (3, 11) and (counts[:, 0] <= counts[:, 2]).all()
    by = {r["metric"]: r for r in rows if r["metric"] != "iou"}
    assert 0 <= by["miou"]["value"] <= 100 and 0 <= by["pixel_accuracy"]["value"] <= 100
    assert by["miou"]["model"] == "segnet" and by["miou"]["dataset"] == "shapes-seg"
    assert by["miou"]["up_pool"] == variant and by["miou"]["seed"] == 0
    assert len([r for r in rows if r["metric"] == "iou"]) == 11
    if HAS_LIFT:
        assert {"final_lift_u", "final_lift_p"} <= set(by)
    ckpts = list((tmp_path / "cache" / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1
    trained_threads = torch.get_num_threads()
    assert by["miou"]["threads"] == by["miou"]["eval_threads"] == trained_threads
    other = 2 if trained_threads == 1 else 1
    torch.set_num_threads(other)
    try:
        again = SUITE.run_cell(made[0], ctx)        # from the checkpoint cache, same numbers
    finally:
        torch.set_num_threads(trained_threads)
    assert [r["value"] for r in again.rows if r["metric"] == "miou"] == [by["miou"]["value"]]
    # the rows say how the model was trained, not how the process that reused it runs
    # (regression: segmentation rows lacked the training's provenance)
    again_by = {r["metric"]: r for r in again.rows if r["metric"] != "iou"}
    assert again_by["miou"]["threads"] == trained_threads and again_by["miou"]["eval_threads"] == other
    assert np.array_equal(again.arrays["counts"], counts)
    json.dumps(rows)
    table = SUITE.table(pd.DataFrame(rows))
    assert list(table.index) == [variant] and "mIoU %" in table.columns


def _tiny_cfg(variant: str = "max_unpool_blur", **recipe) -> TrainConfig:
    made = cells([TrainConfig(pool="max")], variants=variant, reconstruction=False, **{**TINY_RECIPE, **recipe})
    return train_config_of(made[0])


def _bundle(cfg):
    return load_segmentation_data(cfg.dataset, cfg.seed, cfg.train_size, cfg.test_size)


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed():
    cfg = _tiny_cfg()
    bundle = _bundle(cfg)
    a = train(cfg, bundle, progress=False, task=SEGNET)
    b = train(cfg, bundle, progress=False, task=SEGNET)
    assert a.info["final_task_loss"] == b.info["final_task_loss"]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.info["world_size"] == 1 and a.info["epochs"] == 1


@pytest.mark.slow
def test_segnet_weights_blown_up_by_the_last_step_raise():
    # one step at an infinite learning rate: the loss seen is finite, the update leaves
    # non-finite weights (batch norm keeps a SegNet's loss finite at any finite lr)
    cfg = dataclasses.replace(_tiny_cfg("max_unpool", train_size=8, warmup_epochs=0, schedule="constant"),
                              lr=math.inf)
    with pytest.raises(TrainingDiverged, match=r"training segnet with max \(paired\) diverged: .* not finite "
                                               r"after the last step .*lower --lr"):
        train(cfg, _bundle(cfg), progress=False, task=SEGNET)


class _NaNPool(nn.Module):
    """Max pooling whose output turns NaN (an invertible down/up pair for the SegNet)."""

    def __init__(self, channels):
        super().__init__()
        self.inner = registry.get_pool("max", channels)

    def forward(self, x):
        return self.down(x)[0]

    def down(self, x):
        y, state = self.inner.down(x)
        return y * float("nan"), state

    def up(self, y, state):
        return self.inner.up(y, state)


@pytest.mark.slow
def test_segnet_nan_loss_is_an_error_row(tmp_path):
    before = set(registry.list_pools())
    spec = dataclasses.replace(registry.get_spec("max"), name="test_seg_nan", factory=_NaNPool,
                               source="test")
    registry.register_spec(spec)
    try:
        cell = cells([TrainConfig(pool="test_seg_nan")], reconstruction=False, **TINY_RECIPE)[0]
        ctx = RunContext(results=str(tmp_path), progress=False)
        with pytest.raises(TrainingDiverged, match="diverged at epoch 1 step 1"):
            SUITE.run_cell(cell, ctx)
        row = SUITE.error_row(cell, ctx, "training diverged")
        assert row["metric"] == "error" and row["pool"] == "test_seg_nan" and row["up_pool"] == "test_seg_nan"
    finally:
        for name in set(registry.list_pools()) - before:
            registry.unregister_pool(name)


# --- options ----------------------------------------------------------------------------------

def test_unknown_option_names_the_accepted_keys():
    with pytest.raises(UsageError) as info:
        SUITE.options({"epoch": 1})
    msg = str(info.value)
    assert "\n" not in msg and "unknown segmentation option epoch" in msg
    assert all(k in msg for k in (*RECIPE_KEYS, "variants", "widths", "images", "seeds", "dtypes"))


def test_options_are_typed_and_normalised():
    o = SUITE.options({"epochs": "3", "lr": 1, "nesterov": "false", "seeds": "0,2", "widths": "32/64",
                       "variants": "bilinear,max:up=unpool_blur,blur_size=5", "images": ["camera"],
                       "dtypes": "float64", "dataset": "shapes_seg", "train_size": None})
    assert (o.epochs, o.lr, o.nesterov, o.seeds, o.widths) == (3, 1.0, False, (0, 2), (32, 64))
    assert o.variants == ("bilinear", "max:up=unpool_blur,blur_size=5")
    assert (o.images, o.dtypes, o.dataset, o.train_size) == (("camera",), ("float64",), "shapes-seg", 2000)
    assert SUITE.options({}) == SegmentationOptions()
    # the SegNet recipe as documented (module docstring, measured notes): not a copy of the code
    assert SegmentationOptions().recipe == {
        "train_size": 2000, "test_size": 500, "epochs": 24, "batch_size": 16, "optimizer": "sgd",
        "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "schedule": "cosine",
        "warmup_epochs": 2}
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.epochs = 1


@pytest.mark.parametrize("values,match", [
    ({"epochs": 1.5}, "option 'epochs' must be int"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"widths": "16,x"}, r"widths must be a list of positive integers"),
    ({"widths": [16, 0]}, r"widths must be a list of positive integers"),
    ({"variants": "nosuchpool"}, "unknown pool"),
    ({"dtypes": "float16"}, "unknown segmentation dtype 'float16'"),
    ({"optimizer": "adam"}, r"optimizer must be one of sgd, adamw, got 'adam' \(--optimizer\)"),
    ({"schedule": "poly"}, "schedule must be one of cosine, step, constant"),
    ({"levels": 0}, "levels must be >= 1"),
])
def test_bad_options_fail_in_one_line(values, match):
    with pytest.raises(UsageError, match=match) as info:
        SUITE.options(values)
    assert "\n" not in str(info.value)


def test_no_named_pool_runs_all_four_variants_below_the_preset():
    assert SUITE.pool_defaults(()) == {"variants": "all"}
    assert SUITE.pool_defaults(("lift",)) == {}


def test_notes_state_the_uncertainty():
    notes = SUITE.notes(SUITE.options({"seeds": [0, 1, 2]}))
    assert any("over 3 training seeds" in n for n in notes)
    assert any("Student-t interval over training seeds" in n for n in notes)


# --- polyphase pools and their partners as variants ----------------------------------------

def test_aps_and_lps_are_variants_with_their_own_up_pools():
    made = cells([TrainConfig(pool="aps"), TrainConfig(pool="lps")], images="camera", dtypes="float64")
    trained = [c for c in made if c["kind"] == "train"]
    assert [(c["variant"], c["train"]["pool"], c["train"]["policy"]) for c in trained] == \
        [("aps", "aps", "paired"), ("lps", "lps", "paired")]
    named = cells([TrainConfig()], variants="aps:filter_size=3,lps", reconstruction=False)
    assert [c["train"]["pool"] for c in named] == ["aps:filter_size=3", "lps"]


def test_aps_reconstruction_is_the_kept_phase_and_blur_interpolates():
    # down then up keeps one pixel in four (the others zero); with the blur the holes are filled
    cell = {"kind": "reconstruction", "method": "aps", "pool": "aps", "upsample": "paired",
            "images": ["camera"], "levels": 1, "dtypes": ["float64"], "seed": 0}
    plain = SUITE.run_cell(cell, RunContext(progress=False))[0]["value"]
    blurred = SUITE.run_cell({**cell, "pool": "aps:filter_size=3"}, RunContext(progress=False))[0]["value"]
    assert 3 < plain < 15 and blurred > plain + 10


@pytest.mark.parametrize("variant", ["aps", "lps"])
def test_polyphase_segnet_trains_a_step_and_its_eval_is_shift_equivariant(variant):
    torch.manual_seed(0)
    net = create_segnet(3, variant, widths=(4, 8))
    x = torch.rand(2, 3, 16, 16)
    net.train()
    loss = net(x).square().mean()   # the Gumbel mix (lps) and the hard choice (aps) both backpropagate
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    # with circular padding everywhere a SegNet of polyphase pairs is exactly shift-equivariant
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.padding != (0, 0):
            m.padding_mode = "circular"
    net.eval()
    with torch.no_grad():
        ref = net(x)
        for shift in ((1, 0), (3, 5), (2, 7)):
            out = net(torch.roll(x, shift, dims=(2, 3)))
            torch.testing.assert_close(out, torch.roll(ref, shift, dims=(2, 3)), rtol=1e-4, atol=1e-5)
