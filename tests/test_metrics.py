import warnings

import numpy as np
import pytest
import torch
from ogb.linkproppred import Evaluator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score, train_test_split

from skvqgnn.metrics import (
    hits_at_50_scorer,
    hits_at_k,
    hits_scorer,
    mrr,
    mrr_scorer,
    roc_auc,
    roc_auc_scorer,
)


def random_targets_scores(seed: int, n: int = 400, ties: bool = True):
    rng = np.random.default_rng(seed)
    t = (rng.random(n) < 0.3).astype(np.int64)
    scores = rng.normal(size=n) + t
    if ties:
        scores = np.round(scores, 1)  # many ties, also between positives and negatives
    return t, scores


def hits_reference(t, scores, k):
    """A positive is a hit when fewer than k negatives score at least as high."""
    pos, neg = scores[t == 1], scores[t == 0]
    return np.mean([(neg >= s).sum() < k for s in pos])


def mrr_reference(t, scores):
    pos, neg = scores[t == 1], scores[t == 0]
    optimistic = 1 + (neg[None, :] > pos[:, None]).sum(axis=1)
    pessimistic = 1 + (neg[None, :] >= pos[:, None]).sum(axis=1)
    return np.mean(1 / ((optimistic + pessimistic) / 2))


def test_hits_at_k_by_hand():
    t = [1, 1, 1, 0, 0, 0]
    scores = [0.9, 0.5, 0.2, 0.7, 0.5, 0.1]
    assert hits_at_k(t, scores, k=1) == pytest.approx(1 / 3)  # above 0.7: 0.9
    assert hits_at_k(t, scores, k=2) == pytest.approx(1 / 3)  # 0.5 ties with the 2nd negative
    assert hits_at_k(t, scores, k=3) == pytest.approx(1.0)  # above 0.1: all
    # order of the pairs and the target dtype do not matter
    perm = [3, 0, 5, 2, 4, 1]
    t_bool = np.array(t, dtype=bool)[perm]
    assert hits_at_k(t_bool, np.array(scores)[perm], k=2) == pytest.approx(1 / 3)
    # ties among the top negatives: the 2nd highest negative is 0.8
    assert hits_at_k([1, 1, 0, 0, 0], [0.85, 0.8, 0.8, 0.8, 0.0], k=2) == pytest.approx(0.5)


def test_hits_at_k_with_fewer_than_k_negatives_is_one_and_warns():
    t = [1, 1, 0, 0, 0]
    scores = [0.0, 0.1, 0.5, 0.6, 0.7]  # every positive below every negative
    with pytest.warns(UserWarning, match="Hits@4 with only 3 negatives"):
        assert hits_at_k(t, scores, k=4) == 1.0
    # exactly k negatives: the k-th is the lowest, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hits_at_k(t, scores, k=3) == 0.0
        assert hits_at_k(t, [0.5, 0.8, 0.5, 0.6, 0.7], k=3) == 0.5  # 0.5 ties the 3rd


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 50])
def test_hits_at_k_matches_rank_definition(seed, k):
    t, scores = random_targets_scores(seed)
    assert hits_at_k(t, scores, k=k) == pytest.approx(hits_reference(t, scores, k))


def test_mrr_by_hand():
    assert mrr([1, 1, 0, 0], [0.9, 0.5, 0.7, 0.5]) == pytest.approx((1 + 1 / 2.5) / 2)
    assert mrr([1, 0, 0, 0], [0.0, 1.0, 1.0, 2.0]) == pytest.approx(1 / 4)
    assert mrr([1, 0, 0, 0], [1.0, 1.0, 1.0, 1.0]) == pytest.approx(1 / 2.5)
    assert mrr([True, False], [2, 1]) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [True, False])
def test_mrr_matches_definition_and_ogb(seed, ties):
    t, scores = random_targets_scores(seed, ties=ties)
    value = mrr(t, scores)
    assert value == pytest.approx(mrr_reference(t, scores), rel=1e-12)
    # ogbl-citation2 evaluator (its torch path; its numpy path fails on ``sum(dim=1)``)
    pos, neg = scores[t == 1], scores[t == 0]
    result = Evaluator("ogbl-citation2").eval(
        {
            "y_pred_pos": torch.from_numpy(pos),
            "y_pred_neg": torch.from_numpy(neg).expand(len(pos), len(neg)),
        }
    )
    assert value == pytest.approx(result["mrr_list"].mean().item(), rel=1e-6)


