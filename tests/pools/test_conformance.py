"""Conformance of every registered operator (built-ins and installed plugins), beyond the contract
of poolbench.testing (whose `shapes` check already covers odd and non-square inputs, 2..9, in
both modes): channels_last and bf16 autocast on CPU on an odd, non-square map, torch.compile
(slow: a graph break is allowed, a failure is not), and the circular-shift consistency that
`poolbench pools` lists."""
import pytest
import torch

import poolbench
from poolbench.testing import SLOW_CHECKS
from poolbench.pool_table import (
    ONE_PIXEL_SHIFTS,
    is_circular_shift_of,
    measure_shift_consistency,
    pool_rows,
    shift_consistency,
)

POOLS = poolbench.list_pools()


def build(name, channels=4):
    torch.manual_seed(0)
    return poolbench.get_pool(name, channels).eval()


def randn(*shape, seed=1, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("name", POOLS)
def test_channels_last_on_an_odd_non_square_map(name):
    # odd and non-square sizes in both modes: the contract's `shapes` check (H, W in 2..9); bf16
    # autocast on a 9x7 map: the contract's `bf16_autocast` check (test_pool_contract.py)
    pool = build(name)
    x = randn(2, 4, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(pool(x.contiguous(memory_format=torch.channels_last)).contiguous(),
                                   pool(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", POOLS)
def test_torch_compile_runs_and_agrees(name):
    SLOW_CHECKS["compile"](name)


# --- circular-shift consistency -------------------------------------------------------------

def test_the_roll_detector_finds_rolls_and_only_rolls():
    ref = randn(1, 2, 4, 6, dtype=torch.float64)
    assert is_circular_shift_of(torch.roll(ref, (3, -2), dims=(-2, -1)), ref)
    assert not is_circular_shift_of(torch.roll(ref, 1, dims=-1) + 1e-6, ref)
    assert not is_circular_shift_of(ref.flip(-1), ref)
    assert len(ONE_PIXEL_SHIFTS) == 8 and (0, 0) not in ONE_PIXEL_SHIFTS


def test_shift_consistency_known_answers():
    # APS and LPS (eval) keep the component a shift only permutes: exact; max, avg and the
    # Fourier crop keep a fixed phase: a 1-pixel shift hands them another component
    assert measure_shift_consistency("aps") == 1.0 and measure_shift_consistency("lps") == 1.0
    for name in ("max", "avg", "spectral"):
        assert measure_shift_consistency(name) == 0.0


def test_shift_consistency_is_listed_for_every_operator():
    rows = [r for r in pool_rows() if r["status"] == "ok"]
    assert set(POOLS) <= {r["name"] for r in rows}
    for r in rows:
        assert 0.0 <= r["shift_consistency"] <= 1.0 and r["shift_consistency"] == shift_consistency(r["name"])


def test_poolbench_pools_shows_the_column(cli):
    code, out, err = cli("pools", "aps")
    assert code == 0, err
    header, _, row = out.splitlines()[:3]
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["name"] == "aps" and cells["shift-eq"] == "1.00"
