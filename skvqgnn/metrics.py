"""Link-prediction metrics and the scikit-learn scorers built on them.

Every metric takes ``t``, the 0/1 target of each candidate node pair (1: the pair is a link, a
*positive*; 0: a *negative*), and ``scores``, one real score per pair (higher: more likely a link,
as returned by a link predictor's ``decision_function``). As in the Open Graph Benchmark, every
positive is ranked against all the negatives of the same set.

Hits@K (:func:`hits_at_k`)
    The fraction of positives scored strictly above the K-th highest negative score, computed by
    the ``ogbl-collab`` evaluator of :mod:`ogb.linkproppred` with its ``K`` set. Equivalently, a
    positive is a hit when fewer than K negatives score at least as high as it: a negative tied
    with a positive counts as ranked above it. With fewer than K negatives no negative can be
    K-th, every positive is a hit and Hits@K is 1 (as OGB returns); the value says nothing about
    the model, so a warning is issued.
MRR (:func:`mrr`)
    The mean over positives of ``1 / rank``, where the rank of a positive with score ``s`` among
    the negatives is ``1 + (#{neg > s} + #{neg >= s}) / 2``: the mean of its optimistic and its
    pessimistic rank, so ties cost half. This is the definition of the ``ogbl-citation2``
    evaluator; it is computed here by binary search in the sorted negative scores
    (``O((p + q) log q)`` time and ``O(p + q)`` memory for ``p`` positives and ``q``
    negatives) instead of the evaluator's ``p × q`` comparison matrix, with the same result.
ROC AUC (:func:`roc_auc`)
    :func:`sklearn.metrics.roc_auc_score`, which the ``ogbl-vessel`` evaluator calls too: the
    probability that a random positive outscores a random negative, ties counting one half.

The scorers ``roc_auc_scorer``, ``hits_at_50_scorer``, ``mrr_scorer`` and those made by
:func:`hits_scorer` plug these metrics into ``GridSearchCV`` and ``cross_val_score``: they call the
estimator's ``decision_function(X)``, which must return one score per pair, and compare it with
the targets ``y``. Greater is better for all of them.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.metrics import make_scorer, roc_auc_score

__all__ = [
    "hits_at_50_scorer",
    "hits_at_k",
    "hits_scorer",
    "mrr",
    "mrr_scorer",
    "roc_auc",
    "roc_auc_scorer",
]


def _check_targets_scores(t: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``t`` and ``scores``; return the scores of the positives and of the negatives."""
    t = np.asarray(t)
    scores = np.asarray(scores)
    if t.ndim != 1:
        raise ValueError(f"t must be a 1-D array of 0/1 targets, got shape {t.shape}")
    if t.dtype != bool:
        if t.dtype.kind not in "iuf" or not np.all((t == 0) | (t == 1)):
            raise ValueError("t must hold only 0 (negative pair) and 1 (positive pair)")
    if scores.ndim != 1 or scores.dtype.kind not in "biuf":
        raise ValueError(
            f"scores must be a 1-D array of real numbers, got shape {scores.shape} and "
            f"dtype {scores.dtype}"
        )
    if len(scores) != len(t):
        raise ValueError(f"scores has {len(scores)} entries but t has {len(t)}; they must match")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contains NaN or infinite values")
    positive = t == 1
    if positive.all() or not positive.any():
        raise ValueError("t must contain at least one positive (1) and one negative (0) pair")
    scores = scores.astype(np.float64)
    return scores[positive], scores[~positive]


def _check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


@functools.lru_cache(maxsize=8)
def _hits_evaluator(k: int) -> Any:
    # ogb imports pandas and torch: deferred until Hits@K is first needed.
    from ogb.linkproppred import Evaluator

    evaluator = Evaluator("ogbl-collab")  # a Hits@50 evaluator; K sets the cut-off
    evaluator.K = k
    return evaluator


