"""Backbones, the model factory and pool surgery (poolbench.models)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import poolbench
from poolbench.errors import UsageError
from poolbench.models import (
    create_model,
    list_models,
    model_info,
    model_spec,
    parse_model,
    pool_sites,
    set_padding,
    swap_pools,
)
from poolbench.registry import register_pool, unregister_pool

ALL_MODELS = ["convnet", "mobilenet_v2", "resnet18", "resnet18_cifar", "resnet50", "vgg13",
              "vgg13_bn_cifar"]
# vgg13 is the ImageNet VGG (133M parameters; 1-4 s a case on 2 cores): its cases are slow;
# vgg13_bn_cifar keeps the same surgery in the fast lane


def small_size(name: str) -> int:
    return 32 if model_info(name).input_size == 32 else 64


def ops(model: nn.Module) -> list[nn.Module]:
    return [site.op for _, site in pool_sites(model)]


def strided_convs(model: nn.Module) -> list[str]:
    """Stride-2 convs outside the pooling operators themselves."""
    inside = {id(m) for _, s in pool_sites(model) for m in s.op.modules()}
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and tuple(m.stride) != (1, 1) and id(m) not in inside]


def feature_shapes(model: nn.Module, x: torch.Tensor, layers: list[str]) -> tuple:
    shapes = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape))) for n in layers]
    with torch.no_grad():
        out = model.eval()(x)
    for h in handles:
        h.remove()
    return tuple(out.shape), shapes


def test_list_models():
    assert list_models() == ALL_MODELS


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "vgg13" else n
                                  for n in ALL_MODELS])
def test_logits_shape(name):
    torch.manual_seed(0)
    model = create_model(name, 7, pool="avg").eval()
    s = small_size(name)
    with torch.no_grad():
        out = model(torch.rand(2, 3, s, s))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert model.pool_spec == "avg" and model.pool_policy == model_info(name).default_policy
    assert len(model.pool_sites) > 0


@pytest.mark.parametrize("name", [pytest.param("vgg13", marks=pytest.mark.slow), "vgg13_bn_cifar"])
def test_vgg_has_five_operators_and_no_maxpool(name):
    model = create_model(name, 10, pool="avg")
    assert len(model.pool_sites) == 5
    assert all(type(op).__name__ == type(poolbench.get_pool("avg", 1)).__name__ for op in ops(model))
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    baseline = create_model(name, 10, pool=None)
    assert sum(isinstance(m, nn.MaxPool2d) for m in baseline.modules()) == 5
    assert baseline.pool_sites == []


@pytest.mark.parametrize("name", [pytest.param("vgg13", marks=pytest.mark.slow), "vgg13_bn_cifar"])
def test_swapping_max_for_avg_keeps_parameter_count(name):
    def count(m):
        return sum(p.numel() for p in m.parameters())

    base, mx, avg = (create_model(name, 10, pool=p) for p in (None, "max", "avg"))
    assert count(base) == count(mx) == count(avg)


def test_resnet_maxpool_policy_swaps_the_stem_only_and_keeps_its_size():
    torch.manual_seed(0)
    model = create_model("resnet18", 10, pool="avg")
    assert model.pool_sites == ["backbone.maxpool"]
    out, shapes = feature_shapes(model, torch.rand(1, 3, 224, 224),
                                 ["backbone.maxpool", "backbone.layer4"])
    assert shapes["backbone.maxpool"] == (1, 64, 56, 56)
    assert shapes["backbone.layer4"] == (1, 512, 7, 7)
    assert out == (1, 10)
    # the operator is the registry's avg pool, exactly
    stem = torch.rand(1, 64, 112, 112)
    ref = poolbench.get_pool("avg", 64)
    assert torch.equal(model.backbone.maxpool(stem), ref(stem))


@pytest.mark.parametrize("name,sites", [("resnet18", 4 + 3 + 1), ("resnet18_cifar", 6),
                                        ("mobilenet_v2", 5)])
def test_downsampling_policy_leaves_no_stride2_conv(name, sites):
    model = create_model(name, 10, pool="avg", policy="downsampling")
    assert strided_convs(create_model(name, 10, pool=None))  # the baseline has some
    assert strided_convs(model) == []
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    # resnet18: stem conv + 3 stage convs + stem max pool + 3 shortcuts
    assert len(model.pool_sites) == sites


def test_resnet_shortcut_gets_the_operator_before_its_1x1_conv():
    model = create_model("resnet18_cifar", 10, pool="avg")
    shortcut = model.backbone.layer2[0].downsample[0]
    assert list(dict(shortcut.named_children())) == ["pool", "conv"]
    assert shortcut.conv.kernel_size == (1, 1) and shortcut.conv.stride == (1, 1)
    assert shortcut.pool.channels == 64
    main = model.backbone.layer2[0].conv1
    assert list(dict(main.named_children())) == ["conv", "pool"]
    assert main.pool.channels == 128
    assert "backbone.layer2.0.downsample.0.pool" in model.pool_sites


def _stage_names(name):
    if name == "mobilenet_v2":
        return [f"backbone.features.{i}" for i in range(19)]
    if name == "resnet18_cifar":
        return ["backbone.conv1"] + [f"backbone.layer{i}" for i in range(1, 5)]
    return ["backbone.conv1", "backbone.maxpool"] + [f"backbone.layer{i}" for i in range(1, 5)]


@pytest.mark.parametrize("name,size", [("mobilenet_v2", 32), ("mobilenet_v2", 64),
                                       ("mobilenet_v2", 224), ("mobilenet_v2", 57),
                                       ("resnet18_cifar", 32), ("resnet18_cifar", 33),
                                       ("resnet18", 64), ("resnet18", 75)])
def test_downsampling_keeps_every_feature_shape(name, size):
    """Output and intermediate shapes equal the unswapped baseline's, odd sizes included."""
    x = torch.rand(1, 3, size, size)
    layers = _stage_names(name)
    base = feature_shapes(create_model(name, 10, pool=None), x, layers)
    swapped_model = create_model(name, 10, pool="avg", policy="downsampling")
    swapped = feature_shapes(swapped_model, x, layers)
    assert swapped == base


