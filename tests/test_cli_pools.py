import json
import os
import subprocess
import sys

import pytest

BUILTINS = {"max", "avg", "skip", "blur", "mixed", "gated", "gauss", "spectral", "wavelet",
            "dpp", "s3", "lift"}


def run_cli(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "poolbench.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=120)


def test_pools_json_lists_builtins_with_measured_counts():
    proc = run_cli("pools", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert BUILTINS <= set(rows)
    for r in rows.values():
        assert set(r) == {"name", "paper", "year", "params", "buffers", "stochastic",
                          "invertible", "source", "version", "status", "error"}
    assert rows["max"]["params"] == 0 and rows["max"]["invertible"]
    assert rows["skip"]["params"] == 9 * 64 * 64 + 64
    assert rows["lift"]["invertible"] and rows["lift"]["status"] == "ok"
    assert rows["blur"]["params"] == 0 and rows["blur"]["buffers"] > 0
    assert rows["s3"]["stochastic"]


def test_pools_table_and_broken_plugin(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise ImportError('needs a missing library')\n")
    proc = run_cli("pools", "--plugin", str(broken))
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if "broken" in l and "needs a missing library" in l)
    assert "ImportError" in line
    assert "| max " in proc.stdout


def test_plugins_from_environment(tmp_path):
    plugin = tmp_path / "envplug.py"
    plugin.write_text("from torch import nn\nfrom poolbench import register_pool\n"
                      "@register_pool('env_pool')\ndef make(channels):\n    return nn.AvgPool2d(2)\n")
    proc = run_cli("pools", "--json", env={"POOLBENCH_PLUGINS": str(plugin)})
    assert proc.returncode == 0, proc.stderr
    row = next(r for r in json.loads(proc.stdout) if r["name"] == "env_pool")
    assert row["source"] == f"file:{plugin}"


def test_missing_plugin_is_one_line_usage_error():
    proc = run_cli("pools", "--plugin", "missing.py")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "missing.py" in proc.stderr and "not found" in proc.stderr


def test_unknown_command_and_bad_option():
    proc = run_cli("poolz")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    proc = run_cli("pools", "--channels", "many")
    assert proc.returncode == 2 and "--channels" in proc.stderr


def test_version_and_help():
    proc = run_cli("--version")
    assert proc.returncode == 0 and "poolbench" in proc.stdout
    proc = run_cli("pools", "-h")
    assert proc.returncode == 0 and "--json" in proc.stdout


def test_disable_plugins_env():
    proc = run_cli("pools", "--json", env={"POOLBENCH_DISABLE_PLUGINS": "1"})
    assert proc.returncode == 0
    sources = {r["source"] for r in json.loads(proc.stdout)}
    assert sources == {"built-in"}
