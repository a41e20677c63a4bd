"""Training on several processes: how a fit's steps are shared and its state kept identical.

A fit runs under a *strategy*, chosen by ``fit(..., distributed=...)``:

* `Local` (one process, the default outside ``torchrun``): a step is one batch.
* `DataParallel` (the default when ``torch.distributed`` is initialised with more than one
  process, or given a process group): every process walks the same sequence of batches and
  takes its share, batch ``i`` to rank ``i mod N``; a step is one batch per rank. The ranks
  average their parameter gradients (one all-reduce per optimiser step) and merge the
  statistics of their codebook updates (one all-reduce per step), and each rank's new feature
  and gradient codes of its batch nodes go to every rank (one all-gather of small integers per
  step), so that every rank holds the same network, codebooks and assignment tables.
* `Simulated` (one process): what ``N`` ranks do together, step by step, in one process: the
  reference the data-parallel fit is tested against, and a way to reproduce a distributed
  run on one machine.

Why not ``DistributedDataParallel``: DDP broadcasts the module's buffers from rank 0 before
every forward pass, and the codebooks are buffers: the other ranks' codebook updates would be
overwritten silently. The explicit all-reduce of the gradients (one flat buffer per optimiser
step) costs the same as DDP's buckets at these model sizes and keeps the step's structure
(``accumulate_batches``) as it is.

The merge rule of one step: the ``G`` batches of the step (one per rank) are searched against
the same codebooks and tables; the parameter gradient is the mean of theirs; each codebook
takes one EMA step with decay ``γ^G`` towards the mean of the batches' statistics (member
counts, input and gradient sums, moments, trust), which for ``G = 1`` is the single-process
step; the batches' codes enter the tables in rank order; unused codewords are re-seeded from
rows of the first batch of the step that has rows, drawn by a generator every rank shares.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["DataParallel", "Local", "RankFailure", "Simulated", "Strategy", "resolve_strategy"]


class RankFailure(RuntimeError):
    """A collective operation of a data-parallel fit failed: another rank stopped (an error,
    a kill, a lost machine) or did not answer within the process group's timeout."""


class Strategy:
    """How a fit's batches are shared among processes and their results merged.

    Attributes
    ----------
    rank : int
        This process's index among ``world_size``.
    world_size : int
        Number of processes that train together.
    """

    rank = 0
    world_size = 1

    def steps(self, batches: Iterable[np.ndarray]) -> Iterator[tuple[list[np.ndarray], int]]:
        """Per step: this process's batches and the number of batches the step has over all
        processes (the same on every rank).

        Parameters
        ----------
        batches : iterable of ndarray
            The epoch's batches, in the sampler's order (the same on every process).

        Yields
        ------
        batches : list of ndarray
            This process's batches of the step.
        in_step : int
            The number of batches of the step over all processes.
        """
        for batch in batches:
            yield [batch], 1

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """``tensor`` summed (or its maximum) over the processes, in place.

        Parameters
        ----------
        tensor : Tensor
        op : {"sum", "max"}, default="sum"

        Returns
        -------
        Tensor
            ``tensor``.
        """
        return tensor

    def all_gather(self, array: np.ndarray, lengths: list[int] | None = None) -> list[np.ndarray]:
        """Every process's ``array``, in rank order.

        Parameters
        ----------
        array : ndarray of int64, 1-D
            This process's part; the lengths may differ between processes.
        lengths : list of int, default=None
            Every process's length, when known (else they are exchanged first).

        Returns
        -------
        list of ndarray
        """
        return [array]

    def broadcast(self, tensor: Tensor, src: int) -> Tensor:
        """``tensor`` as process ``src`` holds it, in place.

        Parameters
        ----------
        tensor : Tensor
            The same shape and type on every process.
        src : int
            The rank whose values every process receives.

        Returns
        -------
        Tensor
            ``tensor``.
        """
        return tensor

    @contextlib.contextmanager
    def deferred_interrupt(self) -> Iterator[Any]:
        """While a fit runs: Ctrl-C raises ``KeyboardInterrupt`` at once (one process)."""
        yield None


