"""Plug in your own convolution: one class for a fixed one, one module for a learnable one.

1. ``TwoHop``: a fixed convolution, the square of GCN's ``Ĉ`` next to ``Ĉ`` itself (an SGC-like
   two-hop aggregation). A fixed backbone lists CSR matrices; the default layer sums one linear
   map per convolution.
2. ``CosineAttention``: a learnable convolution (AGNN-style), ``softmax_j β·cos(x_i, x_j)`` over
   ``N(i) ∪ {i}``. A learnable backbone lists ``Attention(mask)`` and its layer carries the
   ``AttentionConvolution`` that scores pairs.

Both train in mini-batches with codewords for out-of-batch messages and backward messages from
gradient codewords, with no other change to the package; run ``python examples/custom_backbone.py``.
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from skvqgnn import VQGNNClassifier
from skvqgnn.datasets import load_cora
from skvqgnn.graph import attention_mask, gcn_norm
from skvqgnn.layers import Attention, AttentionConvolution, Backbone


class TwoHop(Backbone):
    """``Z = Ĉ X W₁ + Ĉ² X W₂ + b``: two fixed convolutions."""

    name = "two-hop"
    n_convolutions = 2

    def convolutions(self, A):
        C = gcn_norm(A)
        return [C, (C @ C).tocsr()]


class CosineAttention(AttentionConvolution):
    """Scores ``β cos(x_i, x_j)`` with a learnable temperature ``β`` (one head)."""

    heads = 1

    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(1.0))

    def query(self, x):  # (m, f) -> (m, heads, d)
        return F.normalize(x, dim=-1).unsqueeze(1)

    def key(self, x):
        return self.beta * F.normalize(x, dim=-1).unsqueeze(1)

    def score(self, q, k):  # broadcastable (..., heads, d) pairs -> (..., heads)
        return (q * k).sum(-1)


class CosineLayer(nn.Module):
    """Receives the attention messages (b, heads, f) and maps them to the layer output."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.attention = nn.ModuleList([CosineAttention()])  # one per Attention entry
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, messages):
        return self.linear(messages[0][:, 0])


class Cosine(Backbone):
    name = "cosine"

    def convolutions(self, A):
        return [Attention(attention_mask(A))]

    def layer(self, in_features, out_features, *, first, last):
        return CosineLayer(in_features, out_features)


def main() -> None:
    A, X, y, split = load_cora()
    labels = np.where(split.train_mask, y, -1)
    for backbone in (TwoHop(), Cosine()):
        clf = VQGNNClassifier(backbone, batch_size=512, max_epochs=20, learning_rate=0.01)
        clf.set_params(random_state=0).fit(A, X, labels)
        accuracy = np.mean(clf.transduction_[split.test_mask] == y[split.test_mask])
        print(f"{backbone.name}: Cora test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