def test_mrr_memory_is_linear():
    # A dense (positives × negatives) comparison would need 1e10 entries here.
    n = 100_000
    t = np.repeat([1, 0], n)
    scores = np.concatenate([np.arange(n) + n, np.arange(n)]).astype(np.float64)
    assert mrr(t, scores) == 1.0
    assert mrr(1 - t, scores) == pytest.approx(1 / (n + 1))


def test_roc_auc():
    assert roc_auc([1, 1, 0, 0], [0.9, 0.5, 0.7, 0.5]) == pytest.approx(0.625)
    for seed in range(3):
        t, scores = random_targets_scores(seed)
        assert roc_auc(t, scores) == pytest.approx(roc_auc_score(t, scores))
        vessel = Evaluator("ogbl-vessel").eval(
            {"y_pred_pos": scores[t == 1], "y_pred_neg": scores[t == 0]}
        )
        assert roc_auc(t, scores) == pytest.approx(vessel["rocauc"])


@pytest.mark.parametrize("metric", [roc_auc, mrr, hits_at_k])
@pytest.mark.parametrize(
    ("t", "scores", "match"),
    [
        ([[1, 0]], [[0.1, 0.2]], "t must be a 1-D array"),
        ([1, 0, 2], [0.1, 0.2, 0.3], "t must hold only 0"),
        (["a", "b"], [0.1, 0.2], "t must hold only 0"),
        ([1, 0], [0.1, 0.2, 0.3], "scores has 3 entries but t has 2"),
        ([1, 0], [[0.1, 0.2]], "scores must be a 1-D array"),
        ([1, 0], ["x", "y"], "scores must be a 1-D array of real numbers"),
        ([1, 0], [0.1, np.nan], "scores contains NaN"),
        ([1, 0], [0.1, np.inf], "scores contains NaN or infinite"),
        ([1, 1], [0.1, 0.2], "t must contain at least one positive"),
        ([0, 0], [0.1, 0.2], "t must contain at least one positive"),
    ],
)
def test_validation(metric, t, scores, match):
    with pytest.raises(ValueError, match=match):
        metric(t, scores)


@pytest.mark.parametrize("k", [0, -3, 2.5, True, None])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        hits_at_k([1, 0], [0.5, 0.1], k=k)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        hits_scorer(k)


def pair_data(n: int = 600, noise: float = 1.0, seed: int = 0):
    """Features of node pairs whose first column shifts with the target."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(scale=noise, size=(n, 3))
    X[:, 0] += 2.0 * y
    return X, y


def test_scorers_on_separable_data():
    X, y = pair_data(noise=0.1)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    model = LogisticRegression()
    for scorer in (roc_auc_scorer, mrr_scorer, hits_at_50_scorer, hits_scorer(10)):
        np.testing.assert_allclose(cross_val_score(model, X, y, cv=cv, scoring=scorer), 1.0)


def test_scorers_on_noisy_data_match_the_metrics():
    X, y = pair_data(noise=1.5)
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    model = LogisticRegression()
    auc = cross_val_score(model, X, y, cv=cv, scoring=roc_auc_scorer)
    assert np.all((auc > 0.6) & (auc < 0.95))
    hits = cross_val_score(model, X, y, cv=cv, scoring=hits_scorer(5))
    assert np.all((hits > 0.0) & (hits < 1.0))
    rr = cross_val_score(model, X, y, cv=cv, scoring=mrr_scorer)
    assert np.all((rr > 0.0) & (rr < 0.5))

    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    fitted = LogisticRegression().fit(X_train, y_train)
    scores = fitted.decision_function(X_test)
    assert roc_auc_scorer(fitted, X_test, y_test) == roc_auc(y_test, scores)
    assert mrr_scorer(fitted, X_test, y_test) == mrr(y_test, scores)
    assert hits_at_50_scorer(fitted, X_test, y_test) == hits_at_k(y_test, scores, k=50)
    assert hits_scorer(7)(fitted, X_test, y_test) == hits_at_k(y_test, scores, k=7)
    assert 0 < hits_at_k(y_test, scores, k=7) < hits_at_k(y_test, scores, k=50) < 1


def test_scorer_in_grid_search():
    X, y = pair_data(noise=1.5)
    scorer = hits_scorer(10)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(LogisticRegression(), {"C": [1e-4, 1.0]}, scoring=scorer, cv=cv)
    search.fit(X, y)
    assert np.all(
        (search.cv_results_["mean_test_score"] > 0) & (search.cv_results_["mean_test_score"] < 1)
    )
    best = LogisticRegression(**search.best_params_)
    assert search.best_score_ == pytest.approx(
        cross_val_score(best, X, y, cv=cv, scoring=scorer).mean()
    )
