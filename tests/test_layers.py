"""Backbones and the network (``skvqgnn/layers.py``): what a backbone's classes give the
network, and the checks the network makes of them."""

import numpy as np
import pytest
import torch
from torch import nn

from skvqgnn.convolutions import Fixed, GlobalAttention, Identity, Initial, MaskedAttention
from skvqgnn.layers import (
    BACKBONES,
    GCNII,
    VQGNN,
    Backbone,
    GCNIIInput,
    GCNIILayer,
    LinearCombination,
    make_backbone,
)

from .conftest import random_graph


def _kinds(backbone):
    return [type(c) for c in backbone.convolutions(random_graph(10, 3.0, 0))]


def test_each_backbone_lists_its_kinds():
    assert _kinds(BACKBONES["gcn"]()) == [Fixed]
    assert _kinds(BACKBONES["sage"]()) == [Identity, Fixed]
    assert _kinds(BACKBONES["gin"]()) == [Identity, Fixed]
    assert _kinds(BACKBONES["gat"]()) == [MaskedAttention]
    assert _kinds(BACKBONES["transformer"]()) == [Fixed, GlobalAttention]
    assert _kinds(BACKBONES["gcnii"]()) == [Fixed, Initial]


def test_heads_reach_the_backbones_whose_constructor_takes_them():
    assert make_backbone("gat", 4).heads == 4
    assert make_backbone("transformer", 3).heads == 3
    assert isinstance(make_backbone("gcn", 4), BACKBONES["gcn"])  # no heads: ignored
    mine = GCNII(alpha=0.2)
    assert make_backbone(mine, 4) is mine


def test_a_backbone_layer_that_takes_an_index_gets_its_position():
    """GCNII's β_l = log(λ / l + 1) decreases with the layer's position."""
    model = VQGNN(GCNII(), [Fixed, Initial], [5, 8, 8, 8, 3], 4, 4, 0.99, 1.0, 0.0)
    assert isinstance(model.layers[0], GCNIIInput)
    betas = [layer.beta for layer in model.layers[1:]]
    assert all(isinstance(layer, GCNIILayer) for layer in model.layers[1:])
    np.testing.assert_allclose(betas, np.log(0.5 / np.arange(1, 4) + 1))
    assert model.layers[-1].output is not None and model.layers[1].output is None


def test_gcnii_refuses_hidden_layers_of_different_widths():
    with pytest.raises(ValueError, match="equal widths"):
        VQGNN(GCNII(), [Fixed, Initial], [5, 8, 6, 3], 4, 4, 0.99, 1.0, 0.0)


def test_the_network_checks_attention_modules_against_learnable_kinds():
    class Broken(Backbone):
        def layer(self, in_features, out_features, *, first, last):
            return LinearCombination(in_features, out_features, 1)  # no attention module

    with pytest.raises(ValueError, match="1 attention convolutions but its layer"):
        VQGNN(Broken(), [MaskedAttention], [5, 8, 3], 4, None, 0.99, 1.0, 0.0)


def test_global_attention_needs_whole_vector_codewords():
    with pytest.raises(ValueError, match="whole-vector codewords"):
        VQGNN(BACKBONES["transformer"](), [Fixed, GlobalAttention], [5, 8, 3], 4, 4, 0.99, 1, 0)


def test_gradient_channels_follow_the_kinds():
    """One channel per fixed convolution and per attention head, none for the identity and
    the initial residual; two auxiliary scalars per head."""
    transformer = VQGNN(
        make_backbone("transformer", 2),
        [Fixed, GlobalAttention],
        [5, 8, 3],
        4,
        None,
        0.99,
        1.0,
        0.0,
    )
    (fixed, attention) = transformer.channels(0)
    assert (len(fixed.gradients), len(fixed.aux)) == (1, 0)
    assert (len(attention.gradients), len(attention.aux)) == (2, 4)
    assert transformer.codebooks[0].n_grad == 3
    gcnii = VQGNN(GCNII(), [Fixed, Initial], [5, 8, 8, 3], 4, 4, 0.99, 1.0, 0.0)
    assert [len(c.gradients) for c in gcnii.channels(0)] == [1, 0]


def test_layer_output_applies_relu_except_in_the_output_layer():
    model = VQGNN(BACKBONES["gcn"](), [Fixed], [4, 6, 2], 4, 4, 0.99, 1.0, 0.0)
    for layer in model.layers:
        nn.init.constant_(layer.linears[0].weight, -1.0)
    x = torch.ones(3, 4)
    assert torch.all(model.layer_output(0, [x]) == 0)  # ReLU of a negative
    assert torch.all(model.layer_output(1, [torch.ones(3, 6)]) < 0)  # logits as they are
