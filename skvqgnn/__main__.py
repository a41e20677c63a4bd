"""``python -m skvqgnn`` (or the ``skvqgnn`` command): train and evaluate VQ-GNN on a dataset.

By default: the bundled Cora on its public split, GCN backbone, batch size 512, compared with
the in-package full-graph training of the same network. Other datasets: Planetoid files
(``--dataset citeseer --root DIR``), a MUSAE-style CSV edge list (``--dataset csv --root DIR``),
an OGB node dataset already on disk (``--dataset ogbn-arxiv --root DIR``) or a synthetic
contextual SBM (``--dataset csbm --nodes 100000``). Datasets without a split get a stratified
60/20/20 one drawn with ``--seed``.

A progress bar runs while each model trains (``--quiet`` turns it off). The report gives, per
model, test accuracy, fit time, median epoch time, inference time and peak memory (process peak
RSS on CPU, which only grows, so VQ-GNN runs first and its figure is its own;
``torch.cuda.max_memory_allocated`` on CUDA, reset before each model). ``--json FILE`` also
writes the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import VQGNNClassifier
from ._base import resolve_device
from .datasets import (
    NodeDataset,
    load_cora,
    load_edge_list_csv,
    load_ogb_node,
    load_planetoid,
    make_csbm,
    random_split,
)
from .layers import BACKBONES

PLANETOID = ("cora", "citeseer", "pubmed")
DATASET_HELP = (
    "cora (bundled unless --root is given), citeseer or pubmed (Planetoid files in --root), "
    "csv (MUSAE layout in --root: edges.csv, features.csv, target.csv), an OGB node dataset "
    "name such as ogbn-arxiv (on disk under --root; nothing is downloaded), or csbm (synthetic)"
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _batch_size(text: str) -> int | None:
    if text == "full":
        return None
    try:
        return _positive_int(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"must be a positive integer or 'full', got {text!r}"
        ) from None


def _hidden_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(_positive_int(part) for part in text.split(","))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive widths such as 64 or 64,64, got {text!r}"
        ) from None
    return sizes


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m skvqgnn``."""
    parser = argparse.ArgumentParser(
        prog="python -m skvqgnn",
        description=__doc__.splitlines()[0].replace("``", ""),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="cora", help=DATASET_HELP)
    data.add_argument("--root", type=Path, default=None, help="folder of an on-disk dataset")
    data.add_argument("--nodes", type=_positive_int, default=10_000, help="csbm: number of nodes")
    data.add_argument("--avg-degree", type=float, default=10.0, help="csbm: average degree")
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", default="gcn", choices=sorted(BACKBONES))
    model.add_argument(
        "--batch-size", type=_batch_size, default=512, help="nodes per step, or 'full'"
    )
    model.add_argument(
        "--hidden-sizes", type=_hidden_sizes, default=(64,), help="hidden widths, e.g. 64,64"
    )
    model.add_argument("--learning-rate", type=_positive_float, default=0.002, help="Adam")
    model.add_argument("--n-codewords", type=_positive_int, default=256, help="per codebook")
    model.add_argument("--epochs", type=_positive_int, default=200, help="training epochs")
    model.add_argument("--inference", default="vq", choices=["vq", "exact"], help="mode")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    model.add_argument("--seed", type=int, default=0, help="seeds data, split and training")
    run = parser.add_argument_group("run")
    run.add_argument("--no-reference", action="store_true", help="skip full-graph training")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--json", type=Path, default=None, help="also write the report here")
    return parser


