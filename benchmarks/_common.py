"""Plumbing shared by the benchmark scripts.

Data loading, one measured fit inside a worker process, the driver that runs every fit in a fresh
subprocess, saved records, the command line, provenance lines and bar rows, and the generated
region of a script's page: each script owns one page under ``doc/benchmarks/`` and rewrites only
the part between ``<!-- generated:start -->`` and ``<!-- generated:end -->``; the rest of the page
is written by hand.

Like the scripts' parent processes, this module imports only the standard library at import
time; numpy, torch and skvqgnn are imported inside the functions that run in a worker.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
PAGES_DIR = REPO_ROOT / "doc" / "benchmarks"  # a page per script: PAGES_DIR / "<script>.md"
DATASETS = ("cora", "citeseer", "twitch-en")
BACKBONES = ("gcn", "sage", "gin", "gat", "transformer")
BAR_POINTS = 1.0  # VQ (n/8) may trail full-graph training by at most this many points
GENERATED_START = "<!-- generated:start -->"
GENERATED_END = "<!-- generated:end -->"
OUT_HELP = "Markdown page: only its generated region is replaced (the page is created if absent)"

Record = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Worker: one measured fit in this process
# --------------------------------------------------------------------------------------------


def batch_size_for(mode: str, n_nodes: int) -> int | None:
    """Batch size of a mode: ``n_nodes // 8`` for ``"vq"``, ``None`` for ``"full"`` and ``b``
    for ``"vq-b"``."""
    if mode == "full":
        return None
    if mode == "vq":
        return n_nodes // 8
    return int(mode.removeprefix("vq-"))


def load_dataset(dataset: str, data_dir: Path) -> Any:
    """Load one of `DATASETS` as a ``skvqgnn.datasets.NodeDataset`` (``A, X, y, split``).

    Parameters
    ----------
    dataset : str
        ``"cora"`` (bundled with the package), ``"citeseer"`` (Planetoid files under
        ``data_dir / "citeseer"``) or ``"twitch-en"`` (CSV edge list under
        ``data_dir / "twitch-en"``, which defines no split).
    data_dir : Path
        Folder of the shared datasets.
    """
    from skvqgnn.datasets import load_cora, load_edge_list_csv, load_planetoid

    if dataset == "cora":
        return load_cora()
    if dataset == "citeseer":
        return load_planetoid(data_dir / "citeseer", "citeseer")
    return load_edge_list_csv(data_dir / dataset)


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def fit_measured(
    estimator_class: type, spec: Record, n_nodes: int, *fit_args: Any, params: Record | None = None
) -> tuple[Any, Record]:
    """Build the estimator of a run, fit it on ``fit_args`` and measure the fit.

    Parameters
    ----------
    estimator_class : type
        ``VQGNNClassifier`` or ``VQGNNLinkPredictor``.
    spec : dict
        The run: ``backbone``, ``mode`` (see `batch_size_for`), ``seed`` (the estimator's
        ``random_state``) and ``max_epochs`` (``None``: the estimator's default).
    n_nodes : int
        Number of nodes of the graph, for the batch size.
    *fit_args
        Positional arguments of ``fit``.
    params : dict, optional
        Further estimator parameters (a backbone's training recipe), recorded as ``params``.

    Returns
    -------
    estimator : object
        The fitted estimator, on ``"cuda"`` when CUDA is available, else on ``"cpu"``.
    measured : dict
        ``n_nodes``, ``batch_size``, ``max_epochs``, ``epochs``, ``vq_error``, the wall-clock
        ``fit_time_s``, the median ``epoch_time_s`` of ``history_``, the peak RSS before
        (``rss_baseline_mib``) and after (``rss_peak_mib``) the fit and its increase, the GPU
        peak (``None`` without CUDA), the device, torch's version and its number of threads.
    """
    import torch

    cuda = torch.cuda.is_available()
    extra = dict(params or {})
    settings: Record = {
        "backbone": spec["backbone"],
        "batch_size": batch_size_for(spec["mode"], n_nodes),
        "random_state": spec["seed"],
        "device": "cuda" if cuda else "cpu",
    }
    if spec["max_epochs"] is not None:
        settings["max_epochs"] = spec["max_epochs"]
    estimator = estimator_class(**settings, **extra)

    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    baseline = _max_rss_mib()
    start = time.perf_counter()
    estimator.fit(*fit_args)
    fit_time = time.perf_counter() - start
    peak = _max_rss_mib()

    return estimator, {
        "params": extra,
        "n_nodes": int(n_nodes),
        "batch_size": settings["batch_size"],
        "max_epochs": estimator.max_epochs,
        "epochs": int(estimator.n_iter_),
        "vq_error": [float(e) for e in estimator.vq_error_],
        "fit_time_s": fit_time,
        "epoch_time_s": statistics.median(epoch["time"] for epoch in estimator.history_),
        "rss_baseline_mib": baseline,
        "rss_peak_mib": peak,
        "rss_increase_mib": peak - baseline,
        "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------
# Driver: one subprocess per run, saved records
# --------------------------------------------------------------------------------------------


def run_specs(args: argparse.Namespace, modes: Callable[[str], tuple[str, ...]]) -> list[Record]:
    """Every (dataset, backbone, mode, seed) combination requested on the command line.

    ``modes(dataset)`` lists the modes a dataset is run in, in table order; ``--modes`` keeps a
    subset of them.
    """
    return [
        {
            "dataset": dataset,
            "backbone": backbone,
            "mode": mode,
            "seed": seed,
            "max_epochs": args.max_epochs,
            "data_dir": str(args.data_dir),
        }
        for dataset in args.datasets
        for backbone in args.backbones
        for mode in modes(dataset)
        if args.modes is None or mode in args.modes
        for seed in args.seeds
    ]


def _read_first(path: str, key: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _git_revision() -> str:
    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        dirty = " (with uncommitted changes)" if git("status", "--porcelain") else ""
        return git("rev-parse", "--short", "HEAD") + dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info(args: argparse.Namespace) -> Record:
    """Command line, date and machine description for the page header."""
    mem_kib = _read_first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _read_first("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(mem_kib) / 2**20, 1) if mem_kib.isdigit() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "skvqgnn": importlib.metadata.version("skvqgnn"),
        "git": _git_revision(),
        "datasets": args.datasets,
        "backbones": args.backbones,
        "seeds": args.seeds,
        "max_epochs": args.max_epochs,
    }


def run_summary(record: Record, metrics: str) -> str:
    """One-line progress report of a run: what ran, its ``metrics`` text, time and memory."""
    mode = record["mode"] if record["batch_size"] is None else f"vq b={record['batch_size']}"
    return (
        f"{record['dataset']} {record['backbone']} {mode} seed {record['seed']}: {metrics}, "
        f"fit {record['fit_time_s']:.1f} s ({record['epochs']} epochs), "
        f"peak RSS +{record['rss_increase_mib']:.0f} MiB"
    )


def run_workers(
    script: str,
    specs: list[Record],
    summary: Callable[[Record], str],
    json_path: Path | None,
    meta: Record,
) -> list[Record]:
    """Run ``script --worker SPEC`` for every spec, one at a time, each in a fresh subprocess.

    Parameters
    ----------
    script : str
        The benchmark script; its worker prints the run's record as the last line of stdout.
    specs : list of dict
        The runs.
    summary : callable
        One-line report of a record, printed to stderr after each run.
    json_path : Path or None
        Where to save ``meta`` and the records so far after each run (`write_json`).
    meta : dict
        Header information (`machine_info`).

    Returns
    -------
    list of dict
        The records, in the order of ``specs``. Exits the process when a worker fails.
    """
    records: list[Record] = []
    for i, spec in enumerate(specs, 1):
        proc = subprocess.run(
            [sys.executable, str(Path(script).resolve()), "--worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.exit(f"run {spec} failed with exit code {proc.returncode}")
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        records.append(record)
        print(f"[{i}/{len(specs)}] {summary(record)}", file=sys.stderr, flush=True)
        if json_path is not None:
            write_json(json_path, meta, records)
    return records


def merge_saved(saved: list[Record]) -> tuple[Record, list[Record]]:
    """Header and runs of several saved files: the first header, with the union of their
    datasets and backbones in the canonical order, and every run."""
    meta = dict(saved[0]["meta"])
    for key, order in (("datasets", DATASETS), ("backbones", BACKBONES)):
        present = {value for s in saved for value in s["meta"][key]}
        meta[key] = [value for value in order if value in present]
    return meta, [run for s in saved for run in s["runs"]]


def portable(records: list[Record]) -> list[Record]:
    """The records with their ``data_dir`` relative to the repository, so that saved files
    name no folder of the machine that made them."""
    return [
        {**r, "data_dir": os.path.relpath(r["data_dir"], REPO_ROOT)} if "data_dir" in r else r
        for r in records
    ]


def write_json(path: Path, meta: Record, records: list[Record]) -> None:
    """Save the header information and the per-run records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "runs": portable(records)}, indent=1) + "\n")


