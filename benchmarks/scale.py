"""Scale benchmark of ``VQGNNClassifier``: memory and time of training and inference against the
size and the average degree of the graph.

Graphs come from the contextual SBM generator ``skvqgnn.datasets.make_csbm`` at a fixed average
degree, feature width, batch size b and number of codewords k, for growing numbers of nodes n
(and, at one n, for growing average degrees). Each (n, degree, mode) configuration, VQ
mini-batch training or full-graph training, runs in a fresh subprocess (this script with
``--worker``) under a cap on its address space and a wall-time limit, so that a graph too large
for the machine ends as a recorded "does not fit" instead of a visit from the OOM killer.

Per configuration it records the peak memory of one training step (median over a few steps
after warm-up), the time of an epoch, and the time and peak memory of inference over every node
with ``inference="vq"`` and ``inference="exact"``, and their agreement. The provenance, tables,
bars and links to the plots replace the generated region of a Markdown page (``--out``, by
default ``doc/benchmarks/scale.md``, whose hand-written rest says what is measured and how); the
plots are two PNG files (``--plots-dir``, by default ``doc``), and raw records go to ``--json``,
from which ``--from-json`` rebuilds region and plots without running anything.

As in the other benchmark scripts, the parent process imports only the standard library (numpy,
torch and skvqgnn are imported in the workers; matplotlib only once every worker has finished).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    OUT_HELP,
    REPO_ROOT,
    Record,
    machine_info,
    page_for,
    write_generated,
    write_json,
)

MODES = ("vq", "full")
MODE_LABELS = {"vq": "VQ mini-batch", "full": "full graph"}
INFERENCE_MODES = {"vq": ("vq", "exact"), "full": ("exact",)}  # full graph has no codebooks
DEFAULT_SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
DEFAULT_DEGREES = (5, 10, 20, 40)
DEFAULT_PLOTS = REPO_ROOT / "doc"
MEMORY_PLOT, TIME_PLOT = "scale_memory.png", "scale_time.png"
MIB = 2**20
WARMUP_STEPS = 2  # training steps before the first measured one (lazy state: Adam moments)
MEMORY_STEPS = 5  # measured steps; their median is reported
MEMORY_BAR = (10_000, 1_000_000, 1.2)  # VQ per-step peak at the larger n <= 1.2 x at the smaller
SPEEDUP_BAR, AGREEMENT_BAR = 4.0, 0.99  # VQ inference against exact, on the largest graph
# messages of the errors that mean "out of memory" (torch, pybind11, the C library)
OUT_OF_MEMORY_MESSAGES = ("can't allocate memory", "out of memory", "bad_alloc", "cannot allocate")


# --------------------------------------------------------------------------------------------
# Memory of a region of code in this process
# --------------------------------------------------------------------------------------------


def status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``"VmRSS"``, ``"VmHWM"``, ...)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Reset the kernel's peak resident set size of this process (``VmHWM``, and with it
    ``ru_maxrss``) to its current resident set size: ``echo 5 > /proc/self/clear_refs``
    (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _load_libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 -- glibc only
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_LIBC = _load_libc()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc ``malloc_trim(0)``), so that the
    resident set counts live memory only; nothing on other C libraries."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class MemoryProbe:
    """Peak memory of regions of code (a training step, an inference pass) in this process.

    ``start()`` gives the heap's free pages back to the kernel, resets the peak resident set
    size and reads the resident set size; ``stop()`` reads the new peak. The region's peak is
    the difference: how far the region raised the process's resident memory above what was
    live before it. With CUDA, the same for ``torch.cuda.max_memory_allocated()`` above
    ``torch.cuda.memory_allocated()``.

    Parameters
    ----------
    cuda : bool, default=False
        Also measure the peak of CUDA tensors (torch must be importable).

    Attributes
    ----------
    absolute_kib : int
        The highest ``VmHWM`` seen, kept across resets: the process's absolute peak so far.
    """

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.absolute_kib = status_kib("VmHWM")
        self._rss_before = 0
        self._gpu_before = 0

    def start(self) -> None:
        """Begin a region."""
        self.absolute_kib = max(self.absolute_kib, status_kib("VmHWM"))
        release_free_memory()
        reset_peak_rss()
        self._rss_before = status_kib("VmRSS")
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._gpu_before = torch.cuda.memory_allocated()

    def stop(self) -> Record:
        """End the region: its ``peak_mib`` (peak RSS − RSS at the start, MiB), the
        ``rss_before_mib`` and, with CUDA, ``gpu_peak_mib`` (peak − allocated at the start)."""
        hwm = status_kib("VmHWM")
        self.absolute_kib = max(self.absolute_kib, hwm)
        measured: Record = {
            "peak_mib": max(0, hwm - self._rss_before) / 1024,
            "rss_before_mib": self._rss_before / 1024,
        }
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            measured["gpu_peak_mib"] = (torch.cuda.max_memory_allocated() - self._gpu_before) / MIB
        return measured

    def absolute_peak_mib(self) -> float:
        """The process's absolute peak resident set size so far (MiB), across resets."""
        return max(self.absolute_kib, status_kib("VmHWM")) / 1024


