import dataclasses
import textwrap

import pytest
import torch
from torch import nn

import poolbench
from poolbench import registry
from poolbench.errors import PluginError, PoolOptionError, UnknownPoolError, UsageError


@pytest.fixture
def scratch_pools():
    """Remove pools a test registers, so tests stay independent."""
    before = set(poolbench.list_pools())
    yield
    for name in set(poolbench.list_pools()) - before:
        registry.unregister_pool(name)


class Identity2(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 2) * self.scale


def test_parse_spec_types():
    name, opts = poolbench.parse_spec("Lift:bands=LL+HL,kernel_size=7,scale=0.5,flag=true,mode=none")
    assert name == "lift"
    assert opts == {"bands": "LL+HL", "kernel_size": 7, "scale": 0.5, "flag": True, "mode": None}
    assert isinstance(opts["kernel_size"], int) and isinstance(opts["scale"], float)


def test_format_spec_roundtrip():
    text = poolbench.format_spec("lift", {"kernel_size": 7, "bands": "LL", "fast": False})
    assert text == "lift:bands=LL,fast=false,kernel_size=7"
    assert poolbench.parse_spec(text) == ("lift", {"bands": "LL", "fast": False, "kernel_size": 7})


@pytest.mark.parametrize("bad", ["", "max:k", "max:=3"])
def test_parse_spec_rejects_malformed(bad):
    with pytest.raises(UsageError):
        poolbench.parse_spec(bad)


def test_register_and_build_with_options(scratch_pools):
    @poolbench.register_pool("scaled-avg", display_name="Scaled", stochastic=False)
    def factory(channels, scale: float = 1.0):
        return Identity2(scale)

    # names are case- and -/_ insensitive
    pool = poolbench.get_pool("Scaled_Avg:scale=2", 3)
    assert pool.scale == 2.0 and isinstance(pool.scale, float)  # int promoted to float
    assert poolbench.get_pool("scaled-avg", 3, scale=3.0).scale == 3.0
    spec = poolbench.get_spec("SCALED_avg")
    assert spec.options == {"scale": 1.0}
    # registered in-process, not through a plugin loader: recorded as built-in, this version
    assert spec.source == "built-in" and spec.version == poolbench.__version__
    x = torch.ones(1, 3, 4, 4)
    assert torch.allclose(pool(x), 2 * torch.ones(1, 3, 2, 2))


def test_duplicate_name_needs_override(scratch_pools):
    @poolbench.register_pool("dup_pool")
    def first(channels):
        return nn.MaxPool2d(2)

    with pytest.raises(UsageError, match="already registered"):
        @poolbench.register_pool("Dup-Pool")
        def second(channels):
            return nn.AvgPool2d(2)

    @poolbench.register_pool("dup-pool", override=True)
    def third(channels):
        return nn.AvgPool2d(2)

    assert isinstance(poolbench.get_pool("dup_pool", 1), nn.AvgPool2d)


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownPoolError) as info:
        poolbench.get_pool("maxx", 3)
    assert "max" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_option_lists_accepted():
    with pytest.raises(PoolOptionError) as info:
        poolbench.get_pool("max:size=3", 3)
    assert "up=unpool" in str(info.value) and "blur_size=3" in str(info.value)


def test_ill_typed_option_lists_accepted():
    with pytest.raises(PoolOptionError, match="should be int"):
        poolbench.get_pool("max:blur_size=2.5", 3)
    with pytest.raises(PoolOptionError, match="should be str"):
        poolbench.get_pool("max:up=3", 3)


def test_bad_choice_names_accepted_values():
    with pytest.raises(PoolOptionError) as info:
        poolbench.get_pool("max:up=sideways", 3)
    assert "'unpool'" in str(info.value) and "'unpool_blur'" in str(info.value)


def test_list_pools_pattern():
    assert "max" in poolbench.list_pools()
    assert poolbench.list_pools("ma*") == [n for n in poolbench.list_pools() if n.startswith("ma")]


def test_factory_must_take_channels():
    with pytest.raises(TypeError):
        @poolbench.register_pool("no_channels")
        def bad():
            return nn.Identity()


def test_factory_returning_non_module(scratch_pools):
    @poolbench.register_pool("returns_int")
    def bad(channels):
        return 3

    with pytest.raises(UsageError, match="not an nn.Module"):
        poolbench.get_pool("returns_int", 3)


def test_plugin_file_registers_with_its_source(tmp_path, scratch_pools):
    path = tmp_path / "my_plugin.py"
    path.write_text(textwrap.dedent("""
        from torch import nn
        from poolbench import register_pool

        @register_pool("plugin_pool_a", convex=True)
        def make(channels):
            return nn.AvgPool2d(2)
    """))
    poolbench.load_plugin(str(path))
    spec = poolbench.get_spec("plugin_pool_a")
    assert spec.source == f"file:{path}"
    assert spec.convex


def test_broken_plugin_is_recorded_not_fatal(tmp_path, scratch_pools):
    path = tmp_path / "broken_plugin.py"
    path.write_text(textwrap.dedent("""
        from torch import nn
        from poolbench import register_pool

        @register_pool("half_registered")
        def make(channels):
            return nn.AvgPool2d(2)

        raise RuntimeError("boom")
    """))
    poolbench.load_plugin(str(path))
    failures = [f for f in poolbench.plugin_failures() if f.name == "broken_plugin"]
    assert failures and "RuntimeError: boom" in failures[0].error
    # what the broken plugin registered before failing is rolled back; others still work
    assert "half_registered" not in poolbench.list_pools()
    assert isinstance(poolbench.get_pool("max", 3), nn.Module)


def test_clashing_plugin_is_recorded(tmp_path):
    path = tmp_path / "clash_plugin.py"
    path.write_text("from torch import nn\nfrom poolbench import register_pool\n"
                    "@register_pool('max')\ndef make(channels):\n    return nn.Identity()\n")
    poolbench.load_plugin(str(path))
    assert any(f.name == "clash_plugin" and "already registered" in f.error
               for f in poolbench.plugin_failures())
    assert poolbench.get_spec("max").source == "built-in"


def test_missing_plugin_file_is_a_usage_error():
    with pytest.raises(PluginError, match="not found"):
        poolbench.load_plugin("does/not/exist.py")
    with pytest.raises(PluginError, match="cannot be imported"):
        poolbench.load_plugin("no_such_module_xyz")


def test_register_spec_object(scratch_pools):
    spec = poolbench.PoolSpec(name="Spec-Pool", factory=lambda channels: nn.MaxPool2d(2),
                              display_name="SpecPool")
    poolbench.register_spec(spec)
    assert poolbench.get_spec("spec_pool").display_name == "SpecPool"
    with pytest.raises(dataclasses.FrozenInstanceError):
        poolbench.get_spec("spec_pool").name = "x"