def collect_records(
    args: argparse.Namespace, script: str, specs: list[Record], summary: Callable[[Record], str]
) -> tuple[Record, list[Record], str | None]:
    """The header, the records and, with ``--from-json``, the command that merged saved files;
    without it, the records of fresh runs of ``specs`` (`run_workers`)."""
    if args.from_json is not None:
        meta, records = merge_saved([json.loads(path.read_text()) for path in args.from_json])
        return meta, records, shlex.join(["python", *sys.argv])
    meta = machine_info(args)
    return meta, run_workers(script, specs, summary, args.json, meta), None


def run_script(
    args: argparse.Namespace,
    script: str,
    modes: Callable[[str], tuple[str, ...]],
    run_fit: Callable[[Record], Record],
    summary: Callable[[Record], str],
    render: Callable[[Record, list[Record], str | None], str],
) -> None:
    """The command line of a benchmark script.

    As a worker (``--worker SPEC``): run one fit and print its record as JSON. Otherwise: run
    every spec in its own worker (or, with ``--from-json``, merge saved records), then replace
    the generated region of ``--out`` with ``render``'s output (`write_generated`).
    """
    serve(args, script, lambda: run_specs(args, modes), run_fit, summary, render)


def serve(
    args: argparse.Namespace,
    script: str,
    make_specs: Callable[[], list[Record]],
    run_fit: Callable[[Record], Record],
    summary: Callable[[Record], str],
    render: Callable[[Record, list[Record], str | None], str],
) -> None:
    """`run_script` for any list of runs: ``make_specs()`` gives them (not called for a
    worker)."""
    if args.worker is not None:
        print(json.dumps(run_fit(json.loads(args.worker))))
        return
    meta, records, regenerated = collect_records(args, script, make_specs(), summary)
    write_generated(args.out, render(meta, records, regenerated))
    print(f"wrote {args.out}", file=sys.stderr)


