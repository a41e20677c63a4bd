"""Node-classification benchmark of ``VQGNNClassifier``: accuracy, fit time and peak memory.

Every (dataset, backbone, mode, seed) fit runs in a fresh subprocess (this script with
``--worker``), one after the other, so that each run's peak memory is its own. The results go to
a Markdown page (``--out``) and, optionally, to raw per-run records (``--json``) from which
``--from-json`` rebuilds the page without fitting anything. The page is rewritten wholesale,
except for the marked sections that other scripts keep in it (``link_prediction.py``,
``inductive.py``): those sections of the old page are carried over, unchanged and in their
order, to the end of the new one.

The parent process imports only the standard library: Linux carries a process's peak RSS over
fork/exec into its child's ``ru_maxrss``, so a parent holding torch would inflate every run's
absolute peak.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from _common import (
    BAR_POINTS,
    DATASETS,
    Record,
    bar_row,
    carry_sections,
    collect_records,
    dataset_table,
    delta_points,
    fit_measured,
    group_runs,
    load_dataset,
    mean_of,
    mean_std,
    parse_args,
    provenance_lines,
    read_page,
    run_specs,
    run_summary,
    write_page,
)

MODE_LABELS = {"vq": "VQ, batch n/8", "vq-512": "VQ, batch 512", "full": "full graph"}
EXTRA_MODES = {"cora": ("vq-512",)}
# training recipe per backbone, the same in every mode (estimator defaults otherwise): GAT's is the
# one of its paper (Veličković et al., 2018: dropout 0.6 on inputs and attention, lr 0.005)
RECIPES = {"gat": {"dropout": 0.6, "attention_dropout": 0.6, "learning_rate": 0.005}}
# minimum test accuracies: (dataset, backbone, mode) -> (label, floor)
ABSOLUTE_BARS = {
    ("cora", "gcn", "vq-512"): ("VQ, batch 512", 0.80),
    ("cora", "gat", "vq"): ("VQ (n/8)", 0.80),
}


# --------------------------------------------------------------------------------------------
# Worker: one fit in this process
# --------------------------------------------------------------------------------------------


def run_fit(spec: Record) -> Record:
    """Load the data, fit one classifier and measure it; runs inside the worker process.

    Parameters
    ----------
    spec : dict
        ``dataset``, ``backbone``, ``mode``, ``seed``, ``max_epochs`` (``None``: estimator
        default) and ``data_dir``.

    Returns
    -------
    dict
        The spec plus accuracies, timings and memory peaks (MiB).
    """
    import numpy as np

    from skvqgnn import VQGNNClassifier
    from skvqgnn.datasets import random_split

    A, X, y, split = load_dataset(spec["dataset"], Path(spec["data_dir"]))
    if split is None:
        split = random_split(y, 0.6, 0.2, random_state=spec["seed"])
    labels = np.where(split.train_mask, y, -1)
    recipe = RECIPES.get(spec["backbone"])
    clf, measured = fit_measured(VQGNNClassifier, spec, A.shape[0], A, X, labels, params=recipe)
    pred = clf.transduction_
    return {
        **spec,
        **measured,
        "test_acc": float(np.mean(pred[split.test_mask] == y[split.test_mask])),
        "val_acc": float(np.mean(pred[split.val_mask] == y[split.val_mask])),
    }


# --------------------------------------------------------------------------------------------
# Driver: one subprocess per run
# --------------------------------------------------------------------------------------------


def dataset_modes(dataset: str) -> tuple[str, ...]:
    """The modes a dataset is run in: VQ at n/8, any extra batch sizes, then full graph."""
    return ("vq", *EXTRA_MODES.get(dataset, ()), "full")


def _summary(record: Record) -> str:
    return run_summary(record, f"test {record['test_acc']:.3f} val {record['val_acc']:.3f}")


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _accuracy_cells(mode: str, runs: list[Record], full: list[Record] | None) -> list[str]:
    return [
        mean_std([r["test_acc"] for r in runs]),
        mean_std([r["val_acc"] for r in runs]),
        delta_points(mode, mean_of(runs, "test_acc"), mean_of(full, "test_acc")),
    ]


def _bars(meta: Record, groups: dict[tuple[str, str, str], list[Record]]) -> list[str]:
    lines = ["| bar | measured | threshold | result |", "|---|---|---|---|"]
    for dataset in meta["datasets"]:
        for backbone in meta["backbones"]:
            vq = mean_of(groups.get((dataset, backbone, "vq")), "test_acc")
            full = mean_of(groups.get((dataset, backbone, "full")), "test_acc")
            bar = f"{dataset} / {backbone}: VQ (n/8) ≥ full − {BAR_POINTS:g} point"
            lines.append(bar_row(bar, vq, full))
    for (dataset, backbone, mode), (label, floor) in ABSOLUTE_BARS.items():
        if dataset not in meta["datasets"] or backbone not in meta["backbones"]:
            continue
        acc = mean_of(groups.get((dataset, backbone, mode)), "test_acc")
        bar = f"{dataset} / {backbone}: {label} ≥ {floor:.2f}"
        if acc is None:
            lines.append(f"| {bar} | – | – | NOT RUN |")
        else:
            result = "PASS" if acc >= floor else "FAIL"
            lines.append(f"| {bar} | {acc:.3f} | {floor:.3f} | **{result}** |")
    return lines


def render(meta: Record, records: list[Record], regenerated: str | None = None) -> str:
    """The Markdown page: header, one table per dataset, bars and the measurement notes."""
    groups = group_runs(records)
    lines = [
        "# Benchmarks: node classification",
        "",
        *provenance_lines(meta, records, regenerated, "VQGNNClassifier"),
        "- Modes: *VQ, batch n/8* uses `batch_size = n_nodes // 8`; *VQ, batch 512* uses "
        "`batch_size=512`; *full graph* is `batch_size=None`, the exact full-graph reference "
        "without codebooks.",
        "- Parameters: the estimator's defaults (200 epochs), except "
        + "; ".join(
            f"{backbone}: " + ", ".join(f"`{k}={v}`" for k, v in recipe.items())
            for backbone, recipe in RECIPES.items()
        )
        + " (the GAT paper's recipe), the same in every mode.",
        "- Splits: the public Planetoid split for cora and citeseer; for twitch-en a stratified "
        "60/20/20 `random_split(y, 0.6, 0.2, random_state=seed)` drawn per seed. The classifier "
        "is fitted with the training labels only; accuracies are of `transduction_` on the "
        "validation and test nodes.",
        "- Accuracies: mean ± population standard deviation over the seeds; Δ = 100 × (mean test "
        "accuracy of the row − mean test accuracy of the same backbone's full-graph row). Fit "
        "time, epoch time (median over epochs of `history_[i]['time']`), memory and epochs: "
        "medians over the seeds.",
        "",
    ]
    for dataset in DATASETS:
        if any(key[0] == dataset for key in groups):
            n_nodes = next(r["n_nodes"] for r in records if r["dataset"] == dataset)
            lines += [
                f"## {dataset} ({n_nodes} nodes)",
                "",
                *dataset_table(
                    dataset,
                    groups,
                    MODE_LABELS,
                    ["test acc", "val acc", "Δ test vs full (points)"],
                    _accuracy_cells,
                ),
                "",
            ]
    lines += [
        "## Bars",
        "",
        "Checked automatically on the mean test accuracy over the seeds.",
        "",
        *_bars(meta, groups),
        "",
        "## How memory and time are measured",
        "",
        "Each run is a fresh Python process that loads the dataset, then reads its peak resident "
        "set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) right before `fit` and again "
        "after `fit` and the prediction of every node (`transduction_`, computed inside `fit`). "
        "*Peak RSS increase* is the difference: how far the fit raised the process's high-water "
        "mark above what the interpreter, torch, the dataset and its split already held. It "
        "covers everything resident in host memory during the fit (graph preprocessing such as "
        "the normalised adjacency, the METIS partition and the codebook initialisation, the "
        "training steps, inference, NumPy/SciPy arrays, torch CPU tensors and allocator caches, "
        "and newly touched library pages); as a high-water mark it counts a transient peak in "
        "full. *Peak RSS* is the absolute peak of the process, baseline included. "
        f"When CUDA is available the fit runs with `device='cuda'` and *GPU peak* is "
        "`torch.cuda.max_memory_allocated()` after `torch.cuda.reset_peak_memory_stats()` "
        "(tensors only, without the CUDA context and the allocator's unused reserve). Fit time "
        "is the wall-clock time of `fit` (`time.perf_counter`), setup and final inference "
        f"included; the runs execute one at a time on a shared {meta['cpu_count']}-core machine, "
        "so timings are noisy and medians are reported.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or one worker fit, or regenerate the page) and write the outputs.

    The marked sections of the page being replaced (``link_prediction.py``, ``inductive.py``)
    are carried over unchanged to the end of the new page.
    """
    args = parse_args(
        argv,
        __doc__.split("\n\n")[0],
        modes=("vq", "vq-512", "full"),
        modes_help="default: every mode of each dataset (vq-512 on cora only)",
    )
    if args.worker is not None:
        print(json.dumps(run_fit(json.loads(args.worker))))
        return
    meta, records, regenerated = collect_records(
        args, __file__, run_specs(args, dataset_modes), _summary
    )
    page = render(meta, records, regenerated)
    write_page(args.out, carry_sections(page, read_page(args.out)))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
