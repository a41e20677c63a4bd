"""``python -m skvqgnn``: train and evaluate VQ-GNN on a node-classification dataset.

By default: the bundled Cora on its public split, GCN backbone, batch size 512, compared with
the in-package full-graph training of the same network. Prints test accuracy, fit time and the
peak memory so far (process peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA; VQ-GNN
runs first, so its figure is its own).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch

from . import VQGNNClassifier
from ._base import resolve_device
from .datasets import NodeDataset, load_cora, load_edge_list_csv, load_planetoid, random_split


def _load(args: argparse.Namespace) -> NodeDataset:
    if args.dataset == "cora" and args.root is None:
        return load_cora()
    if args.root is None:
        raise SystemExit(f"--root is needed for dataset {args.dataset!r}")
    if args.dataset in ("cora", "citeseer", "pubmed"):
        return load_planetoid(args.root, args.dataset)
    A, X, y, _ = load_edge_list_csv(args.root)
    return NodeDataset(A, X, y, random_split(y, 0.6, 0.2, random_state=args.seed))


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skvqgnn", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cora", help="cora, citeseer, pubmed or csv")
    parser.add_argument("--root", default=None, help="folder of an on-disk dataset")
    parser.add_argument("--backbone", default="gcn", choices=["gcn", "sage"])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--n-codewords", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true", help="skip full-graph training")
    args = parser.parse_args(argv)

    A, X, y, split = _load(args)
    if split is None:
        split = random_split(y, 0.6, 0.2, random_state=args.seed)
    labels = np.where(split.train_mask, y, -1)
    device = resolve_device(args.device)
    print(
        f"{args.dataset}: {A.shape[0]} nodes, {A.nnz // 2} edges, {X.shape[1]} features, "
        f"{len(split.train_idx)} training labels; device {device}"
    )
    runs = [("VQ-GNN", args.batch_size)] + ([] if args.no_reference else [("full graph", None)])
    for name, batch_size in runs:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        clf = VQGNNClassifier(
            args.backbone,
            batch_size=batch_size,
            n_codewords=args.n_codewords,
            max_epochs=args.epochs,
            device=device,
            random_state=args.seed,
            verbose=1,
        )
        start = time.perf_counter()
        clf.fit(A, X, labels)
        elapsed = time.perf_counter() - start
        pred = clf.transduction_
        acc = float((pred[split.test_mask] == y[split.test_mask]).mean())
        extra = f", VQ error {np.round(clf.vq_error_, 3).tolist()}" if len(clf.vq_error_) else ""
        print(
            f"{name:>10} (batch_size={batch_size}): test accuracy {acc:.3f}, fit {elapsed:.1f} s, "
            f"peak memory so far {_peak_mib(device):.0f} MiB{extra}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
