"""Data-parallel training on 2 gloo processes on 127.0.0.1 (``tests/distributed_worker.py``).

The master test: step by step, a 2-rank fit holds the state (parameters, codebooks, both codes of
every node) that the one-process reference ``Simulated(2)`` holds after processing the same two
batches against the same state with the same merge rule; both ranks end with the same model;
and a 2-rank fit is not a 1-rank fit. Then the failure behaviour: a killed rank makes the other
fail within seconds, Ctrl-C on one rank stops both, different data on the ranks is an error.
"""

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from skvqgnn import VQGNNClassifier, VQGNNLinkPredictor
from skvqgnn.distributed import Local, RankFailure, Simulated, resolve_strategy

from . import distributed_worker as worker

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)

WORKER = Path(worker.__file__)
TIMEOUT = 150  # seconds for a whole launch; the workers' process group times out after 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario, out, world_size=2):
    """Run ``world_size`` ranks of the worker; their return codes, stderr and results."""
    port = _free_port()
    procs = []
    for rank in range(world_size):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world_size),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), scenario, str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + TIMEOUT
    codes, errs = [], []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"the {scenario!r} ranks did not finish within {TIMEOUT} s")
        codes.append(proc.returncode)
        errs.append(err)
    return codes, errs, _results(out, world_size)


def _results(out, world_size):
    results = {}
    for rank in range(world_size):
        path = Path(out) / f"rank{rank}.pkl"
        if path.exists():
            with open(path, "rb") as f:
                results[rank] = pickle.load(f)
    return results


