"""adaUnPool as a SegNet up-pool (issue 28, part 3): the variant, and that the decoder really goes
through AdaPool's own up-pooling with the weights its encoder pool recorded."""
import torch

from poolbench.models.segnet import VARIANTS, create_segnet, resolve_variant
from poolbench.pools.adapool import AdaPool
from poolbench.suites.segmentation.reconstruction import reconstruct


def test_adapool_is_a_paired_variant_beside_lift_maxunpool_and_bilinear():
    assert resolve_variant("adapool") == VARIANTS["adapool"]
    assert (VARIANTS["adapool"].pool, VARIANTS["adapool"].upsample) == ("adapool", "paired")
    assert {"max_unpool", "lift", "bilinear", "adapool"} <= set(VARIANTS)


def test_segnet_decoder_calls_adaunpool_with_the_encoder_state(monkeypatch):
    calls = []
    original = AdaPool.up

    def spy(self, y, state):
        calls.append((tuple(y.shape), tuple(state["w_dsc"].shape)))
        return original(self, y, state)

    monkeypatch.setattr(AdaPool, "up", spy)
    torch.manual_seed(0)
    model = create_segnet(3, "adapool", widths=(4, 8))
    calls.clear()                                   # construction may run a probe
    out = model(torch.rand(2, 3, 12, 10))           # padded to 12 x 12 (multiples of 2**2)
    assert out.shape == (2, 3, 12, 10)
    # one up-pool per encoder stage, deepest first, each fed a decoder feature of its encoder
    # pool's output shape and that pool's recorded window weights
    assert calls == [((2, 8, 3, 3), (2, 8, 3, 3, 4)), ((2, 4, 6, 6), (2, 4, 6, 6, 4))]


def test_adaunpool_puts_each_output_back_where_the_window_weighted_it():
    # a window with one large value: eM puts nearly all its mass there, eDSCW spreads it
    x = torch.tensor([[[[0.0, 0.0], [0.0, 8.0]]]], dtype=torch.float64)
    pool = AdaPool(1, beta_init=0.0).double()      # eM only
    y, state = pool.down(x)
    back = pool.up(y, state)
    assert abs(back.sum().item() - y.item()) < 1e-12 and back[0, 0, 1, 1] > 0.99 * y.item()


def test_adapool_reconstruction_runs_through_the_suite_method():
    image = torch.rand(16, 16, dtype=torch.float64).numpy()
    out = reconstruct(image, "adapool")
    assert out.shape == image.shape
