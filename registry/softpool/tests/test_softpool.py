import math

import pytest
import torch

import poolbench
from poolbench.testing import CONTRACT_CHECKS


def test_registered_through_entry_point():
    spec = poolbench.get_spec("softpool")
    assert spec.source == "poolbench-softpool"
    assert spec.version == "0.1.0"


@pytest.mark.parametrize("check", sorted(CONTRACT_CHECKS))
def test_contract(check):
    CONTRACT_CHECKS[check]("softpool")


def test_hand_computed_window():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    e = [math.exp(v) for v in (0, 1, 2, 3)]
    expected = sum(w * v for w, v in zip(e, (0, 1, 2, 3))) / sum(e)
    y = poolbench.get_pool("softpool", 1)(x)
    assert y.item() == pytest.approx(expected, rel=1e-6)


def test_large_activations_do_not_overflow():
    x = torch.full((1, 1, 2, 2), 1000.0)
    x[0, 0, 0, 0] = 1001.0
    y = poolbench.get_pool("softpool", 1)(x)
    assert torch.isfinite(y).all()
    assert 1000.0 < y.item() < 1001.0
