"""Evaluation on a folded copy of the model (training.evaluate.inference_copy): the same
logits as the model itself, checked against a float64 oracle, and the model left as it was."""
from __future__ import annotations

import torch
from torch import nn

from poolbench.models import create_model
from poolbench.training.evaluate import inference_copy, predict


def _with_running_stats(model: nn.Module) -> nn.Module:
    """Batch norms with statistics and affines far from the identity, as after training."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def test_folded_logits_match_the_float64_model_and_the_model_is_unchanged():
    torch.manual_seed(0)
    model = _with_running_stats(create_model("convnet", 10, pool="max")).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = [type(m).__name__ for m in model.modules()]
    images = torch.rand(8, 3, 32, 32)
    folded = inference_copy(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    oracle = _double(model)(images.double())
    with torch.no_grad():
        assert torch.allclose(folded(images).double(), oracle, rtol=1e-4, atol=1e-4)
        assert torch.allclose(model(images).double(), oracle, rtol=1e-4, atol=1e-4)
    assert predict(model, images).argmax(1).tolist() == oracle.argmax(1).tolist()
    assert [type(m).__name__ for m in model.modules()] == kinds
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def _double(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).double()


def test_a_model_without_a_conv_bn_pair_in_a_sequential_is_evaluated_as_it_is():
    model = create_model("resnet18_cifar", 10, pool="max")
    assert inference_copy(model) is model and not model.training


def test_a_model_holding_a_non_leaf_tensor_is_folded():
    """Regression: the first inference_copy deep-copied the model, which torch refuses for a
    model holding a tensor computed from a parameter (a cache, a weight-norm)."""
    model = create_model("convnet", 10, pool="max")
    model.cached = next(model.parameters()) * 2                    # not a leaf of the graph
    folded = inference_copy(model)
    assert folded.cached is model.cached and folded is not model
