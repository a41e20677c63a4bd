"""Link-prediction benchmark of ``VQGNNLinkPredictor``: ROC AUC, Hits@50, fit time and memory.

Every (dataset, backbone, mode, seed) fit runs in a fresh subprocess (this script with
``--worker``), one after the other, so that each run's peak memory is its own; each run draws an
85/5/10 edge split with its seed, fits on the training graph and scores the validation and test
pairs. The provenance, tables and bars replace the generated region of a Markdown page
(``--out``, by default ``doc/benchmarks/link_prediction.md``, whose hand-written rest says what
is measured and how); raw per-run records go to ``--json``, from which ``--from-json`` rebuilds
the region without fitting anything.

The plumbing (worker subprocesses, saved records, provenance, the generated region) is that of
``node_classification.py``, in ``_common.py``; as there, the parent process imports only the
standard library, so that torch in the parent cannot inflate a run's peak RSS.
"""

from __future__ import annotations

from pathlib import Path

from _common import (
    BAR_POINTS,
    DATASETS,
    Record,
    bar_row,
    best_on_validation,
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

MODE_LABELS = {
    "vq": "VQ, batch n/8",
    "vq-partners": "VQ, batch n/8, partners",
    "vq-accumulate": "VQ, batch n/8, one step an epoch",
    "vq-partners-accumulate": "VQ, batch n/8, partners, one step an epoch",
    "full": "full graph",
}
# estimator parameters of a mode beyond its batch size
MODE_PARAMS = {
    "vq-partners": {"partner_nodes": "batch_size"},
    "vq-accumulate": {"accumulate_batches": "epoch"},
    "vq-partners-accumulate": {"partner_nodes": "batch_size", "accumulate_batches": "epoch"},
}
VQ_MODES = ("vq", "vq-partners", "vq-accumulate", "vq-partners-accumulate")  # batch n/8
# the bar's VQ row is the one of best validation ROC AUC among these modes; the fourth VQ mode
# was added after a diagnostic run had shown its test figures on citeseer / sage, so it does
# not compete for the bars (see the notes in doc/benchmarks/link_prediction.md)
BAR_VQ_MODES = ("vq", "vq-partners", "vq-accumulate")
VAL_PERCENT, TEST_PERCENT = 5, 10  # of the edges, held out; the rest trains
HITS_K = 50
HITS = f"test_hits{HITS_K}"  # record key of the test Hits@K
METRIC_HEADER = [
    "test ROC AUC",
    f"test Hits@{HITS_K}",
    "val ROC AUC",
    "Δ ROC AUC vs full (points)",
    f"Δ Hits@{HITS_K} vs full (points)",
]
BAR_BACKBONES = ("gcn", "sage")
# metrics of the bars: record key -> label
BAR_METRICS = {"test_roc_auc": "ROC AUC", HITS: f"Hits@{HITS_K}"}


# --------------------------------------------------------------------------------------------
# Worker: one fit in this process
# --------------------------------------------------------------------------------------------


def run_fit(spec: Record) -> Record:
    """Load the data, split its edges, fit one link predictor and score it; runs inside the
    worker process.

    Parameters
    ----------
    spec : dict
        ``dataset``, ``backbone``, ``mode``, ``seed`` (of the edge split and the estimator),
        ``max_epochs`` (``None``: estimator default) and ``data_dir``.

    Returns
    -------
    dict
        The spec plus the sizes of the graph and of its training part, ROC AUC and Hits@50 on
        the validation and test pairs, timings and memory peaks (MiB).
    """
    from skvqgnn import VQGNNLinkPredictor
    from skvqgnn.metrics import hits_at_k, roc_auc
    from skvqgnn.model_selection import edge_split

    A, X, _, _ = load_dataset(spec["dataset"], Path(spec["data_dir"]))
    train, val, test = edge_split(
        A, val=VAL_PERCENT / 100, test=TEST_PERCENT / 100, random_state=spec["seed"]
    )
    lp, measured = fit_measured(
        VQGNNLinkPredictor,
        {**spec, "mode": "vq" if spec["mode"] in VQ_MODES else spec["mode"]},
        A.shape[0],
        train.adjacency,
        X,
        params=MODE_PARAMS.get(spec["mode"]),
    )
    record = {
        **spec,
        **measured,
        "n_edges": int(len(train.positives) + len(val.positives) + len(test.positives)),
        "n_train_edges": int(len(train.positives)),
        "crossing_fraction": float(lp.crossing_fraction_),
    }
    for name, split in (("val", val), ("test", test)):
        scores = lp.decision_function(train.adjacency, X, split.pairs)
        record[f"{name}_roc_auc"] = float(roc_auc(split.targets, scores))
        record[f"{name}_hits{HITS_K}"] = float(hits_at_k(split.targets, scores, k=HITS_K))
    return record


def _summary(record: Record) -> str:
    return run_summary(
        record,
        f"test ROC AUC {record['test_roc_auc']:.3f} Hits@{HITS_K} {record[HITS]:.3f}",
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _metric_cells(mode: str, runs: list[Record], full: list[Record] | None) -> list[str]:
    return [
        mean_std([r["test_roc_auc"] for r in runs]),
        mean_std([r[HITS] for r in runs]),
        mean_std([r["val_roc_auc"] for r in runs]),
        *(
            delta_points(mode, mean_of(runs, key), mean_of(full, key))
            for key in ("test_roc_auc", HITS)
        ),
    ]


def _bars(groups: dict[tuple[str, str, str], list[Record]]) -> list[str]:
    lines = ["| bar | VQ row | measured | threshold | result |", "|---|---|---|---|---|"]
    for dataset in DATASETS:
        for backbone in BAR_BACKBONES:
            mode = best_on_validation(
                [(m, groups.get((dataset, backbone, m))) for m in BAR_VQ_MODES], "val_roc_auc"
            )
            label = MODE_LABELS.get(mode, "none")
            for key, metric in BAR_METRICS.items():
                vq = mean_of(groups.get((dataset, backbone, mode)), key)
                full = mean_of(groups.get((dataset, backbone, "full")), key)
                bar = f"{dataset} / {backbone}: VQ (n/8) ≥ full − {BAR_POINTS:g} point, {metric}"
                lines.append(bar_row(bar, vq, full, row=label))
    return lines


def render(meta: Record, records: list[Record], regenerated: str | None = None) -> str:
    """The page's generated region: provenance, one table per dataset and the bars."""
    groups = group_runs(records)
    lines = [*provenance_lines(meta, records, regenerated, "VQGNNLinkPredictor"), ""]
    for dataset in DATASETS:
        runs = [r for r in records if r["dataset"] == dataset]
        if runs:
            lines += [
                f"### {dataset} ({runs[0]['n_nodes']} nodes, {runs[0]['n_edges']} edges, "
                f"{runs[0]['n_train_edges']} for training)",
                "",
                *dataset_table(dataset, groups, MODE_LABELS, METRIC_HEADER, _metric_cells),
                "",
            ]
    lines += ["### Bars", "", *_bars(groups)]
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
        modes=tuple(MODE_LABELS),
        modes_help="default: all",
        backbones=BAR_BACKBONES,
    )
    run_script(args, __file__, lambda dataset: tuple(MODE_LABELS), run_fit, _summary, render)


if __name__ == "__main__":
    main()