def test_standard_sizes_need_no_padding_or_cropping():
    """At 32/64/224 every pooling point sees even sizes: the operator runs unchanged."""
    for name, size in [("resnet18", 224), ("mobilenet_v2", 224), ("resnet18_cifar", 32),
                       ("vgg13_bn_cifar", 32), ("convnet", 32), ("mobilenet_v2", 64)]:
        model = create_model(name, 10, pool="avg", policy="downsampling").eval()
        odd = []
        handles = [site.register_forward_pre_hook(
            lambda _m, args, n=n: odd.append(n) if any(s % 2 for s in args[0].shape[-2:]) else None)
            for n, site in pool_sites(model)]
        with torch.no_grad():
            model(torch.rand(1, 3, size, size))
        for h in handles:
            h.remove()
        assert odd == [], (name, size, odd)


def test_normalize_is_applied_first():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    model = create_model("convnet", 10, mean=mean, std=std).eval()
    assert isinstance(list(model.children())[0], poolbench.models.Normalize)
    seen = {}
    model.normalize.register_forward_hook(lambda _m, _i, out: seen.setdefault("out", out))
    first_conv_in = {}
    model.backbone.features[0].register_forward_pre_hook(
        lambda _m, args: first_conv_in.setdefault("x", args[0]))
    x = torch.full((1, 3, 8, 8), 0.9)
    x[0, 2, 1, 1] = 0.0
    with torch.no_grad():
        model(x)
    out = seen["out"]
    assert out[0, 0, 0, 0].item() == pytest.approx((0.9 - 0.5) / 0.2)   # 2.0
    assert out[0, 1, 0, 0].item() == pytest.approx((0.9 - 0.4) / 0.25)  # 2.0
    assert out[0, 2, 0, 0].item() == pytest.approx((0.9 - 0.3) / 0.5)   # 1.2
    assert out[0, 2, 1, 1].item() == pytest.approx((0.0 - 0.3) / 0.5)   # -0.6
    assert torch.equal(first_conv_in["x"], out)
    state = model.state_dict()
    assert torch.allclose(state["normalize.mean"].flatten(), torch.tensor(mean))
    assert torch.allclose(state["normalize.std"].flatten(), torch.tensor(std))


def test_normalize_defaults_and_errors():
    model = create_model("convnet", 10)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(model.normalize(x), x)
    with pytest.raises(UsageError, match="2 values but the model takes 3"):
        create_model("convnet", 10, mean=(0.5, 0.5))
    with pytest.raises(UsageError, match="positive"):
        create_model("convnet", 10, std=0.0)


def test_in_chans():
    for name in ("convnet", "resnet18"):
        model = create_model(name, 4, in_chans=1, mean=0.5, std=0.25).eval()
        s = small_size(name)
        with torch.no_grad():
            assert model(torch.rand(2, 1, s, s)).shape == (2, 4)


def test_unknown_model_names_close_matches():
    with pytest.raises(UsageError, match=r"unknown model 'resnet81'.*did you mean.*resnet18"):
        create_model("resnet81", 10)


def test_unknown_policy_and_pool():
    with pytest.raises(UsageError, match="did you mean 'maxpool'"):
        create_model("convnet", 10, policy="maxpools")
    with pytest.raises(UsageError, match="unknown pool 'mux'"):
        create_model("convnet", 10, pool="mux")


def test_cifar_resnet_has_no_maxpool_to_swap():
    with pytest.raises(UsageError, match="downsampling"):
        create_model("resnet18_cifar", 10, pool="avg", policy="maxpool")


def test_default_max_is_the_registry_operator():
    model = create_model("convnet", 10)
    assert model.pool_spec == "max" and len(model.pool_sites) == 3
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model.training and all(m.training for m in model.modules())


def test_swap_pools_again_replaces_the_operators():
    model = create_model("convnet", 10, pool="avg")
    sites = list(model.pool_sites)
    before = type(ops(model)[0])
    swap_pools(model, "max")
    assert model.pool_sites == sites and model.pool_spec == "max"
    assert type(ops(model)[0]) is not before


