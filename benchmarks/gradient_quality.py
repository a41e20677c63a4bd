"""How close are VQ-GNN's batch gradients to the full-graph ones during training, at every level?

Trains a ``VQGNNClassifier`` epoch by epoch (warm start) and, after each chosen epoch, compares
for every batch of one epoch the gradient of the loss with respect to the batch rows of each
quantised layer's input, ``∂L/∂H_B`` at every level, computed three ways with dropout off and the
estimator's loss normalisation:

* ``true``: the model's own forward and backward over the whole graph (every message exact);
* ``vq``: the model's own training step on the batch (intra-batch exact, out-of-batch from
  codewords, plus the backward messages from gradient codewords);
* ``none``: the same step without the backward messages.

The classifier trains with ``backward_messages="codewords"`` for every backbone (the default
turns them off for attention backbones), at the other defaults. Reports the cosine similarity
and the relative error of ``vq`` and ``none`` against ``true``, averaged over batches: what the
gradient codewords contribute, level by level. Records go to
``--json``; ``--from-json`` prints the tables again without training.

    python benchmarks/gradient_quality.py --backbones gcn sage gat --depths 1 2 3 \\
        --samplers cluster random --json doc/gradient_quality.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from skvqgnn import Callback, Graph, VQGNNClassifier
from skvqgnn.convolutions import make_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA_DIR, load_dataset  # noqa: E402

CPU = torch.device("cpu")
RECIPES = {"gat": {"dropout": 0.6, "attention_dropout": 0.6, "learning_rate": 0.005}}


def _level_gradients(model, batch, targets, norm, blue):
    """Gradients of the loss at every level's input rows, through the model's own step."""
    model.zero_grad()
    logits, traces = model(batch, blue=blue)
    for t in traces:
        t.x.retain_grad()
    mask = targets >= 0
    if not mask.any():
        return None
    (F.cross_entropy(logits[mask], targets[mask], reduction="sum") / norm).backward()
    return [t.x.grad.detach().clone() for t in traces]


class FitState(Callback):
    """Keeps the graph structures and the batch sampler of the last fit (``on_fit_end``)."""

    def on_fit_end(self, fit):
        self.data, self.sampler = fit.data, fit.sampler


def measure(clf, state, labels):
    """Per level, mean over one epoch's batches of (cos vq, cos none, rel vq, rel none)."""
    model = clf.model_.train()
    saved = model.dropout, model.attention_dropout
    model.dropout = model.attention_dropout = 0.0
    data, sampler = state.data, state.sampler
    targets = torch.from_numpy(labels)
    n_batches = len(list(sampler.inference_batches()))
    norm = max(1.0, (labels >= 0).sum() / n_batches)
    everything = make_batch(data, np.arange(data.n_nodes), [], CPU)
    true = _level_gradients(model, everything, targets, norm, False)
    rows = []
    for nodes in sampler.epoch(np.random.default_rng(0)):
        batch = make_batch(data, nodes, clf.tables_, CPU, True, labels >= 0, clf.input_table_)
        found = [_level_gradients(model, batch, targets[nodes], norm, b) for b in (True, False)]
        if found[0] is None:
            continue
        row = []
        for level, g_true in enumerate(true):
            t = g_true[nodes].flatten()
            if t.norm() == 0:
                break
            for g in found:
                v = g[level].flatten()
                row += [float(F.cosine_similarity(v, t, dim=0)), float((v - t).norm() / t.norm())]
        else:
            rows.append(row)
    model.dropout, model.attention_dropout = saved
    model.eval()
    mean = np.mean(rows, 0).reshape(len(true), 2, 2)  # level, (vq, none), (cos, rel)
    return [
        {
            "cos_vq": float(m[0, 0]),
            "cos_none": float(m[1, 0]),
            "rel_vq": float(m[0, 1]),
            "rel_none": float(m[1, 1]),
        }
        for m in mean
    ]


def run(dataset, backbone, sampler, depth, epochs, seed, data_dir):
    A, X, y, split = load_dataset(dataset, data_dir)
    if split is None:
        from skvqgnn.datasets import random_split

        split = random_split(y, 0.6, 0.2, random_state=seed)
    labels = np.where(split.train_mask, y, -1)
    n = A.shape[0]
    b = n // 8
    clf = VQGNNClassifier(
        backbone=backbone,
        hidden_layer_sizes=(64,) * depth,
        sampler=sampler,
        batch_size=b,
        random_state=seed,
        device="cpu",
        backward_messages="codewords",  # on for every backbone, so that gradient codewords exist
        **RECIPES.get(backbone, {}),
    )
    graph = Graph(A, X)
    state = FitState()
    records, done = [], 0
    for epoch in epochs:
        clf.set_params(max_epochs=epoch - done, warm_start=done > 0)
        clf.fit(graph.nodes(), labels, callbacks=[state])
        done = epoch
        acc = float((clf.transduction_[split.test_mask] == y[split.test_mask]).mean())
        levels = measure(clf, state, labels)
        records.append({"epoch": epoch, "test_acc": acc, "levels": levels})
        print(
            f"  {dataset} {backbone} {sampler} depth {depth} epoch {epoch}: "
            + "; ".join(
                f"L{i} cos {lv['cos_vq']:.3f}/{lv['cos_none']:.3f}" for i, lv in enumerate(levels)
            ),
            file=sys.stderr,
            flush=True,
        )
    return {
        "dataset": dataset,
        "backbone": backbone,
        "sampler": sampler,
        "depth": depth,
        "seed": seed,
        "batch_size": b,
        "records": records,
    }


def render(runs):
    """Markdown: one table per run, rows epoch × level; and the bar over all of them."""
    lines, failures, cells = [], [], 0
    for r in runs:
        lines += [
            f"### {r['dataset']} / {r['backbone']} / {r['sampler']} / {r['depth']} hidden "
            f"layer{'s' if r['depth'] > 1 else ''} of 64",
            "",
            "| epoch | level | cos(vq, true) | cos(none, true) | rel. error vq | rel. error none "
            "| test acc |",
            "|---|---|---|---|---|---|---|",
        ]
        for rec in r["records"]:
            for level, lv in enumerate(rec["levels"]):
                cells += 1
                better = lv["cos_vq"] > lv["cos_none"]
                if not better:
                    failures.append(
                        f"{r['backbone']}/{r['sampler']}/{r['depth']} epoch "
                        f"{rec['epoch']} level {level}"
                    )
                mark = "" if better else " ✗"
                lines.append(
                    f"| {rec['epoch']} | {level} | {lv['cos_vq']:.3f}{mark} | {lv['cos_none']:.3f} "
                    f"| {lv['rel_vq']:.3f} | {lv['rel_none']:.3f} | {rec['test_acc']:.3f} |"
                )
        lines.append("")
    summary = (
        f"cos(vq, true) > cos(none, true) in {cells - len(failures)} of {cells} (level, epoch) "
        "cells" + ("." if not failures else "; not in: " + ", ".join(failures) + ".")
    )
    return "\n".join([summary, "", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cora"])
    parser.add_argument("--backbones", nargs="+", default=["gcn", "sage", "gat"])
    parser.add_argument("--samplers", nargs="+", default=["cluster", "random"])
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 5, 20, 50])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.from_json:
        runs = json.loads(args.from_json.read_text())
    else:
        runs = [
            run(d, bb, s, depth, args.epochs, args.seed, args.data_dir)
            for d in args.datasets
            for bb in args.backbones
            for depth in args.depths
            for s in args.samplers
        ]
        if args.json:
            args.json.write_text(json.dumps(runs, indent=1))
    print(render(runs))


if __name__ == "__main__":
    main()
