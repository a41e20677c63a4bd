"""Node-classification benchmark of ``VQGNNClassifier``: accuracy, fit time and peak memory.

Every (dataset, backbone, mode, seed) fit runs in a fresh subprocess (this script with
``--worker``), one after the other, so that each run's peak memory is its own. The results go to
a Markdown page (``--out``) and, optionally, to raw per-run records (``--json``) from which
``--from-json`` rebuilds the page without fitting anything.

The parent process imports only the standard library: Linux carries a process's peak RSS over
fork/exec into its child's ``ru_maxrss``, so a parent holding torch would inflate every run's
absolute peak.
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUT = REPO_ROOT / "doc" / "benchmarks.md"
DATASETS = ("cora", "citeseer", "twitch-en")
BACKBONES = ("gcn", "sage", "gin", "gat", "transformer")
MODE_LABELS = {"vq": "VQ, batch n/8", "vq-512": "VQ, batch 512", "full": "full graph"}
EXTRA_MODES = {"cora": ("vq-512",)}
BAR_POINTS = 1.0  # VQ (n/8) may trail full-graph training by at most this many points
# minimum test accuracies: (dataset, backbone, mode) -> (label, floor)
ABSOLUTE_BARS = {
    ("cora", "gcn", "vq-512"): ("VQ, batch 512", 0.80),
    ("cora", "gat", "vq"): ("VQ (n/8)", 0.80),
}

Record = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Worker: one fit in this process
# --------------------------------------------------------------------------------------------


def batch_size_for(mode: str, n_nodes: int) -> int | None:
    """Batch size of a mode: ``n_nodes // 8`` for ``"vq"``, ``None`` for ``"full"``."""
    if mode == "full":
        return None
    if mode == "vq":
        return n_nodes // 8
    return int(mode.removeprefix("vq-"))


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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
    import torch

    from skvqgnn import VQGNNClassifier
    from skvqgnn.datasets import load_cora, load_edge_list_csv, load_planetoid, random_split

    dataset, seed = spec["dataset"], spec["seed"]
    data_dir = Path(spec["data_dir"])
    if dataset == "cora":
        A, X, y, split = load_cora()
    elif dataset == "citeseer":
        A, X, y, split = load_planetoid(data_dir / "citeseer", "citeseer")
    else:
        A, X, y, _ = load_edge_list_csv(data_dir / dataset)
        split = random_split(y, 0.6, 0.2, random_state=seed)
    n_nodes = A.shape[0]
    cuda = torch.cuda.is_available()
    params: Record = {
        "backbone": spec["backbone"],
        "batch_size": batch_size_for(spec["mode"], n_nodes),
        "random_state": seed,
        "device": "cuda" if cuda else "cpu",
    }
    if spec["max_epochs"] is not None:
        params["max_epochs"] = spec["max_epochs"]
    clf = VQGNNClassifier(**params)
    labels = np.where(split.train_mask, y, -1)

    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    baseline = _max_rss_mib()
    start = time.perf_counter()
    clf.fit(A, X, labels)
    fit_time = time.perf_counter() - start
    pred = clf.transduction_
    peak = _max_rss_mib()

    epoch_times = [epoch["time"] for epoch in clf.history_]
    return {
        **spec,
        "n_nodes": int(n_nodes),
        "batch_size": params["batch_size"],
        "max_epochs": clf.max_epochs,
        "epochs": int(clf.n_iter_),
        "test_acc": float(np.mean(pred[split.test_mask] == y[split.test_mask])),
        "val_acc": float(np.mean(pred[split.val_mask] == y[split.val_mask])),
        "vq_error": [float(e) for e in clf.vq_error_],
        "fit_time_s": fit_time,
        "epoch_time_s": statistics.median(epoch_times),
        "rss_baseline_mib": baseline,
        "rss_peak_mib": peak,
        "rss_increase_mib": peak - baseline,
        "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------
# Driver: one subprocess per run
# --------------------------------------------------------------------------------------------


def run_specs(args: argparse.Namespace) -> list[Record]:
    """Every (dataset, backbone, mode, seed) combination requested on the command line."""
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
        for mode in ("vq", *EXTRA_MODES.get(dataset, ()), "full")
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


def _summary(record: Record) -> str:
    mode = record["mode"] if record["batch_size"] is None else f"vq b={record['batch_size']}"
    return (
        f"{record['dataset']} {record['backbone']} {mode} seed {record['seed']}: "
        f"test {record['test_acc']:.3f} val {record['val_acc']:.3f}, "
        f"fit {record['fit_time_s']:.1f} s ({record['epochs']} epochs), "
        f"peak RSS +{record['rss_increase_mib']:.0f} MiB"
    )


def run_all(args: argparse.Namespace, meta: Record) -> list[Record]:
    """Run the requested fits one at a time, each in a fresh worker subprocess."""
    specs = run_specs(args)
    records: list[Record] = []
    for i, spec in enumerate(specs, 1):
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.exit(f"run {spec} failed with exit code {proc.returncode}")
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        records.append(record)
        print(f"[{i}/{len(specs)}] {_summary(record)}", file=sys.stderr, flush=True)
        if args.json is not None:
            write_json(args.json, meta, records)
    return records


def merge_saved(saved: list[Record]) -> tuple[Record, list[Record]]:
    """Header and runs of several saved files: the first header, with the union of their
    datasets and backbones in the canonical order, and every run."""
    meta = dict(saved[0]["meta"])
    for key, order in (("datasets", DATASETS), ("backbones", BACKBONES)):
        present = {value for s in saved for value in s["meta"][key]}
        meta[key] = [value for value in order if value in present]
    return meta, [run for s in saved for run in s["runs"]]


def write_json(path: Path, meta: Record, records: list[Record]) -> None:
    """Save the header information and the per-run records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "runs": records}, indent=1) + "\n")


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def _group(records: list[Record]) -> dict[tuple[str, str, str], list[Record]]:
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for record in records:
        key = (record["dataset"], record["backbone"], record["mode"])
        groups.setdefault(key, []).append(record)
    return groups


def _mean_acc(runs: list[Record] | None) -> float | None:
    return None if not runs else statistics.mean(r["test_acc"] for r in runs)


def _dataset_table(dataset: str, groups: dict[tuple[str, str, str], list[Record]]) -> list[str]:
    gpu = any(r["gpu_peak_mib"] is not None for runs in groups.values() for r in runs)
    header = [
        "backbone",
        "mode",
        "batch size",
        "test acc",
        "val acc",
        "Δ test vs full (points)",
        "fit time (s)",
        "epoch time (s)",
        "peak RSS increase (MiB)",
        "peak RSS (MiB)",
        *(["GPU peak (MiB)"] if gpu else []),
        "epochs",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for backbone in BACKBONES:
        full = _mean_acc(groups.get((dataset, backbone, "full")))
        for mode in MODE_LABELS:
            runs = groups.get((dataset, backbone, mode))
            if not runs:
                continue
            acc = _mean_acc(runs)
            if mode == "full":
                delta = "(reference)"
            elif full is None:
                delta = "n/a"
            else:
                delta = f"{100 * (acc - full):+.1f}"
            batch = runs[0]["batch_size"]
            cells = [
                backbone,
                MODE_LABELS[mode],
                "all" if batch is None else str(batch),
                _mean_std([r["test_acc"] for r in runs]),
                _mean_std([r["val_acc"] for r in runs]),
                delta,
                f"{statistics.median(r['fit_time_s'] for r in runs):.1f}",
                f"{statistics.median(r['epoch_time_s'] for r in runs):.2f}",
                f"{statistics.median(r['rss_increase_mib'] for r in runs):.0f}",
                f"{statistics.median(r['rss_peak_mib'] for r in runs):.0f}",
                *([f"{statistics.median(r['gpu_peak_mib'] for r in runs):.0f}"] if gpu else []),
                f"{statistics.median(r['epochs'] for r in runs):g}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _bars(meta: Record, groups: dict[tuple[str, str, str], list[Record]]) -> list[str]:
    lines = ["| bar | measured | threshold | result |", "|---|---|---|---|"]
    for dataset in meta["datasets"]:
        for backbone in meta["backbones"]:
            vq = _mean_acc(groups.get((dataset, backbone, "vq")))
            full = _mean_acc(groups.get((dataset, backbone, "full")))
            bar = f"{dataset} / {backbone}: VQ (n/8) ≥ full − {BAR_POINTS:g} point"
            if vq is None or full is None:
                lines.append(f"| {bar} | – | – | NOT RUN |")
                continue
            threshold = full - BAR_POINTS / 100
            result = "PASS" if vq >= threshold else "FAIL"
            lines.append(
                f"| {bar} | {vq:.3f} | {full:.3f} − {BAR_POINTS / 100:.3f} = {threshold:.3f} "
                f"| **{result}** |"
            )
    for (dataset, backbone, mode), (label, floor) in ABSOLUTE_BARS.items():
        if dataset not in meta["datasets"] or backbone not in meta["backbones"]:
            continue
        acc = _mean_acc(groups.get((dataset, backbone, mode)))
        bar = f"{dataset} / {backbone}: {label} ≥ {floor:.2f}"
        if acc is None:
            lines.append(f"| {bar} | – | – | NOT RUN |")
        else:
            result = "PASS" if acc >= floor else "FAIL"
            lines.append(f"| {bar} | {acc:.3f} | {floor:.3f} | **{result}** |")
    return lines


def render(meta: Record, records: list[Record], regenerated: str | None = None) -> str:
    """The Markdown page: header, one table per dataset, bars and the measurement notes."""
    groups = _group(records)
    devices = ", ".join(sorted({r["device"] for r in records}))
    threads = ", ".join(sorted({str(r["torch_threads"]) for r in records}))
    torch_versions = ", ".join(sorted({r["torch"] for r in records}))
    max_epochs = sorted({r["max_epochs"] for r in records})
    epochs_note = "estimator default" if meta["max_epochs"] is None else "--max-epochs"
    lines = [
        "# Benchmarks: node classification",
        "",
        f"Produced on {meta['date']} by",
        "",
        "```",
        meta["command"],
        "```",
        "",
    ]
    if regenerated:
        lines += [f"(page regenerated from the saved records with `{regenerated}`)", ""]
    lines += [
        f"- Machine: {meta['cpu_count']} CPUs ({meta['cpu_model']}), "
        f"{meta['memory_gib']} GiB RAM; {meta['platform']}",
        f"- Software: Python {meta['python']}, torch {torch_versions} ({threads} threads), "
        f"skvqgnn {meta['skvqgnn']} at git {meta['git']}",
        f"- Device: {devices}",
        f"- Seeds: {', '.join(map(str, meta['seeds']))}; max_epochs = "
        f"{', '.join(map(str, max_epochs))} ({epochs_note}); every other parameter of "
        "`VQGNNClassifier` at its default.",
        "- Modes: *VQ, batch n/8* uses `batch_size = n_nodes // 8`; *VQ, batch 512* uses "
        "`batch_size=512`; *full graph* is `batch_size=None`, the exact full-graph reference "
        "without codebooks.",
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
            lines += [f"## {dataset} ({n_nodes} nodes)", "", *_dataset_table(dataset, groups), ""]
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="default: the estimator's default"
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown page")
    parser.add_argument("--json", type=Path, default=None, help="raw per-run records")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="rebuild --out from saved records only (several files are merged)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or one worker fit, or regenerate the page) and write the outputs."""
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_fit(json.loads(args.worker))))
        return
    if args.from_json is not None:
        meta, records = merge_saved([json.loads(path.read_text()) for path in args.from_json])
        regenerated = shlex.join(["python", *sys.argv])
    else:
        meta = machine_info(args)
        records = run_all(args, meta)
        regenerated = None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(meta, records, regenerated))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