def test_swap_pools_on_a_plain_model_traces_channels():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.MaxPool2d(3, 2, 1),
                          nn.Conv2d(16, 4, 3, stride=2, padding=1))
    swap_pools(model, "avg")
    assert model.pool_sites == ["1", "3"]
    assert [s.channels for _, s in pool_sites(model)] == [8, 16]
    assert model(torch.rand(1, 3, 18, 18)).shape == (1, 4, 3, 3)  # 18 -> 9 -> 5 -> 3, as before
    swap_pools(model, "max", policy="downsampling")
    assert model.pool_sites == ["1", "3", "4.pool"] and strided_convs(model) == []
    assert model(torch.rand(1, 3, 18, 18)).shape == (1, 4, 3, 3)


def test_stride1_maxpool_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.MaxPool2d(3, 1, 1))
    with pytest.raises(UsageError, match="layer '1'.*stride 1"):
        swap_pools(model, "avg")


@pytest.fixture
def bad_pools():
    names = ["_test_wrong_shape", "_test_needs_64"]

    @register_pool(names[0], override=True)
    def wrong_shape(channels):
        return nn.Identity()

    @register_pool(names[1], override=True)
    def needs_64(channels):
        if channels % 64:
            raise ValueError(f"channels must be a multiple of 64, got {channels}")
        return nn.AvgPool2d(2)

    yield names
    for n in names:
        unregister_pool(n)


def test_a_pool_failing_at_a_layer_names_layer_and_pool(bad_pools):
    with pytest.raises(UsageError, match=r"_test_wrong_shape.*backbone\.features\.3.*expected"):
        create_model("convnet", 10, pool="_test_wrong_shape")
    with pytest.raises(UsageError, match=r"_test_needs_64.*backbone\.features\.3.*32 channels"):
        create_model("convnet", 10, pool="_test_needs_64")


@pytest.mark.parametrize("pool", ["blur", "lift"])
@pytest.mark.parametrize("name", ["convnet", "resnet18_cifar"])
def test_other_operators_forward_and_backward(pool, name):
    torch.manual_seed(0)
    model = create_model(name, 10, pool=pool)
    assert model.pool_spec == pool and model.pool_sites
    want = type(poolbench.get_pool(pool, 8))
    assert all(type(op) is want for op in ops(model))
    model.train()
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    # every parameter (the operators' own included) gets a finite gradient, and it reaches the stem
    grads = dict((n, p.grad) for n, p in model.named_parameters())
    assert [n for n, g in grads.items() if g is None] == []
    assert all(torch.isfinite(g).all() for g in grads.values())
    stem = next(n for n, p in model.named_parameters() if p.dim() == 4)
    assert grads[stem].abs().sum() > 0
    if pool == "lift":
        assert any(".predictor." in n for n in grads) and any(".updater." in n for n in grads)


def test_creation_is_seeded():
    torch.manual_seed(0)
    a = create_model("resnet18_cifar", 10, pool="avg").state_dict()
    torch.manual_seed(0)
    b = create_model("resnet18_cifar", 10, pool="avg").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(1)
    c = create_model("resnet18_cifar", 10, pool="avg").state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seed is what makes them equal


# --- backbone padding (the model option :padding=) ----------------------------------------------

def test_model_names_carry_the_padding():
    assert parse_model("convnet:padding=circular") == ("convnet", "circular")
    assert model_spec("convnet:padding=zeros") == "convnet"          # existing names and hashes stay
    assert model_spec("resnet18_cifar", "circular") == "resnet18_cifar:padding=circular"
    with pytest.raises(UsageError, match="padding"):
        parse_model("convnet:padding=mirror")
    with pytest.raises(UsageError, match="no option"):
        parse_model("convnet:width=3")


def test_circular_padding_reaches_every_backbone_conv_and_no_pool():
    m = create_model("convnet:padding=circular", 10, pool="lip")   # its logit conv is padded
    convs = [c for n, c in m.backbone.named_modules() if isinstance(c, torch.nn.Conv2d) and ".op." not in n]
    assert convs and all(c.padding_mode == "circular" for c in convs) and m.padding == "circular"
    inside = [c for n, c in m.backbone.named_modules() if isinstance(c, torch.nn.Conv2d) and ".op." in n]
    assert inside and all(c.padding_mode != "circular" for c in inside)
    assert set_padding(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Conv2d(1, 1, 3, padding=1)),
                       "circular") == 1


def test_padding_is_an_option_of_every_backbone_name():
    assert model_info("ResNet18-CIFAR:padding=circular").name == "resnet18_cifar"
    m = create_model("resnet18_cifar", 10, pool="avg", padding="circular")
    convs = [c for c in m.backbone.modules() if isinstance(c, nn.Conv2d)]
    padded = [c for c in convs if c.padding != (0, 0)]
    assert padded and all(c.padding_mode == "circular" for c in padded)
    assert all(c.padding_mode == "zeros" for c in convs if c.padding == (0, 0))  # 1x1 shortcuts
    # the keyword wins over the name, and zeros is the default
    assert create_model("convnet:padding=circular", 10, padding="zeros").padding == "zeros"
    assert create_model("convnet", 10).padding == "zeros"