def parse_args(
    argv: list[str] | None,
    description: str,
    out: Path,
    modes: tuple[str, ...],
    modes_help: str,
    backbones: tuple[str, ...] = BACKBONES,
    datasets: tuple[str, ...] = DATASETS,
    backbone_choices: tuple[str, ...] = BACKBONES,
) -> argparse.Namespace:
    """Parse a benchmark script's command line: ``--out`` defaults to ``out`` (the script's
    page), ``--modes`` chooses among ``modes`` and defaults to ``None`` (every mode),
    ``--backbones`` among ``backbone_choices`` (by default `BACKBONES`) and defaults to
    ``backbones``, ``--datasets`` among `DATASETS` and defaults to ``datasets``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(datasets))
    parser.add_argument("--backbones", nargs="+", choices=backbone_choices, default=list(backbones))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", choices=modes, default=None, help=modes_help)
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="default: the estimator's default"
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=out, help=OUT_HELP)
    parser.add_argument("--json", type=Path, default=None, help="raw per-run records")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="rebuild the generated region of --out from saved records only (several files are "
        "merged)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> str:
    """``mean ± population standard deviation`` with three decimals."""
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def mean_of(runs: list[Record] | None, key: str) -> float | None:
    """Mean of ``key`` over the runs; ``None`` when there are none."""
    return None if not runs else statistics.mean(r[key] for r in runs)


def group_runs(records: list[Record]) -> dict[tuple[str, str, str], list[Record]]:
    """The records by ``(dataset, backbone, mode)``."""
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for record in records:
        key = (record["dataset"], record["backbone"], record["mode"])
        groups.setdefault(key, []).append(record)
    return groups


def delta_points(mode: str, value: float | None, full: float | None) -> str:
    """Table cell: 100 × (value − full), ``(reference)`` on the full-graph row itself."""
    if mode == "full":
        return "(reference)"
    if value is None or full is None:
        return "n/a"
    return f"{100 * (value - full):+.1f}"


def dataset_table(
    dataset: str,
    groups: dict[tuple[str, str, str], list[Record]],
    mode_labels: dict[str, str],
    metric_header: list[str],
    metric_cells: Callable[[str, list[Record], list[Record] | None], list[str]],
) -> list[str]:
    """Markdown table of a dataset: a row per backbone and mode that has runs.

    Parameters
    ----------
    dataset : str
        The dataset.
    groups : dict
        The records by ``(dataset, backbone, mode)`` (`group_runs`).
    mode_labels : dict
        Mode -> label, in row order; a mode ``"full"`` is the reference of the others.
    metric_header : list of str
        Names of the metric columns.
    metric_cells : callable
        ``metric_cells(mode, runs, full_runs)``: the metric cells of a row from its runs and
        those of the same backbone's full-graph mode (``None`` if it has none).

    Returns
    -------
    list of str
        The table's lines: backbone, mode label, batch size, the metric cells, and medians over
        the runs of fit time, epoch time, peak RSS (increase and absolute), GPU peak (when any
        run has one) and epochs.
    """
    gpu = any(r["gpu_peak_mib"] is not None for runs in groups.values() for r in runs)
    header = [
        "backbone",
        "mode",
        "batch size",
        *metric_header,
        "fit time (s)",
        "epoch time (s)",
        "peak RSS increase (MiB)",
        "peak RSS (MiB)",
        *(["GPU peak (MiB)"] if gpu else []),
        "epochs",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for backbone in BACKBONES:
        full = groups.get((dataset, backbone, "full"))
        for mode, label in mode_labels.items():
            runs = groups.get((dataset, backbone, mode))
            if not runs:
                continue
            batch = runs[0]["batch_size"]
            gpu_cell = [f"{statistics.median(r['gpu_peak_mib'] for r in runs):.0f}"] if gpu else []
            cells = [
                backbone,
                label,
                "all" if batch is None else str(batch),
                *metric_cells(mode, runs, full),
                f"{statistics.median(r['fit_time_s'] for r in runs):.1f}",
                f"{statistics.median(r['epoch_time_s'] for r in runs):.2f}",
                f"{statistics.median(r['rss_increase_mib'] for r in runs):.0f}",
                f"{statistics.median(r['rss_peak_mib'] for r in runs):.0f}",
                *gpu_cell,
                f"{statistics.median(r['epochs'] for r in runs):g}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def bar_row(bar: str, vq: float | None, full: float | None, row: str | None = None) -> str:
    """Bars table row checking ``vq ≥ full − BAR_POINTS / 100``; NOT RUN when either is
    missing. ``row``: a cell after the bar's name saying which row was measured."""
    head = f"| {bar} | " + ("" if row is None else f"{row} | ")
    if vq is None or full is None:
        return f"{head}– | – | NOT RUN |"
    threshold = full - BAR_POINTS / 100
    result = "PASS" if vq >= threshold else "FAIL"
    return (
        f"{head}{vq:.3f} | {full:.3f} − {BAR_POINTS / 100:.3f} = {threshold:.3f} | **{result}** |"
    )


