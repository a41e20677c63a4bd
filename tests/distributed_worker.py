"""One rank of the data-parallel tests (``tests/test_distributed.py``), run as a script.

``python tests/distributed_worker.py SCENARIO OUT_DIR`` with the variables of a process group
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), as ``torchrun`` or the tests set
them. It fits on a small graph and writes what it saw to ``OUT_DIR/rank{RANK}.pkl``.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from skvqgnn import Callback, VQGNNClassifier, VQGNNLinkPredictor
from skvqgnn.datasets import make_csbm

# the regimes the step-by-step equivalence is checked in: depth 1-2, both samplers, fixed and
# learnable convolutions, one optimiser step per step or per epoch, early stopping
CONFIGS = {
    "gcn-2-random": dict(
        backbone="gcn",
        hidden_layer_sizes=(16, 16),
        sampler="random",
        accumulate_batches=1,
        early_stopping=True,
        n_iter_no_change=5,
        max_epochs=3,
    ),
    "sage-1-cluster": dict(
        backbone="sage", hidden_layer_sizes=(16,), sampler="cluster", max_epochs=2
    ),
    # 5 batches: the last step of an epoch has a batch on rank 0 only
    "gin-1-odd": dict(
        backbone="gin",
        hidden_layer_sizes=(16,),
        sampler="random",
        batch_size=120,
        accumulate_batches=2,
        max_epochs=2,
    ),
    "gat-1-random": dict(
        backbone="gat",
        heads=2,
        hidden_layer_sizes=(8,),
        sampler="random",
        max_epochs=2,
        accumulate_batches=1,
    ),
}
COMMON = dict(batch_size=100, n_codewords=16, dropout=0.0, learning_rate=0.01, random_state=0)
LINK = dict(batch_size=100, n_codewords=16, hidden_layer_sizes=(16,), max_epochs=2, random_state=0)
N_RECORDED = 6  # steps whose whole state is recorded
# partitioned fits (one folder per config, written by the test): depth 1-2, random and
# cluster batches inside the parts, a symmetric convolution and a directed graph's (whose
# transposed rows come from their own files)
SHARDED = {
    "gcn-2": dict(backbone="gcn", hidden_layer_sizes=(16, 16), early_stopping=True, max_epochs=3),
    "sage-1-directed": dict(
        backbone="sage", hidden_layer_sizes=(16,), sampler="cluster", max_epochs=2
    ),
}
SHARDED_COMMON = dict(COMMON, sampler="random", accumulate_batches=1, n_iter_no_change=5)


def data():
    """600 nodes, 3 classes (as the tests' ``csbm`` fixture), labels of the training split."""
    A, X, y, split = make_csbm(
        n_nodes=600,
        n_classes=3,
        avg_degree=6,
        homophily=0.85,
        n_features=16,
        feature_noise=1.5,
        random_state=0,
    )
    return A, X, np.where(split.train_mask | split.val_mask, y, -1)


def state_vector(fit) -> np.ndarray:
    """Parameters, codebook buffers and both codes of every node, as one float64 vector."""
    parts = [t.detach().double().reshape(-1) for t in fit.model.state_dict().values()]
    for table in fit.tables:
        parts += [torch.from_numpy(table.codes.astype(np.float64)).reshape(-1)]
        parts += [torch.from_numpy(table.grad_codes.astype(np.float64)).reshape(-1)]
    return torch.cat(parts).numpy()


class Recorder(Callback):
    """The state after each of the first ``N_RECORDED`` calls of ``on_step_end``; optionally
    an action at a given call."""

    def __init__(self, at: int | None = None, action=None):
        self.states, self.n, self.at, self.action = [], 0, at, action
        self.epochs = []

    def on_epoch_end(self, fit, record):
        self.epochs.append(state_vector(fit))

    def on_step_end(self, fit, batch_nodes, n_terms):
        self.n += 1
        if len(self.states) < N_RECORDED:
            self.states.append(state_vector(fit))
        if self.n == self.at and self.action is not None:
            self.action()


def summary(est) -> dict:
    """What the tests compare between ranks and with the one-process reference."""
    return {
        "state": {k: v.numpy().copy() for k, v in est.model_.state_dict().items()},
        "history": est.history_,
        "n_iter": est.n_iter_,
        "tables": [t.codes.copy() for t in est.tables_],
    }


def main(scenario: str, out: Path) -> None:
    if os.environ.get("SKVQGNN_TEST_INIT", "1") == "1":
        torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=20))
    # else torchrun set the variables and fit initialises the group
    rank = int(os.environ["RANK"])
    A, X, y = data()
    result: dict = {"rank": rank}
    if scenario == "steps":
        for name, config in CONFIGS.items():
            recorder = Recorder()
            clf = VQGNNClassifier(**{**COMMON, **config}).fit(A, X, y, callbacks=[recorder])
            result[name] = {
                **summary(clf),
                "steps": recorder.states,
                "epochs": recorder.epochs,
                "predict": clf.predict(A, X),
            }
    elif scenario == "shards":  # each rank loads its own part of a partition written before
        import skvqgnn.shards
        from skvqgnn.layers import make_backbone
        from skvqgnn.shards import load_shard, write_predictions

        skvqgnn.shards.GATHER_BYTES = 40  # the codes exchanged in many rounds of a few rows

        for name, config in SHARDED.items():
            shard = load_shard(out / name)
            recorder = Recorder()
            clf = VQGNNClassifier(**{**SHARDED_COMMON, **config})
            clf.fit(shard, callbacks=[recorder])
            write_predictions(shard, clf.predict(shard))
            convolutions = shard.graph_data(make_backbone(config["backbone"])).convolutions
            result[name] = {
                **summary(clf),
                "steps": recorder.states,
                "epochs": recorder.epochs,
                "held": {
                    "ranks": shard.ranks,
                    "features": shard.X.shape,
                    "matrices": [
                        [m.shape for m in (c.matrix, c.transposed(), c.inputs)]
                        for c in convolutions
                        if hasattr(c, "matrix") and c.matrix is not None
                    ],
                },
            }
    elif scenario == "cuda":  # gloo ranks training on the GPU (one GPU can hold both)
        params = {**COMMON, **CONFIGS["gcn-2-random"], "device": "cuda"}
        clf = VQGNNClassifier(**params).fit(A, X, y)
        result.update(summary(clf), predict=clf.predict(A, X))
    elif scenario == "verbose":  # a progress bar on rank 0 only
        clf = VQGNNClassifier(**COMMON, **CONFIGS["sage-1-cluster"], verbose=1).fit(A, X, y)
        result.update(summary(clf))
    elif scenario == "plain":  # the user's script under torchrun: fit(A, X, y) unchanged
        clf = VQGNNClassifier(**COMMON, **CONFIGS["gcn-2-random"]).fit(A, X, y)
        result.update(summary(clf), predict=clf.predict(A, X))
        result["world_size"] = torch.distributed.get_world_size()
    elif scenario == "kill":  # rank 1 dies in its 3rd step; rank 0 must fail, not hang
        me = os.getpid()
        action = (lambda: os.kill(me, signal.SIGKILL)) if rank == 1 else None
        clf = VQGNNClassifier(**COMMON, **CONFIGS["gcn-2-random"], verbose=0)
        clf.set_params(max_epochs=50, early_stopping=False)
        try:
            clf.fit(A, X, y, callbacks=[Recorder(at=3, action=action)])
            result["error"] = None
        except Exception as error:  # noqa: BLE001 - the test checks its type and message
            result["error"] = (type(error).__name__, str(error))
    elif scenario == "interrupt":  # Ctrl-C reaches rank 0 only, in the middle of epoch 3
        me = os.getpid()

        def ctrl_c_soon():  # from another thread: it lands wherever rank 0's code then is
            threading.Timer(0.002, os.kill, (me, signal.SIGINT)).start()

        action = ctrl_c_soon if rank == 0 else None
        clf = VQGNNClassifier(**COMMON, **CONFIGS["gcn-2-random"])
        clf.set_params(max_epochs=20, early_stopping=False)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            clf.fit(A, X, y, callbacks=[Recorder(at=7, action=action)])
        result.update(summary(clf), warnings=[str(w.message) for w in seen])
    elif scenario == "mismatch":  # rank 1 was given other labels
        labels = y if rank == 0 else np.where(np.arange(len(y)) % 2 == 0, y, -1)
        try:
            VQGNNClassifier(**COMMON, **CONFIGS["sage-1-cluster"]).fit(A, X, labels)
            result["error"] = None
        except ValueError as error:
            result["error"] = str(error)
    elif scenario == "seedless-warm":  # random_state=None, early stopping, then a warm start
        params = {**COMMON, **CONFIGS["gcn-2-random"], "random_state": None}
        clf = VQGNNClassifier(**params).fit(A, X, y)
        first = summary(clf)
        clf.set_params(warm_start=True, max_epochs=2, early_stopping=False)
        clf.fit(A, X, y)
        result.update(first=first, second=summary(clf), predict=clf.predict(A, X))
    elif scenario == "link":
        link = VQGNNLinkPredictor(**LINK)
        link.fit(A, X)
        pairs = np.stack([np.arange(50), np.arange(50, 100)], 1)
        result.update(summary(link), proba=link.predict_proba(A, X, pairs))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    with open(out / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(result, f)
    if scenario in ("kill", "mismatch"):
        # the group has lost a rank, or its ranks left a collective at different points (the
        # mismatch is found while they compare their data): torch's gloo teardown then
        # sometimes aborts (std::terminate in a thread's destructor, about one run in 20
        # under load), after the error this scenario checks was raised and written; leave
        # without tearing the group down
        sys.stdout.flush()
        os._exit(0)
    # every rank reaches the teardown before any closes its connections: a rank that tears
    # down while the other still reads its last collective's messages can make gloo abort
    # (std::terminate in a destructor), after the results were written
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
