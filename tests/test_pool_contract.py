"""Every registered operator (built-ins, LiftPool, installed plugins) against every contract check."""
import pytest
import torch

import poolbench
from poolbench.testing import CONTRACT_CHECKS

POOLS = poolbench.list_pools()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the inputs are tiny: intra-op threads only add overhead, and much more on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("check", list(CONTRACT_CHECKS))
@pytest.mark.parametrize("pool", POOLS)
def test_contract(pool, check):
    CONTRACT_CHECKS[check](pool)


def test_registry_lists_the_builtins():
    assert {"max", "avg"} <= set(POOLS)
