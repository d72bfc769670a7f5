"""Every registered operator (built-ins, LiftPool, installed plugins) against every contract check."""
import pytest

import poolbench
from poolbench.testing import CONTRACT_CHECKS

POOLS = poolbench.list_pools()
# the issue-28 operators' two costliest checks (0.5-1.6 s each on the loaded 2-core machine)
# run with the slow tests, to keep the fast suite within its budget; their other checks, and
# their float64 oracles (test_pools_2020s.py), are fast
HEAVY = {(name, check) for name in ("tips", "adapool", "hwd", "diffstride", "pasa", "nlp",
                                    "fractional", "lppool") for check in ("gradcheck", "shapes")}


def _cases():
    for pool in POOLS:
        for check in CONTRACT_CHECKS:
            marks = [pytest.mark.slow] if (pool, check) in HEAVY else []
            yield pytest.param(pool, check, marks=marks, id=f"{pool}-{check}")


@pytest.mark.parametrize("pool,check", list(_cases()))
def test_contract(pool, check):
    CONTRACT_CHECKS[check](pool)


def test_registry_lists_the_builtins():
    assert {"max", "avg"} <= set(POOLS)
