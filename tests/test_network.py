from __future__ import annotations

import pytest
import torch

from deployments.core.network import MIN_SIDE, Generator
from deployments.core.weights import seeded_state_dict
from tests.reference import reference_forward


def test_the_generator_has_the_ports_parameter_count_and_key_layout() -> None:
    network = Generator()
    keys = list(network.state_dict())
    assert sum(p.numel() for p in network.parameters()) == 2_143_552
    assert keys[:3] == ["block_a.0.1.weight", "block_a.0.2.weight", "block_a.0.2.bias"]
    assert "block_c.1.layers.1.1.bias" in keys  # depthwise conv carries a bias
    assert keys[-1] == "out_layer.0.weight"


def test_a_state_dict_of_the_official_layout_loads_strictly() -> None:
    state = seeded_state_dict(7)
    network = Generator()
    network.load_state_dict(state, strict=True)
    assert torch.equal(
        network.state_dict()["block_c.1.layers.1.1.bias"], state["block_c.1.layers.1.1.bias"]
    )


def test_a_state_dict_with_a_missing_key_is_refused() -> None:
    state = seeded_state_dict(7)
    del state["out_layer.0.weight"]
    with pytest.raises(RuntimeError, match=r"out_layer\.0\.weight"):
        Generator().load_state_dict(state, strict=True)


@pytest.mark.parametrize("height, width", [(8, 8), (13, 9), (31, 17), (64, 48)])
def test_output_has_the_input_shape_for_odd_and_small_sizes(height: int, width: int) -> None:
    network = Generator().eval()
    with torch.inference_mode():
        out = network(torch.rand(2, 3, height, width) * 2 - 1)
    assert out.shape == (2, 3, height, width)
    assert out.abs().max() <= 1


def test_inputs_below_the_minimum_side_fail_in_the_bare_network() -> None:
    with pytest.raises(RuntimeError):
        Generator().eval()(torch.zeros(1, 3, MIN_SIDE - 1, MIN_SIDE))


def test_forward_matches_the_independent_float64_reference() -> None:
    state = seeded_state_dict(3)
    network = Generator().eval()
    network.load_state_dict(state)
    x = torch.rand(1, 3, 37, 52, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        ours = network(x).double()
    expected = reference_forward(state, x.double())
    assert (ours - expected).abs().max() < 1e-4


def test_forward_is_deterministic() -> None:
    network = Generator().eval()
    network.load_state_dict(seeded_state_dict(1))
    x = torch.rand(1, 3, 40, 40) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(network(x), network(x))
