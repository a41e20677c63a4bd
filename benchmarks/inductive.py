"""Inductive-prediction benchmark of ``VQGNNClassifier``: nodes unseen in training, added back.

Per seed, 20 % of all nodes are held out with every edge they have; the classifier is fitted on
the graph induced by the other 80 % (*inductive* runs) and then predicts the whole graph, the
held-out nodes added back, with VQ inference (the new nodes assigned to their nearest feature
codewords, the codebooks unchanged) and with exact inference. The reference (*transductive*
runs) is the same classifier fitted on the whole graph with the same labelled nodes, the
held-out ones unlabelled, and read from ``transduction_``.

Every (dataset, backbone, mode, seed) fit runs in a fresh subprocess (this script with
``--worker``), one after the other. The provenance and tables replace the generated region of a
Markdown page (``--out``, by default ``doc/benchmarks/inductive.md``, whose hand-written rest
says what is measured and how); raw per-run records go to ``--json``, from which
``--from-json`` rebuilds the region without fitting anything.

The plumbing (worker subprocesses, saved records, provenance, the generated region) is that of
``node_classification.py``, in ``_common.py``; as there, the parent process imports only the
standard library.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from _common import (
    DATASETS,
    Record,
    fit_measured,
    load_dataset,
    mean_std,
    page_for,
    parse_args,
    provenance_lines,
    run_script,
    run_summary,
)
from node_classification import RECIPES

MODES = ("inductive", "transductive")
DEFAULT_BACKBONES = ("gcn", "sage")
TRAIN_SIZE, VAL_SIZE = 0.6, 0.2  # of the labelled nodes, stratified; the rest is the test split
HELD_OUT = 0.2  # of all nodes, held out of the training graph with their edges
HOLD_OUT_STREAM = 1  # seeds the hold-out apart from the split: default_rng([seed, 1])
INFERENCE_LABELS = {"vq": "VQ", "exact": "exact"}


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


def hold_out(n_nodes: int, fraction: float, seed: int) -> Any:
    """(n_nodes,) bool mask of ``round(fraction * n_nodes)`` nodes drawn uniformly without
    replacement from ``default_rng([seed, HOLD_OUT_STREAM])``, a stream independent of
    ``random_split(..., random_state=seed)``."""
    import numpy as np

    rng = np.random.default_rng([seed, HOLD_OUT_STREAM])
    mask = np.zeros(n_nodes, dtype=bool)
    mask[rng.choice(n_nodes, round(fraction * n_nodes), replace=False)] = True
    return mask


def protocol(y: Any, seed: int) -> tuple[Any, Any, Any]:
    """The split of a seed.

    Parameters
    ----------
    y : ndarray of shape (n_nodes,)
        Class labels, ``-1`` for unlabelled nodes.
    seed : int

    Returns
    -------
    split : NodeSplit
        ``random_split(y, 0.6, 0.2, random_state=seed)`` over all nodes.
    held_out : ndarray of bool of shape (n_nodes,)
        The new nodes, 20 % of all nodes (`hold_out`), independent of ``split``.
    labels : ndarray of shape (n_nodes,)
        The training labels of both fits: ``y`` on the training split's nodes that are not held
        out, ``-1`` elsewhere.
    """
    import numpy as np

    from skvqgnn.datasets import random_split

    split = random_split(y, TRAIN_SIZE, VAL_SIZE, random_state=seed)
    held_out = hold_out(len(y), HELD_OUT, seed)
    return split, held_out, np.where(split.train_mask & ~held_out, y, -1)


def training_graph(A: Any, X: Any, held_out: Any) -> tuple[Any, Any, Any]:
    """The graph of an inductive fit: the nodes that are not held out and the subgraph they
    induce, so that no edge of a held-out node is left.

    Returns
    -------
    kept : ndarray of int of shape (n_kept,)
        Node ids (into ``A``) of the training graph's nodes, in order.
    A_kept : csr_array of shape (n_kept, n_kept)
    X_kept : features of shape (n_kept, n_features)
    """
    import numpy as np

    kept = np.flatnonzero(~held_out)
    return kept, A[kept][:, kept].tocsr(), X[kept]


# --------------------------------------------------------------------------------------------
# Worker: one fit in this process
# --------------------------------------------------------------------------------------------


def _timed_predict(clf: Any, A: Any, X: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    pred = clf.predict(A, X)
    return pred, time.perf_counter() - start


def run_fit(spec: Record) -> Record:
    """Load the data, fit one classifier on the training graph of its mode and predict the
    held-out nodes; runs inside the worker process.

    Parameters
    ----------
    spec : dict
        ``dataset``, ``backbone``, ``mode`` (``"inductive"`` or ``"transductive"``), ``seed``
        (of the split, the hold-out and the estimator), ``max_epochs`` and ``data_dir``.

    Returns
    -------
    dict
        The spec, the sizes, `fit_measured`'s measurements (batch size ``n // 8`` of the fitted
        graph) and, per inference mode, ``test_acc`` (held-out nodes of the test split),
        ``held_out_acc`` (all held-out nodes) and ``predict_time_s`` (``predict(A, X)`` on the
        whole graph); inductive runs also hold the ``agreement`` of the two inference modes on
        the held-out nodes.
    """
    import numpy as np

    from skvqgnn import VQGNNClassifier

    A, X, y, _ = load_dataset(spec["dataset"], Path(spec["data_dir"]))
    split, held_out, labels = protocol(y, spec["seed"])
    new_test = held_out & split.test_mask
    vq = {**spec, "mode": "vq"}  # batch size n // 8 of the graph fitted on
    recipe = RECIPES.get(spec["backbone"])
    record: Record = {
        **spec,
        "n_graph_nodes": int(len(y)),
        "n_held_out": int(held_out.sum()),
        "n_held_out_test": int(new_test.sum()),
        "n_labelled": int((labels >= 0).sum()),
    }

    def scores(pred: Any, seconds: float) -> Record:
        return {
            "test_acc": float(np.mean(pred[new_test] == y[new_test])),
            "held_out_acc": float(np.mean(pred[held_out] == y[held_out])),
            "predict_time_s": seconds,
        }

    if spec["mode"] == "transductive":
        clf, measured = fit_measured(VQGNNClassifier, vq, len(y), A, X, labels, params=recipe)
        _, seconds = _timed_predict(clf, A, X)  # the training graph: its stored assignments
        return {**record, **measured, "inference": {"vq": scores(clf.transduction_, seconds)}}

    kept, A_kept, X_kept = training_graph(A, X, held_out)
    clf, measured = fit_measured(
        VQGNNClassifier, vq, len(kept), A_kept, X_kept, labels[kept], params=recipe
    )
    predictions, inference = {}, {}
    for mode in INFERENCE_LABELS:
        clf.set_params(inference=mode)
        predictions[mode], seconds = _timed_predict(clf, A, X)  # the held-out nodes added back
        inference[mode] = scores(predictions[mode], seconds)
    agreement = np.mean(predictions["vq"][held_out] == predictions["exact"][held_out])
    return {**record, **measured, "inference": inference, "agreement": float(agreement)}


def _summary(record: Record) -> str:
    accuracies = " ".join(
        f"{INFERENCE_LABELS[mode]} {result['test_acc']:.3f}"
        for mode, result in record["inference"].items()
    )
    return run_summary(record, f"{record['mode']}, held-out test acc {accuracies}")


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

HEADER = [
    "backbone",
    "fit",
    "inference",
    "held-out test acc",
    "all held-out acc",
    "Δ test vs transductive (points)",
    "agreement with exact",
    "predict time (s)",
    "fit time (s)",
    "nodes fitted",
    "batch size",
    "epochs",
]
FIT_LABELS = {"inductive": "without the held-out nodes", "transductive": "whole graph"}


def _median(runs: list[Record], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def dataset_rows(records: list[Record], backbones: list[str]) -> list[str]:
    """Table lines of one dataset's records: per backbone, the inductive fit with VQ and with
    exact inference, then the transductive reference; mean ± population std over the seeds for
    accuracies and agreement, medians for times, sizes and epochs."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for backbone in backbones:
        runs = {
            mode: [r for r in records if r["backbone"] == backbone and r["mode"] == mode]
            for mode in MODES
        }
        reference = [r["inference"]["vq"]["test_acc"] for r in runs["transductive"]]
        for mode in MODES:
            if not runs[mode]:
                continue
            for inference, label in INFERENCE_LABELS.items():
                results = [
                    r["inference"][inference] for r in runs[mode] if inference in r["inference"]
                ]
                if not results:
                    continue
                test = [result["test_acc"] for result in results]
                if mode == "transductive":
                    delta = "(reference)"
                    label = f"{label} (`transduction_`)"
                elif reference:
                    delta = f"{100 * (statistics.mean(test) - statistics.mean(reference)):+.1f}"
                else:
                    delta = "n/a"
                agreement = (
                    mean_std([r["agreement"] for r in runs[mode]])
                    if mode == "inductive" and inference == "vq"
                    else "–"
                )
                cells = [
                    backbone,
                    FIT_LABELS[mode],
                    label,
                    mean_std(test),
                    mean_std([result["held_out_acc"] for result in results]),
                    delta,
                    agreement,
                    f"{statistics.median(result['predict_time_s'] for result in results):.2f}",
                    f"{_median(runs[mode], 'fit_time_s'):.1f}",
                    f"{_median(runs[mode], 'n_nodes'):g}",
                    f"{_median(runs[mode], 'batch_size'):g}",
                    f"{_median(runs[mode], 'epochs'):g}",
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(meta: Record, records: list[Record], regenerated: str | None = None) -> str:
    """The page's generated region: provenance and one table per dataset."""
    lines = [*provenance_lines(meta, records, regenerated, "VQGNNClassifier"), ""]
    for dataset in DATASETS:
        runs = [r for r in records if r["dataset"] == dataset]
        if not runs:
            continue
        tests = sorted({r["n_held_out_test"] for r in runs})
        span = f"{tests[0]}" if len(tests) == 1 else f"{tests[0]}–{tests[-1]}"
        lines += [
            f"### {dataset} ({runs[0]['n_graph_nodes']} nodes, {runs[0]['n_held_out']} held "
            f"out, {span} of them in the test split)",
            "",
            *dataset_rows(runs, meta["backbones"]),
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or one worker fit, or regenerate from saved records) and write the
    generated region of the page."""
    args = parse_args(
        argv,
        __doc__.split("\n\n")[0],
        out=page_for(__file__),
        modes=MODES,
        modes_help="default: both",
        backbones=DEFAULT_BACKBONES,
        datasets=("twitch-en",),
    )
    run_script(args, __file__, lambda dataset: MODES, run_fit, _summary, render)


if __name__ == "__main__":
    main()