def hits_at_k(t: Any, scores: Any, k: int = 50) -> float:
    """Hits@K: the fraction of positives scored strictly above the K-th highest negative.

    Computed by the ``ogbl-collab`` evaluator of :mod:`ogb.linkproppred`. Negatives tied with a
    positive count as ranked above it.

    Parameters
    ----------
    t : array-like of shape (n_pairs,)
        1 (or ``True``) for a positive pair, 0 (or ``False``) for a negative pair; at least one
        of each.
    scores : array-like of shape (n_pairs,)
        Finite real scores; higher means more likely a link.
    k : int, default=50
        The cut-off K, >= 1.

    Returns
    -------
    float
        Hits@K in [0, 1]. With fewer than ``k`` negatives it is 1 and a ``UserWarning`` says so:
        every positive then has fewer than ``k`` negatives scored at least as high.

    Examples
    --------
    >>> hits_at_k([1, 1, 1, 0, 0, 0], [0.9, 0.5, 0.2, 0.7, 0.5, 0.1], k=2)
    0.3333333333333333
    """
    _check_k(k)
    pos, neg = _check_targets_scores(t, scores)
    if len(neg) < k:
        warnings.warn(
            f"Hits@{k} with only {len(neg)} negatives: every positive is a hit and the "
            "score is 1; use more negatives or a smaller k",
            UserWarning,
            stacklevel=2,
        )
        return 1.0
    return float(_hits_evaluator(k).eval({"y_pred_pos": pos, "y_pred_neg": neg})[f"hits@{k}"])


def mrr(t: Any, scores: Any) -> float:
    """Mean reciprocal rank of the positives, each ranked among all the negatives.

    The rank of a positive with score ``s`` is ``1 + (#{neg > s} + #{neg >= s}) / 2``, the mean
    of its optimistic and pessimistic rank, as in the ``ogbl-citation2`` evaluator. The counts
    come from binary search in the sorted negative scores, so memory stays linear in the number
    of pairs.

    Parameters
    ----------
    t : array-like of shape (n_pairs,)
        1 (or ``True``) for a positive pair, 0 (or ``False``) for a negative pair; at least one
        of each.
    scores : array-like of shape (n_pairs,)
        Finite real scores; higher means more likely a link.

    Returns
    -------
    float
        MRR in (0, 1].

    Examples
    --------
    >>> mrr([1, 1, 0, 0], [0.9, 0.5, 0.7, 0.5])  # ranks 1 and 2.5
    0.7
    """
    pos, neg = _check_targets_scores(t, scores)
    neg = np.sort(neg)
    n_above = len(neg) - np.searchsorted(neg, pos, side="right")  # negatives scored > s
    n_at_least = len(neg) - np.searchsorted(neg, pos, side="left")  # negatives scored >= s
    rank = 1.0 + 0.5 * (n_above + n_at_least)
    return float(np.mean(1.0 / rank))


def roc_auc(t: Any, scores: Any) -> float:
    """Area under the ROC curve, by :func:`sklearn.metrics.roc_auc_score`.

    The probability that a random positive scores higher than a random negative, ties counting
    one half; the ``ogbl-vessel`` evaluator computes the same.

    Parameters
    ----------
    t : array-like of shape (n_pairs,)
        1 (or ``True``) for a positive pair, 0 (or ``False``) for a negative pair; at least one
        of each.
    scores : array-like of shape (n_pairs,)
        Finite real scores; higher means more likely a link.

    Returns
    -------
    float
        ROC AUC in [0, 1].

    Examples
    --------
    >>> roc_auc([1, 1, 0, 0], [0.9, 0.5, 0.7, 0.5])  # (1 + 1 + 0 + 0.5) / 4
    0.625
    """
    pos, neg = _check_targets_scores(t, scores)
    targets = np.concatenate([np.ones(len(pos), dtype=np.int8), np.zeros(len(neg), dtype=np.int8)])
    return float(roc_auc_score(targets, np.concatenate([pos, neg])))


def hits_scorer(k: int = 50) -> Any:
    """A scikit-learn scorer for :func:`hits_at_k` with cut-off ``k``.

    Parameters
    ----------
    k : int, default=50
        The cut-off K, >= 1.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)`` scores ``estimator.decision_function(X)`` against ``y``;
        for ``scoring=`` in ``GridSearchCV`` and ``cross_val_score``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = np.arange(8.0).reshape(-1, 1), np.array([0, 0, 0, 0, 1, 1, 1, 1])
    >>> hits_scorer(2)(LogisticRegression().fit(X, y), X, y)
    1.0
    """
    _check_k(k)
    return make_scorer(hits_at_k, response_method="decision_function", k=k)


#: Scorer for :func:`roc_auc` on ``decision_function`` scores.
roc_auc_scorer = make_scorer(roc_auc, response_method="decision_function")
#: Scorer for :func:`hits_at_k` with ``k=50`` on ``decision_function`` scores.
hits_at_50_scorer = hits_scorer(50)
#: Scorer for :func:`mrr` on ``decision_function`` scores.
mrr_scorer = make_scorer(mrr, response_method="decision_function")