def torch_allocation_peak(profiler: Any) -> float | None:
    """Peak of the CPU memory torch allocated (minus what it freed) while ``profiler`` (a
    stopped ``torch.profiler.profile(profile_memory=True)``) recorded, in MiB, from its
    allocation events in time order; ``None`` when this torch does not expose them."""
    import torch

    try:
        events = profiler.profiler.kineto_results.events()
        deltas = sorted(
            (e.start_ns(), e.nbytes())
            for e in events
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
        )
    except AttributeError:
        return None
    total = peak = 0
    for _, nbytes in deltas:
        total += nbytes
        peak = max(peak, total)
    return peak / MIB


# --------------------------------------------------------------------------------------------
# Training steps seen from the sampler
# --------------------------------------------------------------------------------------------


class StepProbe:
    """Measures training steps through the training loop's callbacks (`callback`).

    Every step runs between the loop's ``on_step_start`` and ``on_step_end`` (batch assembly,
    forward, backward, optimiser and codebook updates). Steps ``warmup`` to
    ``warmup + measured - 1`` (counted across epochs) are measured with a `MemoryProbe`; with
    ``profile`` the step after them runs under ``torch.profiler`` for `torch_allocation_peak`.

    Parameters
    ----------
    memory : MemoryProbe
    warmup, measured : int
        Unmeasured steps first, then measured steps.
    profile : bool
        Profile one more step.

    Attributes
    ----------
    steps : list of dict
        `MemoryProbe.stop` of each measured step.
    torch_peak_mib : float or None
        `torch_allocation_peak` of the profiled step.
    epochs : list of dict
        Per epoch: ``steps``, whether it is ``timed`` (none of its steps is a warm-up,
        measured or profiled one) and the seconds spent in the probe itself (``probe_s``).
    """

    def __init__(self, memory: MemoryProbe, warmup: int, measured: int, profile: bool):
        self.memory = memory
        self.warmup = warmup
        self.measured = measured
        self.profile = profile
        self.steps: list[Record] = []
        self.torch_peak_mib: float | None = None
        self.epochs: list[Record] = []
        self._count = 0
        self._role: str | None = None
        self._profiler: Any = None

    def callback(self) -> Any:
        """This probe as a ``skvqgnn.Callback``, for ``fit(..., callbacks=[...])``."""
        from skvqgnn import Callback

        probe = self

        class Probe(Callback):
            def on_epoch_start(self, fit: Any) -> None:
                probe.epoch_start()

            def on_step_start(self, fit: Any, batch_nodes: Any) -> None:
                probe.step_start()

            def on_step_end(self, fit: Any, batch_nodes: Any, n_terms: int) -> None:
                probe.step_end()

        return Probe()

    def _role_of(self, step: int) -> str | None:
        if step < self.warmup:
            return "warmup"
        if step < self.warmup + self.measured:
            return "memory"
        if self.profile and step == self.warmup + self.measured:
            return "profile"
        return None

    def epoch_start(self) -> None:
        """A new epoch's record."""
        self.epochs.append({"steps": 0, "timed": True, "probe_s": 0.0})

    def step_start(self) -> None:
        """Before a step: start measuring it if its turn has come."""
        from torch.profiler import ProfilerActivity, profile

        record = self.epochs[-1]
        self._role = self._role_of(self._count)
        self._count += 1
        record["steps"] += 1
        if self._role is not None:
            record["timed"] = False
        start = time.perf_counter()
        if self._role == "memory":
            self.memory.start()
        elif self._role == "profile":
            self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._profiler.start()
        record["probe_s"] += time.perf_counter() - start

    def step_end(self) -> None:
        """After a step: stop measuring it."""
        start = time.perf_counter()
        if self._role == "memory":
            self.steps.append(self.memory.stop())
        elif self._role == "profile":
            self._profiler.stop()
            self.torch_peak_mib = torch_allocation_peak(self._profiler)
        self.epochs[-1]["probe_s"] += time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# Worker: one configuration in this process
# --------------------------------------------------------------------------------------------


def epochs_for(spec: Record) -> int:
    """Epochs of a configuration's fit: enough to cover the warm-up, measured and profiled
    steps, plus ``spec["timed_epochs"]`` epochs without any instrumented step."""
    b = spec["n_nodes"] if spec["mode"] == "full" else min(spec["batch_size"], spec["n_nodes"])
    steps_per_epoch = math.ceil(spec["n_nodes"] / b)
    instrumented = WARMUP_STEPS + MEMORY_STEPS + 1
    return math.ceil(instrumented / steps_per_epoch) + spec["timed_epochs"]


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(m in text for m in OUT_OF_MEMORY_MESSAGES)