def best_on_validation(candidates: list[tuple[str, list[Record] | None]], key: str) -> str | None:
    """The mode, among ``(mode, runs)`` candidates in order of preference, whose runs have the
    highest mean ``key`` (a validation score); the earlier one on a tie, ``None`` when no
    candidate has runs. The test scores play no part."""
    scored = [(mean_of(runs, key), -i, mode) for i, (mode, runs) in enumerate(candidates) if runs]
    return max(scored)[2] if scored else None


def _produced(meta: Record, regenerated: str | None) -> list[str]:
    """The date and command of the runs, and the command that regenerated the page (if any)."""
    lines = [f"Produced on {meta['date']} by", "", "```", meta["command"], "```", ""]
    if regenerated:
        lines += [f"(regenerated from the saved records with `{regenerated}`)", ""]
    return lines


def provenance_lines(
    meta: Record, records: list[Record], regenerated: str | None, estimator: str
) -> list[str]:
    """Date and command of the runs, the command that regenerated the page from saved records
    (if any), and bullets on the machine, software, device, seeds and ``estimator``'s
    parameters."""
    devices = ", ".join(sorted({r["device"] for r in records}))
    threads = ", ".join(sorted({str(r["torch_threads"]) for r in records}))
    torch_versions = ", ".join(sorted({r["torch"] for r in records}))
    max_epochs = sorted({r["max_epochs"] for r in records})
    epochs_note = "estimator default" if meta["max_epochs"] is None else "--max-epochs"
    return [
        *_produced(meta, regenerated),
        f"- Machine: {meta['cpu_count']} CPUs ({meta['cpu_model']}), "
        f"{meta['memory_gib']} GiB RAM; {meta['platform']}",
        f"- Software: Python {meta['python']}, torch {torch_versions} ({threads} threads), "
        f"skvqgnn {meta['skvqgnn']} at git {meta['git']}",
        f"- Device: {devices}",
        f"- Seeds: {', '.join(map(str, meta['seeds']))}; max_epochs = "
        f"{', '.join(map(str, max_epochs))} ({epochs_note}); every other parameter of "
        f"`{estimator}` at its default"
        + (
            ", except the `params` of each record, given on this page with its mode or recipe."
            if any(r.get("params") for r in records)
            else "."
        ),
    ]


