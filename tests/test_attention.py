"""The softmax aggregation of learnable convolutions (``skvqgnn.attention``)."""

import pytest
import torch

from skvqgnn.attention import attend, segment_sum
from skvqgnn.layers import BACKBONES


@pytest.mark.parametrize("per_head", [False, True])
def test_segment_sum_matches_a_dense_product(per_head):
    # values and gradients (of the weights and of the source rows) as the dense product has
    # them; the source shared by the heads (m, f) or one per head (m, H, f)
    gen = torch.Generator().manual_seed(0)
    rows = torch.tensor([2, 0, 0, 1, 2, 2])
    cols = torch.tensor([1, 3, 0, 2, 2, 0])
    w = torch.rand(6, 2, generator=gen, requires_grad=True)
    shape, spec = ((4, 2, 3), "ijh,jhf->ihf") if per_head else ((4, 3), "ijh,jf->ihf")
    src = torch.randn(*shape, generator=gen, requires_grad=True)
    out = segment_sum(rows, cols, w, src, 4)  # row 3 has no entry
    dense = torch.zeros(4, 4, 2).index_put((rows, cols), w, accumulate=True)
    expected = torch.einsum(spec, dense, src)
    torch.testing.assert_close(out, expected)
    (out * torch.arange(24.0).reshape(4, 2, 3)).sum().backward()
    gw, gs = w.grad.clone(), src.grad.clone()
    w.grad = src.grad = None
    (expected * torch.arange(24.0).reshape(4, 2, 3)).sum().backward()
    torch.testing.assert_close(gw, w.grad)
    torch.testing.assert_close(gs, src.grad)


@pytest.mark.parametrize("global_", [False, True])
def test_attention_dropout_drops_whole_terms_and_is_unbiased(global_):
    """``attend(dropout=p)`` zeroes each attention weight with probability p and rescales the
    rest: on average it gives the undropped messages; ``p=0`` changes nothing."""
    torch.manual_seed(0)
    conv = BACKBONES["gat"]().layer(6, 8, first=False, last=False).attention[0]
    if global_:
        conv = BACKBONES["transformer"]().layer(6, 8, first=False, last=False).attention[0]
    x = torch.randn(30, 6)
    edges = None
    if not global_:
        rows = torch.arange(10).repeat_interleave(5)
        cols = torch.randint(30, (50,))
        edges = (rows, cols)
    M, lse = attend(conv, 10, x, edges)
    M0, lse0 = attend(conv, 10, x, edges, dropout=0.0)
    torch.testing.assert_close(M0, M)
    draws = [attend(conv, 10, x, edges, dropout=0.5) for _ in range(2000)]
    # the log normaliser is the undropped one; single draws differ, their mean does not
    torch.testing.assert_close(draws[0][1], lse)
    assert (draws[0][0] - M).abs().max() > 1e-2
    mean = torch.stack([d[0] for d in draws]).mean(0)
    assert (mean - M).abs().max() < 0.1 * M.abs().max()