def run_config(spec: Record) -> Record:
    """Measure one configuration; runs inside the worker process.

    Parameters
    ----------
    spec : dict
        ``n_nodes``, ``avg_degree``, ``n_features``, ``n_classes``, ``backbone``, ``mode``
        (``"vq"``: ``batch_size`` nodes per step; ``"full"``: the whole graph per step),
        ``batch_size``, ``n_codewords``, ``sampler``, ``seed``, ``timed_epochs`` and
        ``memory_limit_gib`` (cap on this process's address space, ``None``: none).

    Returns
    -------
    dict
        The spec plus ``fits`` and the measurements (`measure`); when memory runs out,
        ``fits=False``, the ``failed_stage``, the ``reason`` and the peak RSS since the last
        reset (``rss_peak_at_failure_mib``), with what was measured before.
    """
    limit = spec.get("memory_limit_gib")
    if limit is not None:
        size = int(limit * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    record: Record = {**spec, "fits": False, "failed_stage": "start"}
    try:
        measure(spec, record)
    except (MemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        record["reason"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        record["rss_peak_at_failure_mib"] = status_kib("VmHWM") / 1024
        return record
    record["fits"] = True
    del record["failed_stage"]
    return record


def measure(spec: Record, record: Record) -> None:
    """Generate the graph, fit, infer, and fill ``record`` as each stage completes
    (``record["failed_stage"]`` names the stage under way).

    Fills the graph's ``n_edges`` (stored entries of the symmetric adjacency) and
    ``realised_degree``, ``data_time_s``; the training measurements ``step_peak_mib`` (median
    over the measured steps, with each step in ``steps``), ``step_rss_before_mib``,
    ``torch_step_peak_mib``, ``gpu_step_peak_mib``, ``epoch_time_s`` (median over the epochs
    without instrumented steps, listed in ``epoch_times_s``), ``steps_per_epoch``, ``epochs``,
    ``fit_time_s``, ``test_acc``; per inference mode ``time_s``, ``peak_mib``,
    ``rss_before_mib``, ``gpu_peak_mib`` and ``test_acc``; the ``agreement`` of the two
    inference modes; the process's ``absolute_peak_mib``, and device and software.
    """
    import numpy as np
    import torch

    from skvqgnn import Graph, VQGNNClassifier
    from skvqgnn.datasets import make_csbm

    cuda = torch.cuda.is_available()
    memory = MemoryProbe(cuda)
    record.update(
        device=f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu",
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
    )
    record["failed_stage"] = "data"
    start = time.perf_counter()
    A, X, y, split = make_csbm(
        spec["n_nodes"],
        n_classes=spec["n_classes"],
        avg_degree=spec["avg_degree"],
        n_features=spec["n_features"],
        random_state=spec["seed"],
    )
    graph = Graph(A, X)
    del A, X
    labels = np.where(split.train_mask, y, -1)
    record.update(
        n_edges=int(graph.A.nnz),
        realised_degree=graph.A.nnz / graph.n_nodes,
        data_time_s=time.perf_counter() - start,
        rss_data_mib=status_kib("VmRSS") / 1024,
    )

    record["failed_stage"] = "fit"
    probe = StepProbe(memory, WARMUP_STEPS, MEMORY_STEPS, profile=not cuda)
    clf = VQGNNClassifier(
        spec["backbone"],
        batch_size=None if spec["mode"] == "full" else spec["batch_size"],
        n_codewords=spec["n_codewords"],
        sampler=spec["sampler"],
        max_epochs=epochs_for(spec),
        random_state=spec["seed"],
        device="cuda" if cuda else "cpu",
    )
    start = time.perf_counter()
    clf.fit(graph.nodes(), labels, callbacks=[probe.callback()])
    fit_time = time.perf_counter() - start
    epoch_times = [
        epoch["time"]
        for epoch, seen in zip(clf.history_, probe.epochs, strict=True)
        if seen["timed"]
    ]
    clean = bool(epoch_times)
    if not clean:  # every epoch had warm-up or measured steps: take the probe's own time out
        epoch_times = [
            epoch["time"] - seen["probe_s"]
            for epoch, seen in zip(clf.history_, probe.epochs, strict=True)
        ]
    record.update(
        steps=probe.steps,
        step_peak_mib=statistics.median(s["peak_mib"] for s in probe.steps),
        step_rss_before_mib=statistics.median(s["rss_before_mib"] for s in probe.steps),
        torch_step_peak_mib=probe.torch_peak_mib,
        gpu_step_peak_mib=(
            statistics.median(s["gpu_peak_mib"] for s in probe.steps) if cuda else None
        ),
        epoch_time_s=statistics.median(epoch_times),
        epoch_times_s=epoch_times,
        epoch_times_clean=clean,
        steps_per_epoch=probe.epochs[0]["steps"],
        epochs=int(clf.n_iter_),
        fit_time_s=fit_time,
        test_acc=float(np.mean(clf.transduction_[split.test_mask] == y[split.test_mask])),
    )

    predictions = {}
    record["inference"] = {}
    for mode in INFERENCE_MODES[spec["mode"]]:
        record["failed_stage"] = f"inference ({mode})"
        clf.set_params(inference=mode)
        memory.start()
        start = time.perf_counter()
        predictions[mode] = clf.predict(graph.nodes())
        seconds = time.perf_counter() - start
        measured = memory.stop()
        record["inference"][mode] = {
            **measured,
            "time_s": seconds,
            "test_acc": float(np.mean(predictions[mode][split.test_mask] == y[split.test_mask])),
        }
    if len(predictions) == 2:
        record["agreement"] = float(np.mean(predictions["vq"] == predictions["exact"]))
    record["absolute_peak_mib"] = memory.absolute_peak_mib()


# --------------------------------------------------------------------------------------------
# Driver: one subprocess per configuration
# --------------------------------------------------------------------------------------------


def config_key(record: Record) -> tuple:
    """What identifies a configuration: ``(n_nodes, avg_degree, mode)``."""
    return (record["n_nodes"], float(record["avg_degree"]), record["mode"])


def make_specs(args: argparse.Namespace) -> list[Record]:
    """The configurations of the command line: every size at ``--avg-degree``, then every
    degree at ``--degree-nodes``, each in every mode, without repeats; sizes ascending."""
    common = {
        "n_features": args.features,
        "n_classes": args.classes,
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "n_codewords": args.codewords,
        "sampler": args.sampler,
        "seed": args.seed,
        "memory_limit_gib": args.memory_limit_gib,
    }
    grid = [(n, args.avg_degree) for n in sorted(args.sizes)]
    grid += [(args.degree_nodes, d) for d in sorted(args.degrees)]
    specs, seen = [], set()
    for n, degree in grid:
        for mode in args.modes:
            spec = {**common, "n_nodes": n, "avg_degree": float(degree), "mode": mode}
            if config_key(spec) in seen:
                continue
            seen.add(config_key(spec))
            timed = args.timed_epochs if args.timed_epochs is not None else (3 if n <= 1e5 else 1)
            specs.append({**spec, "timed_epochs": timed})
    return specs


def run_worker(spec: Record, timeout_s: float) -> Record:
    """Run ``spec`` in a fresh ``--worker`` subprocess and return its record; a worker that
    exceeds ``timeout_s``, dies or prints no record gives ``fits=False`` and the ``reason``."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**spec, "fits": False, "reason": f"wall-time limit of {timeout_s:g} s exceeded"}
    wall = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return {**json.loads(lines[-1]), "worker_time_s": wall}
    status = (
        f"killed by signal {-proc.returncode}"
        if proc.returncode < 0
        else f"exit code {proc.returncode}"
    )
    tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
    return {**spec, "fits": False, "reason": f"worker {status}: {tail[0][:200]}"}


def run_sweep(
    specs: list[Record],
    timeout_s: float,
    json_path: Path | None = None,
    meta: Record | None = None,
    report: Callable[[str], None] | None = None,
) -> list[Record]:
    """Run every configuration, one at a time, each in a fresh subprocess (`run_worker`).

    Once a mode has not fitted at some size (at its average degree), the larger sizes of that
    mode at that degree are not run; their records say which size did not fit. After each
    configuration, ``meta`` and the records so far are saved to ``json_path`` (if given) and a
    one-line summary goes to ``report``.
    """
    records: list[Record] = []
    too_big: dict[tuple[float, str], int] = {}
    for i, spec in enumerate(specs, 1):
        limit = too_big.get((float(spec["avg_degree"]), spec["mode"]))
        if limit is not None and spec["n_nodes"] > limit:
            record = {**spec, "fits": False, "reason": f"not run: n = {limit} did not fit"}
        else:
            record = run_worker(spec, timeout_s)
        if not record["fits"] and "not run" not in record["reason"]:
            key = (float(spec["avg_degree"]), spec["mode"])
            too_big[key] = min(too_big.get(key, spec["n_nodes"]), spec["n_nodes"])
        records.append(record)
        if report is not None:
            report(f"[{i}/{len(specs)}] {summary(record)}")
        if json_path is not None:
            write_json(json_path, meta or {}, records)
    return records


def summary(record: Record) -> str:
    """One line on a configuration's record."""
    head = f"n={record['n_nodes']} d={record['avg_degree']:g} {record['mode']}"
    if not record["fits"]:
        return f"{head}: does not fit ({record['reason']})"
    inference = ", ".join(
        f"{mode} {r['time_s']:.2f} s +{r['peak_mib']:.0f} MiB"
        for mode, r in record["inference"].items()
    )
    return (
        f"{head}: step peak +{record['step_peak_mib']:.1f} MiB, epoch {record['epoch_time_s']:.2f}"
        f" s, process peak {record['absolute_peak_mib']:.0f} MiB; inference {inference}"
    )


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ``log y`` against ``log x``: the exponent a of ``y ∝ x^a``;
    ``None`` with fewer than two distinct positive points."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len({x for x, _ in points}) < 2:
        return None
    return statistics.linear_regression(*zip(*points, strict=True)).slope


def size_sweep(records: list[Record], meta: Record, mode: str) -> list[Record]:
    """The records of a mode at the sweep's average degree, by ascending size."""
    rows = [
        r for r in records if r["mode"] == mode and float(r["avg_degree"]) == meta["avg_degree"]
    ]
    return sorted(rows, key=lambda r: r["n_nodes"])


def degree_sweep(records: list[Record], meta: Record, mode: str) -> list[Record]:
    """The records of a mode at the degree sweep's size, by ascending average degree."""
    rows = [r for r in records if r["mode"] == mode and r["n_nodes"] == meta["degree_nodes"]]
    return sorted(rows, key=lambda r: r["avg_degree"])


def exponents(records: list[Record], meta: Record, mode: str) -> Record:
    """Fitted exponents of a mode (`fit_exponent`) over the configurations that fitted: epoch
    time against n, epoch time against the average degree, per-step peak against n, with the
    number of points of each fit."""
    sizes = [r for r in size_sweep(records, meta, mode) if r["fits"]]
    degrees = [r for r in degree_sweep(records, meta, mode) if r["fits"]]
    return {
        "time_n": fit_exponent([r["n_nodes"] for r in sizes], [r["epoch_time_s"] for r in sizes]),
        "time_degree": fit_exponent(
            [r["avg_degree"] for r in degrees], [r["epoch_time_s"] for r in degrees]
        ),
        "memory_n": fit_exponent(
            [r["n_nodes"] for r in sizes], [r["step_peak_mib"] for r in sizes]
        ),
        "n_sizes": len(sizes),
        "n_degrees": len(degrees),
    }


def memory_bar(records: list[Record], meta: Record) -> tuple[str, str, str, str]:
    """The row (bar, measured, threshold, result) of "VQ per-step peak at the larger size <=
    1.2 x its value at the smaller size" (`MEMORY_BAR`); FAIL when the larger graph did not
    fit, NOT RUN when either size is missing or the smaller one did not fit."""
    small, large, factor = MEMORY_BAR
    bar = f"VQ per-step peak memory at n = {large:,} ≤ {factor:g} × its value at n = {small:,}"
    runs = {r["n_nodes"]: r for r in size_sweep(records, meta, "vq")}
    if small not in runs or large not in runs or not runs[small]["fits"]:
        return bar, "–", "–", "NOT RUN"
    threshold = factor * runs[small]["step_peak_mib"]
    if not runs[large]["fits"]:
        return bar, "does not fit", f"{threshold:.1f} MiB", "FAIL"
    value = runs[large]["step_peak_mib"]
    result = "PASS" if value <= threshold else "FAIL"
    return (
        bar,
        f"{value:.1f} MiB",
        f"{factor:g} × {runs[small]['step_peak_mib']:.1f} = {threshold:.1f} MiB",
        result,
    )


def inference_bar(records: list[Record], meta: Record) -> tuple[str, str, str, str]:
    """The row of "VQ inference ≥ 4 × faster than exact, with ≥ 99 % agreement, on the largest
    graph both ran" (`SPEEDUP_BAR`, `AGREEMENT_BAR`); NOT RUN when no graph has both."""
    both = [
        r
        for r in size_sweep(records, meta, "vq")
        if r.get("agreement") is not None and {"vq", "exact"} <= set(r.get("inference", {}))
    ]
    bar = (
        f"VQ inference ≥ {SPEEDUP_BAR:g} × faster than exact, agreement ≥ "
        f"{AGREEMENT_BAR:.0%}, on the largest graph both ran"
    )
    if not both:
        return bar, "–", "–", "NOT RUN"
    r = both[-1]
    speedup = r["inference"]["exact"]["time_s"] / r["inference"]["vq"]["time_s"]
    passed = speedup >= SPEEDUP_BAR and r["agreement"] >= AGREEMENT_BAR
    return (
        bar,
        f"n = {r['n_nodes']:,}: {speedup:.2f} ×, agreement {r['agreement']:.2%}",
        f"{SPEEDUP_BAR:g} ×, {AGREEMENT_BAR:.0%}",
        "PASS" if passed else "FAIL",
    )


def largest_fits(records: list[Record], meta: Record, mode: str) -> tuple[Record | None, Record]:
    """The largest configuration of a mode's size sweep that fitted (``None`` if none did) and
    the smallest that did not (``None`` if all did)."""
    rows = size_sweep(records, meta, mode)
    fitted = [r for r in rows if r["fits"]]
    failed = [r for r in rows if not r["fits"]]
    return (fitted[-1] if fitted else None), (failed[0] if failed else None)


# --------------------------------------------------------------------------------------------
# Report: the page's generated region and the plots
# --------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _not_fit(record: Record) -> str:
    stage = record.get("failed_stage")
    return f"does not fit{f' ({stage})' if stage else ''}: {record['reason']}"


def _opt(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _has_gpu(records: list[Record]) -> bool:
    return any(r.get("gpu_step_peak_mib") is not None for r in records)


def training_rows(
    rows: list[Record], first: Callable[[Record], str], gpu: bool = False
) -> list[list[str]]:
    """Training table rows: ``first(record)`` (n or degree), edges, mode and measurements, with
    the GPU step peak after the torch step peak when ``gpu``."""
    out = []
    for r in rows:
        head = [first(r), f"{r.get('n_edges', 0) // 2:,}" if "n_edges" in r else "–"]
        head.append(MODE_LABELS[r["mode"]])
        if not r["fits"] and "step_peak_mib" not in r:
            out.append([*head, _not_fit(r), *["–"] * (7 if gpu else 6)])
            continue
        out.append(
            [
                *head,
                f"{r['step_peak_mib']:.1f}",
                _opt(r.get("torch_step_peak_mib"), ".1f"),
                *([_opt(r.get("gpu_step_peak_mib"), ".1f")] if gpu else []),
                f"{r['step_rss_before_mib']:.0f}",
                f"{r['epoch_time_s']:.2f}" + ("" if r.get("epoch_times_clean", True) else "*"),
                f"{r['steps_per_epoch']}",
                f"{r['fit_time_s']:.1f}",
                _opt(r.get("absolute_peak_mib"), ".0f") if r["fits"] else _not_fit(r),
            ]
        )
    return out


def training_header(first: str, gpu: bool = False) -> list[str]:
    """Header of a training table whose first column is ``first``."""
    return [
        first,
        "edges",
        "mode",
        "per-step peak (MiB)",
        "torch step peak (MiB)",
        *(["GPU step peak (MiB)"] if gpu else []),
        "live RSS before a step (MiB)",
        "epoch time (s)",
        "steps / epoch",
        "fit time (s)",
        "process peak (MiB)",
    ]


INFERENCE_HEADER = [
    "n",
    "fitted",
    "inference",
    "time (s)",
    "peak (MiB)",
    "test acc",
    "agreement with exact",
    "speed-up over exact",
]


def inference_rows(records: list[Record], gpu: bool = False) -> list[list[str]]:
    """Inference table rows (`INFERENCE_HEADER`, plus the GPU peak when ``gpu``): per
    configuration and inference mode, time, peak, accuracy, and for VQ inference the agreement
    with exact inference and its speed-up over it."""
    out = []
    blank = ["–"] * (5 if gpu else 4)
    for r in records:
        label = [f"{r['n_nodes']:,}", MODE_LABELS[r["mode"]]]
        if "inference" not in r:
            out.append([*label, "–", _not_fit(r), *blank])
            continue
        for mode in INFERENCE_MODES[r["mode"]]:
            result = r["inference"].get(mode)
            if result is None:
                out.append([*label, f"`{mode}`", _not_fit(r), *blank])
                continue
            exact = r["inference"].get("exact")
            vq_row = mode == "vq" and exact is not None
            out.append(
                [
                    *label,
                    f"`{mode}`",
                    f"{result['time_s']:.2f}",
                    f"{result['peak_mib']:.0f}",
                    f"{result['test_acc']:.3f}",
                    f"{r['agreement']:.2%}" if vq_row else "–",
                    f"{exact['time_s'] / result['time_s']:.2f} ×" if vq_row else "–",
                    *([_opt(result.get("gpu_peak_mib"), ".0f")] if gpu else []),
                ]
            )
    return out


def _relative(path: Path, page: Path) -> str:
    return os.path.relpath(path, page.parent)


def render(
    meta: Record,
    records: list[Record],
    page: Path,
    plots: tuple[Path, Path],
    regenerated: str | None = None,
) -> str:
    """The page's generated region: provenance, bars, tables and the plots.

    Parameters
    ----------
    meta : dict
        Header of the sweep (`machine_info` plus its parameters).
    records : list of dict
        One per configuration (`run_config`, or a "does not fit" record).
    page : Path
        Where the page is written, to link ``plots`` relative to it.
    plots : tuple of Path
        The memory and time plots.
    regenerated : str, optional
        The command that rebuilt the region from saved records.
    """
    device = ", ".join(sorted({r["device"] for r in records if "device" in r})) or "–"
    threads = ", ".join(sorted({str(r["torch_threads"]) for r in records if "torch" in r}))
    torch_versions = ", ".join(sorted({r["torch"] for r in records if "torch" in r}))
    gpu = _has_gpu(records)
    fitted = [r for r in records if r.get("epochs")]
    epochs = sorted({(r["mode"], r["n_nodes"] <= 1e5, r["epochs"]) for r in fitted})
    lines = [
        f"Produced on {meta['date']} by",
        "",
        "```",
        meta["command"],
        "```",
        "",
    ]
    if regenerated:
        lines += [f"(regenerated from the saved records with `{regenerated}`)", ""]
    lines += [
        f"- Machine: {meta['cpu_count']} CPUs ({meta['cpu_model']}), {meta['memory_gib']} GiB "
        f"RAM; {meta['platform']}",
        f"- Software: Python {meta['python']}, torch {torch_versions} ({threads} threads), "
        f"skvqgnn {meta['skvqgnn']} at git {meta['git']}",
        f"- Device: {device}",
        f"- Graphs: `make_csbm(n, n_classes={meta['n_classes']}, avg_degree=d, "
        f"n_features={meta['n_features']}, random_state={meta['seed']})`: sizes n at "
        f"d = {meta['avg_degree']:g}, and degrees d at n = {meta['degree_nodes']:,}.",
        f"- Estimator: `VQGNNClassifier(backbone='{meta['backbone']}', "
        f"n_codewords={meta['n_codewords']}, sampler='{meta['sampler']}', "
        f"random_state={meta['seed']})`; *VQ mini-batch* with `batch_size={meta['batch_size']}`, "
        "*full graph* with `batch_size=None`.",
        f"- Limits per configuration: {meta['memory_limit_gib']} GiB of address space "
        f"(`RLIMIT_AS`) and {meta['timeout_s']:g} s of wall time.",
        "- Epochs per fit: "
        + "; ".join(
            f"{MODE_LABELS[mode]}, n {'≤' if small else '>'} 10⁵: {count}"
            for mode, small, count in epochs
        )
        + ".",
        "",
        "### Bars",
        "",
        *_table(
            ["bar", "measured", "threshold", "result"],
            [
                [bar, value, threshold, f"**{result}**" if result != "NOT RUN" else result]
                for bar, value, threshold, result in (
                    memory_bar(records, meta),
                    inference_bar(records, meta),
                )
            ],
        ),
        "",
        "### Largest graph each mode fits",
        "",
    ]
    largest = []
    for mode in MODES:
        rows = size_sweep(records, meta, mode)
        if not rows:
            continue
        fitted_row, failed_row = largest_fits(records, meta, mode)
        largest.append(
            [
                MODE_LABELS[mode],
                "none" if fitted_row is None else f"{fitted_row['n_nodes']:,}",
                "– (every size fitted)" if failed_row is None else f"{failed_row['n_nodes']:,}",
                "–" if failed_row is None else _not_fit(failed_row),
            ]
        )
    lines += [
        *_table(
            ["mode", "largest n that fits", "smallest n that does not", "why"],
            largest,
        ),
        "",
        f"Sizes tried: {', '.join(f'{n:,}' for n in meta['sizes'])} at d = {meta['avg_degree']:g}.",
        "",
        f"### Training against n (average degree {meta['avg_degree']:g})",
        "",
        *_table(
            training_header("n", gpu),
            training_rows(
                [r for mode in MODES for r in size_sweep(records, meta, mode)],
                lambda r: f"{r['n_nodes']:,}",
                gpu,
            ),
        ),
        "",
        f"### Training against the average degree (n = {meta['degree_nodes']:,})",
        "",
        *_table(
            training_header("d", gpu),
            training_rows(
                [r for mode in MODES for r in degree_sweep(records, meta, mode)],
                lambda r: f"{r['avg_degree']:g}",
                gpu,
            ),
        ),
        "",
        f"### Inference over every node (average degree {meta['avg_degree']:g})",
        "",
        *_table(
            [*INFERENCE_HEADER, *(["GPU peak (MiB)"] if gpu else [])],
            inference_rows([r for mode in MODES for r in size_sweep(records, meta, mode)], gpu),
        ),
        "",
        "### Cost growth",
        "",
    ]
    growth = []
    for mode in MODES:
        if not any(r["mode"] == mode for r in records):
            continue
        e = exponents(records, meta, mode)
        growth.append(
            [
                MODE_LABELS[mode],
                f"{_opt(e['time_n'], '.2f')} ({e['n_sizes']} sizes)",
                f"{_opt(e['time_degree'], '.2f')} ({e['n_degrees']} degrees)",
                f"{_opt(e['memory_n'], '.2f')} ({e['n_sizes']} sizes)",
            ]
        )
    lines += [
        *_table(
            ["mode", "epoch time ∝ n^a: a", "epoch time ∝ d^a: a", "per-step peak ∝ n^a: a"],
            growth,
        ),
        "",
        f"![Per-step and inference peak memory against n]({_relative(plots[0], page)})",
        "",
        f"![Epoch time against n and against the average degree]({_relative(plots[1], page)})",
    ]
    return "\n".join(lines)


def plot(meta: Record, records: list[Record], plots: tuple[Path, Path]) -> None:
    """Write the memory plot (per-step peak and inference peak against n, log-log) and the time
    plot (epoch time against n and against the average degree, log-log, with fitted slopes)."""
    if not any(r["fits"] for r in records):
        print("no configuration fitted: no plots written", file=sys.stderr)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def readable(axis: Any) -> None:  # log axis ticked at 1, 2, 5 x 10^i, written plainly
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())

    colours = {"vq": "tab:blue", "full": "tab:red"}
    for path in plots:
        path.parent.mkdir(parents=True, exist_ok=True)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, mode in enumerate(MODES):
        rows = size_sweep(records, meta, mode)
        ok = [r for r in rows if r["fits"]]
        if not rows:
            continue
        label = MODE_LABELS[mode]
        left.plot(
            [r["n_nodes"] for r in ok],
            [r["step_peak_mib"] for r in ok],
            "o-",
            color=colours[mode],
            label=f"{label}: per-step peak",
        )
        left.plot(
            [r["n_nodes"] for r in ok],
            [r["absolute_peak_mib"] for r in ok],
            "s:",
            color=colours[mode],
            alpha=0.5,
            label=f"{label}: process peak",
        )
        _, failed = largest_fits(records, meta, mode)
        if failed is not None:
            left.axvline(failed["n_nodes"], color=colours[mode], ls="--", lw=1)
            left.annotate(
                f"{label}:\ndoes not fit",
                (failed["n_nodes"], 0.45 - 0.15 * i),  # one height per mode: labels apart
                xycoords=("data", "axes fraction"),
                color=colours[mode],
                ha="right",
                va="top",
                fontsize=8,
            )
        for inference, style in (("vq", "^-"), ("exact", "v--")):
            done = [r for r in ok if inference in r.get("inference", {})]
            if done and inference in INFERENCE_MODES[mode]:
                right.plot(
                    [r["n_nodes"] for r in done],
                    [r["inference"][inference]["peak_mib"] for r in done],
                    style,
                    color=colours[mode],
                    label=f"{label}: inference='{inference}'",
                )
    left.set(xscale="log", yscale="log", xlabel="nodes n", ylabel="MiB")
    left.set_title(f"Training step (b = {meta['batch_size']}, k = {meta['n_codewords']})")
    right.set(xscale="log", yscale="log", xlabel="nodes n", ylabel="peak above live RSS (MiB)")
    right.set_title("Inference over every node")
    for ax in (left, right):
        readable(ax.yaxis)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{meta['backbone']}, average degree {meta['avg_degree']:g}, memory")
    fig.tight_layout()
    fig.savefig(plots[0], dpi=110)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in MODES:
        e = exponents(records, meta, mode)
        for ax, rows, x_key, slope in (
            (left, size_sweep(records, meta, mode), "n_nodes", e["time_n"]),
            (right, degree_sweep(records, meta, mode), "avg_degree", e["time_degree"]),
        ):
            ok = [r for r in rows if r["fits"]]
            if not ok:
                continue
            fitted = "" if slope is None else f" (slope {slope:.2f})"
            ax.plot(
                [r[x_key] for r in ok],
                [r["epoch_time_s"] for r in ok],
                "o-",
                color=colours[mode],
                label=MODE_LABELS[mode] + fitted,
            )
    left.set(xscale="log", yscale="log", xlabel="nodes n", ylabel="epoch time (s)")
    left.set_title(f"against n (d = {meta['avg_degree']:g})")
    right.set(xscale="log", yscale="log", xlabel="average degree d", ylabel="epoch time (s)")
    right.set_title(f"against d (n = {meta['degree_nodes']:,})")
    if meta["degrees"]:
        right.set_xticks(meta["degrees"], [f"{d:g}" for d in meta["degrees"]])
        right.xaxis.set_minor_formatter(NullFormatter())
    for ax in (left, right):
        readable(ax.yaxis)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{meta['backbone']}, epoch time")
    fig.tight_layout()
    fig.savefig(plots[1], dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of the scale benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES))
    parser.add_argument("--avg-degree", type=float, default=10.0, help="of the size sweep")
    parser.add_argument(
        "--degrees", nargs="*", type=float, default=list(DEFAULT_DEGREES), help="none: no sweep"
    )
    parser.add_argument("--degree-nodes", type=int, default=100_000, help="n of the degree sweep")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--backbone", choices=("gcn", "sage"), default="gcn")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--codewords", type=int, default=256)
    parser.add_argument("--sampler", choices=("cluster", "random"), default="cluster")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timed-epochs",
        type=int,
        default=None,
        help="epochs without instrumented steps (default: 3 for n <= 1e5, else 1)",
    )
    parser.add_argument("--memory-limit-gib", type=float, default=18.0, help="RLIMIT_AS")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per config")
    parser.add_argument("--out", type=Path, default=page_for(__file__), help=OUT_HELP)
    parser.add_argument("--plots-dir", type=Path, default=DEFAULT_PLOTS)
    parser.add_argument("--json", type=Path, default=None, help="raw per-configuration records")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="rebuild the generated region and the plots from saved records (later files win "
        "on repeats)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sweep_meta(args: argparse.Namespace) -> Record:
    """Machine description (`machine_info`) and the sweep's parameters."""
    described = argparse.Namespace(
        datasets=["csbm"], backbones=[args.backbone], seeds=[args.seed], max_epochs=None
    )
    return {
        **machine_info(described),
        "sizes": sorted(args.sizes),
        "avg_degree": float(args.avg_degree),
        "degrees": sorted(args.degrees),
        "degree_nodes": args.degree_nodes,
        "modes": args.modes,
        "backbone": args.backbone,
        "n_features": args.features,
        "n_classes": args.classes,
        "batch_size": args.batch_size,
        "n_codewords": args.codewords,
        "sampler": args.sampler,
        "seed": args.seed,
        "memory_limit_gib": args.memory_limit_gib,
        "timeout_s": args.timeout,
    }