def load(args: argparse.Namespace, parser: argparse.ArgumentParser) -> NodeDataset:
    """The dataset named by ``--dataset`` (errors name the argument at fault)."""
    name = args.dataset.lower()
    if name == "csbm":
        return make_csbm(args.nodes, avg_degree=args.avg_degree, random_state=args.seed)
    if name == "cora" and args.root is None:
        return load_cora()
    if args.root is None:
        parser.error(f"--root is needed for --dataset {args.dataset!r}")
    if not args.root.is_dir():
        parser.error(f"--root {str(args.root)!r} is not a directory")
    if name in PLANETOID:
        return load_planetoid(args.root, name)
    if name == "csv":
        return load_edge_list_csv(args.root)
    if name.startswith("ogbn-"):
        return load_ogb_node(name, args.root)
    parser.error(f"--dataset {args.dataset!r} is not one of: {DATASET_HELP}")
    raise AssertionError  # parser.error exits


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_model(
    name: str,
    batch_size: int | None,
    args: argparse.Namespace,
    dataset: NodeDataset,
    device: torch.device,
) -> dict[str, Any]:
    """Fit one classifier, predict every node and measure it; returns one report row."""
    A, X, y, split = dataset
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    clf = VQGNNClassifier(
        args.backbone,
        hidden_layer_sizes=args.hidden_sizes,
        learning_rate=args.learning_rate,
        batch_size=batch_size,
        n_codewords=args.n_codewords,
        max_epochs=args.epochs,
        inference=args.inference,
        device=device,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
    )
    start = time.perf_counter()
    clf.fit(A, X, np.where(split.train_mask, y, -1))
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    pred = clf.predict(A, X)
    predict_time = time.perf_counter() - start
    epoch_times = [h["time"] for h in clf.history_ if "time" in h]
    return {
        "model": name,
        "batch_size": batch_size,
        "test_accuracy": float((pred[split.test_mask] == y[split.test_mask]).mean()),
        "val_accuracy": float((pred[split.val_mask] == y[split.val_mask]).mean()),
        "fit_time_s": fit_time,
        "epochs": int(clf.n_iter_),
        "median_epoch_time_s": float(np.median(epoch_times)) if epoch_times else None,
        "predict_time_s": predict_time,
        "peak_memory_mib": _peak_mib(device),
        "vq_error": [round(float(e), 4) for e in clf.vq_error_],
    }


def report_lines(rows: list[dict[str, Any]], device: torch.device) -> list[str]:
    """The printed report: one line per model."""
    lines = [
        f"{'model':<12} {'batch':>6} {'test accuracy':>13} {'fit s':>8} {'epoch s':>8} "
        f"{'predict s':>9} {'peak memory':>15}"
    ]
    for row in rows:
        epoch = row["median_epoch_time_s"]
        lines.append(
            f"{row['model']:<12} {row['batch_size'] or 'full':>6} {row['test_accuracy']:>13.3f} "
            f"{row['fit_time_s']:>8.1f} {'-' if epoch is None else f'{epoch:.3f}':>8} "
            f"{row['predict_time_s']:>9.2f} {row['peak_memory_mib']:>11.0f} MiB"
        )
    if len(rows) == 2:
        gap = 100 * (rows[0]["test_accuracy"] - rows[1]["test_accuracy"])
        lines.append(f"VQ-GNN minus full graph: {gap:+.1f} accuracy points")
    if device.type == "cuda":
        lines.append("peak memory: torch.cuda.max_memory_allocated, reset before each model")
    else:
        lines.append("peak memory: the process's peak RSS so far (it never decreases)")
    return lines


def _check_json_path(path: Path, parser: argparse.ArgumentParser) -> None:
    """Refuse an unwritable ``--json`` path before any training."""
    if path.is_dir():
        parser.error(f"--json {str(path)!r} is a directory; give a file name")
    if not path.parent.is_dir():
        parser.error(f"--json {str(path)!r}: the folder {str(path.parent)!r} does not exist")


def main(argv: list[str] | None = None) -> int:
    """Run the main job; returns the process exit status. Bad arguments exit with argparse's
    usage message; bad data or a failed fit print one error line and return 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json is not None:
        _check_json_path(args.json, parser)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(f"argument --device: {exc}")
    try:
        return _run(args, parser, device)
    except (ValueError, TypeError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, device: torch.device) -> int:
    dataset = load(args, parser)
    A, X, y, split = dataset
    if split is None:
        split = random_split(y, 0.6, 0.2, random_state=args.seed)
        dataset = NodeDataset(A, X, y, split)
    print(
        f"{args.dataset}: {A.shape[0]} nodes, {A.nnz // 2} edges, {X.shape[1]} features, "
        f"{len(split.train_idx)} training labels; backbone {args.backbone}, device {device}",
        flush=True,
    )
    batch_size = args.batch_size
    if batch_size is not None and batch_size >= A.shape[0]:
        print(
            f"--batch-size {batch_size} holds all {A.shape[0]} nodes: one batch is the whole "
            "graph, so this is full-graph training (no message is quantised)",
            flush=True,
        )
        batch_size = None
    runs = [("VQ-GNN", batch_size)] if batch_size is not None else [("full graph", None)]
    if not args.no_reference and batch_size is not None:
        runs.append(("full graph", None))
    rows = [run_model(name, batch, args, dataset, device) for name, batch in runs]
    for line in report_lines(rows, device):
        print(line)
    if rows[0]["vq_error"]:
        print(f"VQ relative error per layer: {rows[0]['vq_error']}")
    if args.json is not None:
        report = {"dataset": args.dataset, "backbone": args.backbone, "device": str(device)}
        args.json.write_text(json.dumps({**report, "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
