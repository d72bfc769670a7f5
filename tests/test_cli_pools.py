"""`poolbench pools` and the command line itself. Most tests call the CLI in this process; the
ones that need a fresh interpreter (plugin discovery reads the environment once per process)
run `python -m poolbench.cli` in a subprocess and are marked slow."""
import json
import os
import subprocess
import sys
import warnings
from importlib.metadata import entry_points

import pytest

BUILTINS = {"max", "avg", "skip", "blur", "mixed", "gated", "gauss", "spectral", "wavelet",
            "dpp", "s3", "lift"}


def run_cli(*args, env=None):
    """A fresh `python -m poolbench.cli` process (~1.5 s): only where the environment matters."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "poolbench.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=120)


def test_pools_json_lists_builtins_with_measured_counts(cli):
    code, out, err = cli("pools", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert BUILTINS <= set(rows)
    for r in rows.values():
        assert set(r) == {"name", "paper", "year", "licence", "params", "buffers", "stochastic",
                          "invertible", "shift_consistency", "source", "version", "status", "error"}
    assert rows["max"]["params"] == 0 and rows["max"]["invertible"]
    assert rows["skip"]["params"] == 9 * 64 * 64 + 64
    assert rows["lift"]["invertible"] and rows["lift"]["status"] == "ok"
    assert rows["blur"]["params"] == 0 and rows["blur"]["buffers"] > 0
    assert rows["s3"]["stochastic"]


def test_pools_table_and_broken_plugin(cli, tmp_path):
    broken = tmp_path / "broken_cli_plugin.py"
    broken.write_text("raise ImportError('needs a missing library')\n")
    code, out, err = cli("pools", "--plugin", str(broken))
    assert code == 0, err
    line = next(l for l in out.splitlines() if "broken_cli_plugin" in l and "needs a missing library" in l)
    assert "ImportError" in line
    assert "| max " in out


def test_a_warning_is_one_line_on_stderr(cli, tmp_path):
    # regression: the native kernel's fallback warning printed as Python prints warnings, the
    # message and then the source line that raised it
    noisy = tmp_path / "noisy_cli_plugin.py"
    noisy.write_text("import warnings\nwarnings.warn('kernel unavailable (no compiler):\\n"
                     "  the torch path runs', RuntimeWarning)\n")
    code, out, err = cli("pools", "max", "--plugin", str(noisy))
    assert code == 0, err
    assert err == "poolbench: warning: kernel unavailable (no compiler): the torch path runs (RuntimeWarning)\n"
    assert "warnings.warn" not in err
    assert warnings.showwarning.__module__ == "warnings"  # restored after the command


@pytest.mark.slow  # a subprocess
def test_plugins_from_environment(tmp_path):
    plugin = tmp_path / "envplug.py"
    plugin.write_text("from torch import nn\nfrom poolbench import register_pool\n"
                      "@register_pool('env_pool')\ndef make(channels):\n    return nn.AvgPool2d(2)\n")
    proc = run_cli("pools", "--json", env={"POOLBENCH_PLUGINS": str(plugin)})
    assert proc.returncode == 0, proc.stderr
    row = next(r for r in json.loads(proc.stdout) if r["name"] == "env_pool")
    assert row["source"] == f"file:{plugin}"


def test_missing_plugin_is_one_line_usage_error(cli):
    code, out, err = cli("pools", "--plugin", "missing.py")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0
    assert "missing.py" in err and "not found" in err


def test_unknown_command_and_bad_option(cli):
    code, _, err = cli("poolz")
    assert code == 2 and err.strip().count("\n") == 0 and "poolz" in err
    code, _, err = cli("pools", "--channels", "many")
    assert code == 2 and "--channels" in err


def test_version_and_help(cli):
    import poolbench

    code, out, _ = cli("--version")
    assert code == 0 and "poolbench" in out and poolbench.__version__ in out
    code, out, _ = cli("pools", "-h")
    assert code == 0 and "--json" in out


@pytest.mark.slow  # a subprocess
def test_module_entry_point_runs():
    proc = run_cli("pools", "--json")
    assert proc.returncode == 0, proc.stderr
    assert BUILTINS <= {r["name"] for r in json.loads(proc.stdout)}
    proc = run_cli("poolz")
    assert proc.returncode == 2 and proc.stderr.startswith("poolbench: error: ")


@pytest.mark.slow  # two subprocesses
def test_disable_plugins_env(tmp_path):
    installed = {ep.name for ep in entry_points(group="poolbench.pools")}
    if not installed:
        pytest.skip("no entry-point plugin installed (pip install -e ./registry/lppool)")
    env = {"POOLBENCH_DISABLE_PLUGINS": "", "POOLBENCH_PLUGINS": ""}
    proc = run_cli("pools", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    found = {r["name"]: r["source"] for r in json.loads(proc.stdout)}
    assert installed <= set(found) and all(found[n] != "built-in" for n in installed)

    plugin = tmp_path / "still_loaded.py"
    plugin.write_text("from torch import nn\nfrom poolbench import register_pool\n"
                      "@register_pool('still_loaded')\ndef make(channels):\n    return nn.AvgPool2d(2)\n")
    proc = run_cli("pools", "--json", env={"POOLBENCH_DISABLE_PLUGINS": "1",
                                           "POOLBENCH_PLUGINS": str(plugin)})
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r["source"] for r in json.loads(proc.stdout)}
    assert not installed & set(rows)                     # entry points are not discovered
    assert rows.pop("still_loaded") == f"file:{plugin}"  # plugins named explicitly still load
    assert set(rows.values()) == {"built-in"}