def _same_state(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("steps")
    codes, errs, results = launch("steps", out)
    assert codes == [0, 0], errs
    return results


@pytest.mark.parametrize("name", list(worker.CONFIGS))
def test_every_step_equals_the_one_process_reference(two_ranks, name):
    """After each of the first steps (and each epoch), each rank's whole state equals the
    reference's after processing the same two batches (gradients averaged, codebook statistics
    merged, both batches' codes written) against the same state."""
    A, X, y = worker.data()
    params = {**worker.COMMON, **worker.CONFIGS[name]}
    recorder = worker.Recorder()
    reference = VQGNNClassifier(**params).fit(
        A, X, y, callbacks=[recorder], distributed=Simulated(2)
    )
    for rank in (0, 1):
        got = two_ranks[rank][name]
        for epoch, expected in enumerate(recorder.epochs):
            np.testing.assert_allclose(
                got["epochs"][epoch], expected, rtol=1e-6, atol=1e-6, err_msg=f"epoch {epoch}"
            )
    if 600 % params["batch_size"] == 0 and (600 // params["batch_size"]) % 2 == 0:
        # every step has two batches: the reference calls on_step_end twice per step, both
        # after the step's update
        assert len(recorder.states) == worker.N_RECORDED
        after_step = recorder.states[1::2]
        assert np.array_equal(recorder.states[0], recorder.states[1])
        for rank in (0, 1):
            states = two_ranks[rank][name]["steps"]
            assert len(states) == worker.N_RECORDED
            for step, expected in enumerate(after_step):
                np.testing.assert_allclose(
                    states[step], expected, rtol=1e-6, atol=1e-6, err_msg=f"rank {rank} {step}"
                )
            assert not np.array_equal(states[0], states[1])  # the steps changed the state
    # the whole fit: same model, codes, history and predictions
    ours = worker.summary(reference)
    for rank in (0, 1):
        got = two_ranks[rank][name]
        _same_state(got["state"], ours["state"], atol=1e-5)
        assert [h["loss"] for h in got["history"]] == pytest.approx(
            [h["loss"] for h in ours["history"]], rel=1e-6
        )
        assert got["n_iter"] == ours["n_iter"]
        for a, b in zip(got["tables"], ours["tables"], strict=True):
            assert np.array_equal(a, b)
        assert np.array_equal(got["predict"], reference.predict(A, X))


@pytest.mark.parametrize("name", list(worker.CONFIGS))
def test_both_ranks_end_with_one_model_unlike_a_one_rank_fit(two_ranks, name):
    zero, one = two_ranks[0][name], two_ranks[1][name]
    _same_state(zero["state"], one["state"])
    assert zero["history"] == [
        {**h, "time": zero["history"][i]["time"]} for i, h in enumerate(one["history"])
    ]
    assert np.array_equal(zero["predict"], one["predict"])
    A, X, y = worker.data()
    single = VQGNNClassifier(**{**worker.COMMON, **worker.CONFIGS[name]}).fit(A, X, y)
    differs = [
        k
        for k, v in single.model_.state_dict().items()
        if v.numel() and not np.allclose(v.numpy(), zero["state"][k], atol=1e-4)
    ]
    assert differs, "the 2-rank fit trained the 1-rank model: the ranks did not share batches"


def test_early_stopping_history_agrees_across_ranks(two_ranks):
    zero, one = two_ranks[0]["gcn-2-random"], two_ranks[1]["gcn-2-random"]
    scores = [h["val_score"] for h in zero["history"]]
    assert scores == [h["val_score"] for h in one["history"]] and len(scores) == 3
    assert [h["time"] for h in zero["history"]] == [h["time"] for h in one["history"]]


def test_a_killed_rank_makes_the_other_fail_within_seconds(tmp_path):
    start = time.monotonic()
    codes, errs, results = launch("kill", tmp_path)
    took = time.monotonic() - start
    assert codes[1] == -signal.SIGKILL
    assert codes[0] == 0, errs[0]  # rank 0 caught the error and wrote it
    kind, message = results[0]["error"]
    assert kind == RankFailure.__name__
    assert "rank 0 of 2" in message and "another rank stopped" in message
    assert took < 60, f"rank 0 needed {took:.0f} s to notice"


def test_ctrl_c_on_one_rank_stops_both_at_the_same_step(tmp_path):
    codes, errs, results = launch("interrupt", tmp_path)
    assert codes == [0, 0], errs
    zero, one = results[0], results[1]
    # 3 steps per epoch; the SIGINT came in the first step of epoch 3: both keep 2 epochs
    assert zero["n_iter"] == one["n_iter"] == 2
    for r in (zero, one):
        assert any("fit interrupted after 2 epochs" in w for w in r["warnings"]), r["warnings"]
    _same_state(zero["state"], one["state"])


def test_ranks_given_different_data_refuse_to_train(tmp_path):
    codes, errs, results = launch("mismatch", tmp_path)
    assert codes == [0, 0], errs
    for rank in (0, 1):
        message = results[rank]["error"]
        assert message is not None and "the training targets (y)" in message
        assert "same arguments" in message


def test_without_random_state_and_under_warm_start_the_ranks_agree(tmp_path):
    codes, errs, results = launch("seedless-warm", tmp_path)
    assert codes == [0, 0], errs
    zero, one = results[0], results[1]
    _same_state(zero["first"]["state"], one["first"]["state"])
    _same_state(zero["second"]["state"], one["second"]["state"])
    assert zero["second"]["n_iter"] == len(zero["first"]["history"]) + 2
    assert np.array_equal(zero["predict"], one["predict"])


def test_only_rank_0_shows_progress(tmp_path):
    codes, errs, results = launch("verbose", tmp_path)
    assert codes == [0, 0], errs
    assert "set-up: k-means" in errs[0] and "2/2" in errs[0]  # set-up stages and the bar
    assert "VQGNNClassifier" not in errs[1], errs[1]
    _same_state(results[0]["state"], results[1]["state"])


def test_link_predictor_ranks_agree(tmp_path):
    codes, errs, results = launch("link", tmp_path)
    assert codes == [0, 0], errs
    _same_state(results[0]["state"], results[1]["state"])
    np.testing.assert_array_equal(results[0]["proba"], results[1]["proba"])
    # the ranks shared the batches: not the model one process trains alone
    A, X, _ = worker.data()
    single = VQGNNLinkPredictor(**worker.LINK).fit(A, X)
    assert any(
        v.numel() and not np.allclose(v.numpy(), results[0]["state"][k], atol=1e-4)
        for k, v in single.model_.state_dict().items()
    )


def test_torchrun_launches_an_unchanged_script(tmp_path):
    """``torchrun --nproc-per-node 2 train.py``: fit(A, X, y) joins the ranks by itself."""
    env = dict(os.environ, SKVQGNN_TEST_INIT="0", OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(WORKER),
        "plain",
        str(tmp_path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = _results(tmp_path, 2)
    assert results[0]["world_size"] == 2
    _same_state(results[0]["state"], results[1]["state"])
    assert np.array_equal(results[0]["predict"], results[1]["predict"])
    # the ranks trained together: the model of the one-process reference of 2 ranks
    A, X, y = worker.data()
    params = {**worker.COMMON, **worker.CONFIGS["gcn-2-random"]}
    reference = VQGNNClassifier(**params).fit(A, X, y, distributed=Simulated(2))
    _same_state(results[0]["state"], worker.summary(reference)["state"], atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ranks_training_on_a_gpu_agree_with_the_reference(tmp_path):
    """Two gloo ranks with device="cuda" (the collectives run on host copies): the ranks agree
    and match the one-process reference on the GPU."""
    codes, errs, results = launch("cuda", tmp_path)
    assert codes == [0, 0], errs
    _same_state(results[0]["state"], results[1]["state"])
    A, X, y = worker.data()
    params = {**worker.COMMON, **worker.CONFIGS["gcn-2-random"], "device": "cuda"}
    reference = VQGNNClassifier(**params).fit(A, X, y, distributed=Simulated(2))
    ours = worker.summary(reference)
    _same_state(results[0]["state"], ours["state"], atol=1e-4)
    assert np.mean(results[0]["predict"] == reference.predict(A, X)) > 0.99


def test_one_simulated_rank_is_the_one_process_fit(csbm):
    A, X, y, split = csbm
    labels = np.where(split.train_mask, y, -1)
    params = {**worker.COMMON, **worker.CONFIGS["gcn-2-random"], "early_stopping": False}
    a = VQGNNClassifier(**params).fit(A, X, labels)
    b = VQGNNClassifier(**params).fit(A, X, labels, distributed=Simulated(1))
    _same_state(
        {k: v.numpy() for k, v in a.model_.state_dict().items()},
        {k: v.numpy() for k, v in b.model_.state_dict().items()},
    )


def test_resolve_strategy():
    assert isinstance(resolve_strategy(None), Local)  # no process group in this process
    assert isinstance(resolve_strategy(False), Local)
    sim = Simulated(3)
    assert resolve_strategy(sim) is sim
    with pytest.raises(TypeError, match="distributed must be"):
        resolve_strategy("gloo")
    with pytest.raises(ValueError, match="world_size must be a positive integer"):
        Simulated(0)
    A, X, y, _ = worker.make_csbm(60, 2, random_state=0)
    with pytest.raises(ValueError, match="needs mini-batches"):
        VQGNNClassifier(batch_size=None, max_epochs=1).fit(A, X, y, distributed=_TwoRanks())


class _TwoRanks(Local):
    """A strategy that claims two ranks (for the checks made before any collective)."""

    world_size = 2