def machine_lines(meta: Record, records: list[Record], regenerated: str | None) -> list[str]:
    """Provenance of a single-threaded benchmark on generated graphs: date and command, the
    command that regenerated the page (if any), the machine and the software."""
    return [
        *_produced(meta, regenerated),
        f"- Machine: {meta['cpu_count']} CPUs ({meta['cpu_model']}), {meta['memory_gib']} GiB "
        f"RAM; {meta['platform']}; one torch thread",
        f"- Software: Python {meta['python']}, torch "
        f"{', '.join(sorted({r['torch'] for r in records}))}, skvqgnn {meta['skvqgnn']} at git "
        f"{meta['git']}",
    ]


# --------------------------------------------------------------------------------------------
# The generated region of a page
# --------------------------------------------------------------------------------------------


def page_for(script: str) -> Path:
    """The page of a benchmark script: ``doc/benchmarks/<name>.md`` for ``benchmarks/<name>.py``."""
    return PAGES_DIR / f"{Path(script).stem}.md"


def generated_region(page: str) -> str | None:
    """The text between the generated region's markers of ``page`` (without them); ``None``
    when the page has no region.

    Raises
    ------
    ValueError
        If the page has a start marker without an end marker after it, an end marker without a
        start marker, or more than one region.
    """
    start = page.find(GENERATED_START)
    if start < 0:
        if GENERATED_END in page:
            raise ValueError(f"{GENERATED_END} without {GENERATED_START} before it")
        return None
    if page.find(GENERATED_START, start + 1) >= 0:
        raise ValueError(f"more than one {GENERATED_START} in the page")
    end = page.find(GENERATED_END, start)
    if end < 0:
        raise ValueError(f"{GENERATED_START} without {GENERATED_END} after it")
    return page[start + len(GENERATED_START) : end].strip("\n")


def replace_generated(page: str, body: str) -> str:
    """``page`` with the text of its generated region replaced by ``body``.

    Parameters
    ----------
    page : str
        A Markdown page, possibly empty, with at most one generated region.
    body : str
        The region's new text, without the markers.

    Returns
    -------
    str
        The page with ``GENERATED_START``, ``body`` and ``GENERATED_END`` on lines of their own in
        place of its region, or, when it has none, appended after a blank line; the hand-written
        rest of the page unchanged; ending with a newline.
    """
    body = body.strip("\n")
    region = f"{GENERATED_START}\n{body}\n{GENERATED_END}"
    if generated_region(page) is None:  # (which also checks the markers)
        head = page.rstrip("\n")
        return f"{head}\n\n{region}\n" if head else f"{region}\n"
    start = page.index(GENERATED_START)
    end = page.index(GENERATED_END, start) + len(GENERATED_END)
    page = page[:start] + region + page[end:]
    return page if page.endswith("\n") else page + "\n"


def write_generated(path: Path, body: str) -> None:
    """Replace the generated region of the page ``path`` with ``body`` (`replace_generated`),
    creating the page, and its folder, when absent."""
    page = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_generated(page, body))