class Local(Strategy):
    """One process; a step is one batch."""

    def __repr__(self) -> str:
        return "Local()"


class Simulated(Strategy):
    """What ``world_size`` data-parallel ranks do together, run in one process.

    Each step takes the next ``world_size`` batches of the epoch, as the ranks would (batch
    ``i`` of the step is rank ``i``'s), searches them against the same codebooks and tables,
    averages their gradients and merges their codebook statistics by the rule of
    `DataParallel`. A `DataParallel` fit on ``world_size`` ranks and a `Simulated` fit with
    the same ``world_size`` and seed train the same model (to float tolerance), which the
    tests check.

    Parameters
    ----------
    world_size : int
        Number of ranks simulated.
    """

    def __init__(self, world_size: int):
        if not isinstance(world_size, int | np.integer) or world_size < 1:
            raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
        self.simulated = int(world_size)

    def steps(self, batches: Iterable[np.ndarray]) -> Iterator[tuple[list[np.ndarray], int]]:
        """Per step: the next ``world_size`` batches (fewer at the end of an epoch).

        Parameters
        ----------
        batches : iterable of ndarray
            The epoch's batches, in the sampler's order (the same on every process).

        Yields
        ------
        batches : list of ndarray
            This process's batches of the step.
        in_step : int
            The number of batches of the step over all processes.
        """
        step: list[np.ndarray] = []
        for batch in batches:
            step.append(batch)
            if len(step) == self.simulated:
                yield step, len(step)
                step = []
        if step:
            yield step, len(step)

    def __repr__(self) -> str:
        return f"Simulated({self.simulated})"


class DataParallel(Strategy):
    """Data-parallel training over a ``torch.distributed`` process group.

    Every rank runs the same fit on the same graph (the same arguments); batch ``i`` of each
    epoch is rank ``i mod N``'s. Gloo runs on CPU tensors, NCCL on the rank's current CUDA
    device.

    Parameters
    ----------
    group : torch.distributed.ProcessGroup, default=None
        The processes that train together (``None``: the default group, which
        ``torch.distributed.init_process_group`` or ``torchrun`` set up).

    Attributes
    ----------
    traffic : dict of str to int
        Bytes this rank has handed to each kind of collective (``"all_reduce"``,
        ``"all_gather"``, ``"broadcast"``) since it was made: what its fit exchanged.
    """

    def __init__(self, group: Any = None):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "DataParallel needs an initialised torch.distributed process group: launch with "
                "torchrun, or call torch.distributed.init_process_group first"
            )
        self.dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        backend = str(dist.get_backend(group))
        self.comm_device = (
            torch.device("cuda", torch.cuda.current_device())
            if backend == "nccl"
            else torch.device("cpu")
        )
        self.interrupted = False
        self.traffic = {"all_reduce": 0, "all_gather": 0, "broadcast": 0}

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, world_size={self.world_size})"

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as error:  # gloo and NCCL errors (DistBackendError) are these
            raise RankFailure(
                f"rank {self.rank} of {self.world_size}: the {what} of a data-parallel fit "
                "failed, so another rank stopped (an error, a kill or a lost connection) or did "
                "not answer within the process group's timeout (init_process_group(timeout=...))"
                f": {error}"
            ) from error

    def steps(self, batches: Iterable[np.ndarray]) -> Iterator[tuple[list[np.ndarray], int]]:
        """Per step: batch ``step·N + rank`` of the epoch (none in the last step when the
        batches run out first).

        Parameters
        ----------
        batches : iterable of ndarray
            The epoch's batches, in the sampler's order (the same on every process).

        Yields
        ------
        batches : list of ndarray
            This process's batches of the step.
        in_step : int
            The number of batches of the step over all processes.
        """
        batches = list(batches)
        N = self.world_size
        for start in range(0, len(batches), N):
            step = batches[start : start + N]
            yield ([step[self.rank]] if self.rank < len(step) else []), len(step)

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:  # noqa: D102
        reduce_op = {"sum": self.dist.ReduceOp.SUM, "max": self.dist.ReduceOp.MAX}[op]
        moved = tensor.to(self.comm_device)
        self.traffic["all_reduce"] += tensor.numel() * tensor.element_size()
        with self._collective(f"all-reduce ({op}) of {tensor.numel()} values"):
            self.dist.all_reduce(moved, op=reduce_op, group=self.group)
        if moved is not tensor:
            tensor.copy_(moved)
        return tensor

    def all_gather(  # noqa: D102
        self, array: np.ndarray, lengths: list[int] | None = None
    ) -> list[np.ndarray]:
        N, device = self.world_size, self.comm_device
        local = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(device)
        if lengths is None:
            lengths = torch.zeros(N, dtype=torch.int64, device=device)
            lengths[self.rank] = len(local)
            self.all_reduce(lengths)
        else:
            lengths = torch.tensor(lengths, dtype=torch.int64)
        longest = int(lengths.max())
        padded = torch.zeros(longest, dtype=torch.int64, device=device)
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(N)]
        self.traffic["all_gather"] += padded.numel() * padded.element_size()
        with self._collective(f"all-gather of {longest} codes"):
            self.dist.all_gather(parts, padded, group=self.group)
        return [p[: int(n)].cpu().numpy() for p, n in zip(parts, lengths, strict=True)]

    def broadcast(self, tensor: Tensor, src: int) -> Tensor:  # noqa: D102
        moved = tensor.to(self.comm_device)
        self.traffic["broadcast"] += tensor.numel() * tensor.element_size()
        with self._collective(f"broadcast of {tensor.numel()} values from rank {src}"):
            source = self.dist.get_global_rank(self.group, src) if self.group else src
            self.dist.broadcast(moved, src=source, group=self.group)
        if moved is not tensor:
            tensor.copy_(moved)
        return tensor

    @contextlib.contextmanager
    def deferred_interrupt(self) -> Iterator[Any]:
        """While a fit runs: Ctrl-C (SIGINT) only marks this rank as interrupted; the ranks
        agree at the end of the step, and all stop there together."""
        self.interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield None
            return

        def mark(signum: int, frame: Any) -> None:
            self.interrupted = True

        previous = signal.signal(signal.SIGINT, mark)
        try:
            yield None
        finally:
            signal.signal(signal.SIGINT, previous)


