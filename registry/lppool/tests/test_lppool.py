import math

import pytest
import torch

import poolbench
from poolbench.testing import CONTRACT_CHECKS, count_parameters


def test_registered_through_entry_point():
    spec = poolbench.get_spec("lppool_learned")
    assert spec.source == "poolbench-lppool"
    assert spec.version == "0.1.0"
    assert spec.licence == "MIT" and spec.paper.year == 2014


@pytest.mark.parametrize("check", sorted(CONTRACT_CHECKS))
def test_contract(check):
    CONTRACT_CHECKS[check]("lppool_learned")


@pytest.mark.parametrize("p", [1.5, 2.0, 3.7])
def test_hand_computed_window(p):
    x = torch.tensor([[[[0.5, -1.0], [2.0, 3.0]]]], dtype=torch.float64)
    pool = poolbench.get_pool(f"lppool_learned:p_init={p}", 1).double()
    order = pool.p.item()  # p_init up to the float32 rounding of rho
    assert order == pytest.approx(p, rel=1e-6)
    expected = (sum(abs(v) ** order for v in (0.5, -1.0, 2.0, 3.0)) / 4) ** (1 / order)
    assert pool(x).item() == pytest.approx(expected, rel=1e-12)


def test_order_is_learned_per_channel():
    pool = poolbench.get_pool("lppool_learned", 5)
    assert count_parameters(pool) == (5, 0)
    torch.testing.assert_close(pool.p, torch.full((1, 5, 1, 1), 2.0))


def test_large_orders_and_zero_windows_stay_finite():
    pool = poolbench.get_pool("lppool_learned:p_init=60.0", 1)
    # two windows stacked along H: (1000, 999, 0, 0) and all zeros
    x = torch.tensor([[[[1000.0, 999.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]], requires_grad=True)
    y = pool(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    order = pool.p.item()
    assert y[0, 0, 0, 0].item() == pytest.approx(1000 * ((1 + 0.999 ** order) / 4) ** (1 / order), rel=1e-5)
    assert y[0, 0, 1, 0].item() == 0.0
    assert math.isfinite(pool.rho.grad.sum().item())