def merge_saved(saved: list[Record]) -> tuple[Record, list[Record]]:
    """Header of the first file (its ``sizes`` the union of all files') and every
    configuration, a later file's record replacing an earlier one of the same configuration."""
    meta = dict(saved[0]["meta"])
    meta["sizes"] = sorted({n for s in saved for n in s["meta"]["sizes"]})
    records: dict[tuple, Record] = {}
    for s in saved:
        for record in s["runs"]:
            records[config_key(record)] = record
    return meta, list(records.values())


def main(argv: list[str] | None = None) -> None:
    """Run the sweep (or one worker, or rebuild from saved records), then write the generated
    region of the page and the plots."""
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_config(json.loads(args.worker))))
        return
    plots = (args.plots_dir / MEMORY_PLOT, args.plots_dir / TIME_PLOT)
    if args.from_json is not None:
        meta, records = merge_saved([json.loads(path.read_text()) for path in args.from_json])
        regenerated = shlex.join(["python", *(sys.argv if argv is None else ["scale.py", *argv])])
    else:
        meta = sweep_meta(args)
        records = run_sweep(
            make_specs(args),
            args.timeout,
            args.json,
            meta,
            lambda line: print(line, file=sys.stderr, flush=True),
        )
        regenerated = None
    write_generated(args.out, render(meta, records, args.out, plots, regenerated))
    plot(meta, records, plots)
    print(f"wrote {args.out}, {plots[0]} and {plots[1]}", file=sys.stderr)


if __name__ == "__main__":
    main()