def _launched_with_several_ranks() -> bool:
    """Whether a launcher (``torchrun``) set the variables of a process group of several ranks."""
    import os

    keys = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return all(k in os.environ for k in keys) and int(os.environ["WORLD_SIZE"]) > 1


def resolve_strategy(distributed: Any, device: torch.device | None = None) -> Strategy:
    """The strategy of a fit from its ``distributed`` argument.

    Parameters
    ----------
    distributed : None, False, Strategy or torch.distributed.ProcessGroup
        ``None``: `DataParallel` over the default group when ``torch.distributed`` is
        initialised with more than one process, or when ``torchrun`` launched this process
        (then the default group is initialised here: NCCL for a CUDA ``device``, else gloo),
        else `Local`; ``False``: `Local` even then; a process group: `DataParallel` over it; a
        `Strategy`: itself.
    device : torch.device, default=None
        The fit's device.

    Returns
    -------
    Strategy
    """
    if isinstance(distributed, Strategy):
        return distributed
    import torch.distributed as dist

    if distributed is None:
        if not dist.is_available():
            return Local()
        if not dist.is_initialized() and _launched_with_several_ranks():
            # torchrun (or a launcher setting the same variables) started this process: join
            # the others, NCCL where this rank has a CUDA device, else gloo
            backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
            dist.init_process_group(backend)
        if dist.is_initialized() and dist.get_world_size() > 1:
            return DataParallel()
        return Local()
    if distributed is False:
        return Local()
    if dist.is_available() and isinstance(distributed, dist.ProcessGroup):
        return DataParallel(distributed)
    raise TypeError(
        "distributed must be None, False, a torch.distributed.ProcessGroup or a "
        f"skvqgnn.distributed strategy (Local, Simulated, DataParallel), got "
        f"{type(distributed).__name__}"
    )
