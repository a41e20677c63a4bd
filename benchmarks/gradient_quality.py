"""How close are VQ-GNN's batch gradients to the full-graph ones during training?

Trains a VQGNNClassifier epoch by epoch (warm start) and, after each chosen epoch, compares for
every training batch the gradient of the loss with respect to the batch rows of the quantised
layer's input, ``∂L/∂H_B``, computed three ways (dropout off, same loss normalisation):

* ``true``: full-graph forward and backward (every message exact);
* ``vq``: the mini-batch step as trained (intra-batch exact, out-of-batch from codewords, plus the
  backward messages from gradient codewords);
* ``no_blue``: the same mini-batch step without the backward messages.

Reports the cosine similarity and the relative error of ``vq`` and ``no_blue`` against ``true``,
averaged over batches: a direct measurement of what the gradient codewords contribute.

    python benchmarks/gradient_quality.py --sampler random --epochs 1 5 20
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.nn import functional as F

from skvqgnn import Graph, VQGNNClassifier
from skvqgnn._base import make_batch
from skvqgnn.datasets import load_cora
from skvqgnn.layers import AddGradient
from skvqgnn.sketch import to_torch_sparse


def full_gradient(clf, data, targets, norm):
    """∂L/∂H (n, f) of the quantised layer's input with every message exact."""
    model = clf.model_
    H = torch.from_numpy(clf._exact_layers(model, data, torch.device("cpu"), upto=1))
    H.requires_grad_(True)
    messages = [
        H if C is None else torch.sparse.mm(to_torch_sparse(C, torch.device("cpu")), H)
        for C in data.convolutions
    ]
    Z = model.layers[1](messages)
    mask = targets >= 0
    loss = F.cross_entropy(Z[mask], targets[mask], reduction="sum") / norm
    loss.backward()
    return H.detach(), H.grad


def batch_gradient(clf, data, tables, nodes, H, targets, norm, blue):
    model = clf.model_
    receivers = (targets >= 0).numpy()
    batch = make_batch(data, nodes, tables, clf.n_codewords, torch.device("cpu"), True, receivers)
    h = H[nodes].clone().requires_grad_(True)
    x = h
    if blue:
        extra = model.blue_messages(batch, 0)
        if extra is not None:
            x = AddGradient.apply(h, extra)
    Z = model.layers[1](model.aggregate(batch, 0, x))
    t = targets[nodes]
    mask = t >= 0
    if mask.any():
        (F.cross_entropy(Z[mask], t[mask], reduction="sum") / norm).backward()
    return h.grad if h.grad is not None else torch.zeros_like(h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampler", default="cluster", choices=["cluster", "random"])
    parser.add_argument("--batch-size", type=int, default=338)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 5, 20, 50])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grad-scale", type=float, default=1.0)
    parser.add_argument("--n-codewords", type=int, default=256)
    args = parser.parse_args()

    A, X, y, split = load_cora()
    labels = np.where(split.train_mask, y, -1)
    clf = VQGNNClassifier(
        batch_size=args.batch_size,
        sampler=args.sampler,
        grad_scale=args.grad_scale,
        n_codewords=args.n_codewords,
        random_state=args.seed,
        device="cpu",
    )
    graph = Graph(A, X)
    data = clf._graph_data(graph)
    targets = torch.from_numpy(labels)
    n_batches = int(np.ceil(A.shape[0] / args.batch_size))
    norm = max(1.0, (labels >= 0).sum() / n_batches)
    done = 0
    print("epoch  cos(vq,true)  cos(no_blue,true)  relerr(vq)  relerr(no_blue)  test_acc")
    for epoch in args.epochs:
        clf.set_params(max_epochs=epoch - done, warm_start=done > 0)
        clf.fit(graph.nodes(), labels)
        done = epoch
        sampler = clf._sampler_for(graph, clf._fit_seed_)
        H, true = full_gradient(clf, data, targets, norm)
        rows = {True: [], False: []}
        for nodes in sampler.epoch(np.random.default_rng(0)):
            g_true = true[nodes]
            if g_true.norm() == 0:
                continue
            for blue in (True, False):
                g = batch_gradient(clf, data, clf.tables_, nodes, H, targets, norm, blue)
                cos = float(F.cosine_similarity(g.flatten(), g_true.flatten(), dim=0))
                rel = float((g - g_true).norm() / g_true.norm())
                rows[blue].append((cos, rel))
        vq, nb = np.mean(rows[True], 0), np.mean(rows[False], 0)
        acc = (clf.transduction_[split.test_mask] == y[split.test_mask]).mean()
        print(f"{epoch:5d}  {vq[0]:12.3f}  {nb[0]:17.3f}  {vq[1]:10.3f}  {nb[1]:15.3f}  {acc:8.3f}")


if __name__ == "__main__":
    main()
