"""Node-classification benchmark of ``VQGNNClassifier``: accuracy, fit time and peak memory.

Every (dataset, backbone, mode, seed) fit runs in a fresh subprocess (this script with
``--worker``), one after the other, so that each run's peak memory is its own. The provenance,
tables and bars replace the generated region of a Markdown page (``--out``, by default
``doc/benchmarks/node_classification.md``, whose hand-written rest says what is measured and
how); raw per-run records go to ``--json``, from which ``--from-json`` rebuilds the region
without fitting anything.

The parent process imports only the standard library: Linux carries a process's peak RSS over
fork/exec into its child's ``ru_maxrss``, so a parent holding torch would inflate every run's
absolute peak.
"""

from __future__ import annotations

from pathlib import Path

from _common import (
    BAR_POINTS,
    DATASETS,
    Record,
    bar_row,
    dataset_table,
    delta_points,
    fit_measured,
    group_runs,
    load_dataset,
    mean_of,
    mean_std,
    page_for,
    parse_args,
    provenance_lines,
    run_script,
    run_summary,
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
    """The page's generated region: provenance, one table per dataset and the bars."""
    groups = group_runs(records)
    lines = [*provenance_lines(meta, records, regenerated, "VQGNNClassifier"), ""]
    for dataset in DATASETS:
        if any(key[0] == dataset for key in groups):
            n_nodes = next(r["n_nodes"] for r in records if r["dataset"] == dataset)
            lines += [
                f"### {dataset} ({n_nodes} nodes)",
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
    lines += ["### Bars", "", *_bars(meta, groups)]
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
        modes=("vq", "vq-512", "full"),
        modes_help="default: every mode of each dataset (vq-512 on cora only)",
    )
    run_script(args, __file__, dataset_modes, run_fit, _summary, render)


if __name__ == "__main__":
    main()
