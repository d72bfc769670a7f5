import pytest

from poolbench.pools import lift_native


@pytest.fixture
def native_kernel():
    """LiftPool's native CPU kernel, built on first use (in the test's cache, never while pytest
    collects); the test is skipped, with the reason, where it cannot be built."""
    lib = lift_native.library()
    if lib is None:
        pytest.skip(f"native kernel unavailable: {lift_native.why()}")
    return lib
