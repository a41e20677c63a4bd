"""Grid search on a Dask cluster: joblib's Dask backend with a real ``LocalCluster`` of two
worker processes on 127.0.0.1. The graph leaves the client once, not with every candidate and
fold, and the search finds what the same search finds in one local process."""

import numpy as np
import pytest

from skvqgnn import Graph, VQGNNClassifier
from skvqgnn.datasets import make_csbm

distributed = pytest.importorskip("distributed")

PARAMS = dict(batch_size=100, max_epochs=4, hidden_layer_sizes=(16,), random_state=0)


@pytest.fixture(autouse=True)
def time_limit():
    """Fail a test that has not finished in two minutes instead of hanging."""
    import signal

    def expire(signum, frame):
        raise TimeoutError("the Dask test ran for more than 120 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
    )
    with distributed.Client(cluster, timeout="60s") as c:
        yield c
    cluster.close(timeout=30)


def _graph(n=400):
    A, X, y, _ = make_csbm(n, 3, avg_degree=6, n_features=8, random_state=0)
    return Graph(A, X), y


def _pickles_of_the_graph(monkeypatch):
    """Count the times this process pickles a ``Graph`` (the workers unpickle as usual)."""
    sent = []
    original = Graph.__getstate__

    def counting(self):
        sent.append(self.n_nodes)
        return original(self)

    monkeypatch.setattr(Graph, "__getstate__", counting)
    return sent


@pytest.mark.parametrize("search", ["grid", "cross_val_score"])
def test_a_dask_search_sends_the_graph_once_and_equals_the_local_one(client, monkeypatch, search):
    import joblib
    from sklearn.model_selection import GridSearchCV, cross_val_score

    G, y = _graph()
    nodes = G.nodes(np.arange(300))
    labels = y[:300]
    clf = VQGNNClassifier(**PARAMS)

    def run():
        if search == "grid":
            gs = GridSearchCV(clf, {"n_codewords": [8, 16]}, cv=3).fit(nodes, labels)
            return gs.cv_results_["mean_test_score"]
        return cross_val_score(clf, nodes, labels, cv=3)

    local = run()
    sent = _pickles_of_the_graph(monkeypatch)
    with joblib.parallel_backend("dask"):
        remote = run()
    tasks = 6 if search == "grid" else 3
    assert sent == [G.n_nodes], f"the graph was pickled {len(sent)} times for {tasks} tasks"
    np.testing.assert_allclose(remote, local, atol=1e-12)
    # both workers took part
    assert len(client.scheduler_info()["workers"]) == 2


def test_a_link_predictor_search_over_pairs_sends_the_graph_once(client, monkeypatch):
    """A ``PairSet`` carries its graph as a ``NodeSet`` does: one pickle for the search."""
    import joblib
    from sklearn.model_selection import GridSearchCV

    from skvqgnn import VQGNNLinkPredictor
    from skvqgnn.model_selection import edge_split

    G, _ = _graph()
    train, _, _ = edge_split(G.A, val=0.05, test=0.1, random_state=0)
    graph = Graph(train.adjacency, G.X)
    pairs = graph.pairs(train.pairs)
    lp = VQGNNLinkPredictor(**{**PARAMS, "batch_size": 200})
    search = GridSearchCV(lp, {"n_codewords": [8, 16]}, cv=2, refit=False)
    local = search.fit(pairs, train.targets).cv_results_["mean_test_score"]
    sent = _pickles_of_the_graph(monkeypatch)
    with joblib.parallel_backend("dask"):
        remote = search.fit(pairs, train.targets).cv_results_["mean_test_score"]
    assert sent == [graph.n_nodes]
    np.testing.assert_allclose(remote, local, atol=1e-12)
