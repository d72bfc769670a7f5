"""Every registered operator (built-ins, LiftPool, installed plugins) against every contract check."""
import pytest

import poolbench
from poolbench.testing import CONTRACT_CHECKS

POOLS = poolbench.list_pools()


@pytest.mark.parametrize("check", list(CONTRACT_CHECKS))
@pytest.mark.parametrize("pool", POOLS)
def test_contract(pool, check):
    CONTRACT_CHECKS[check](pool)


def test_registry_lists_the_builtins():
    assert {"max", "avg"} <= set(POOLS)
