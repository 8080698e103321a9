"""Metrics of a model's outputs against the true labels or targets, on host NumPy arrays.

One place for what training logs each epoch (`val/f1_macro`, `val/auc`, `val/mae`,
`val/r2`) and what `mlpcli eval` prints, defined as scikit-learn defines them:
`f1_score(average="macro")` over the classes that occur in the labels or the predictions,
`roc_auc_score` (ranks, ties averaged), `mean_squared_error`, `mean_absolute_error`,
`r2_score` (the mean over target columns). Outputs are what the model's output layer gives:
class probabilities (n, C) for cross-entropy, P(class 1) (n, 1) for binary cross-entropy,
predictions (n, k) for regression, already in the target's original units.
"""

from __future__ import annotations

import math

import numpy as np

# Classes up to which a confusion matrix is drawn each epoch: past that it is unreadable.
MAX_CONFUSION_CLASSES = 20


def is_binary(loss: str, n_outputs: int) -> bool:
    """Whether a classifier separates two classes (one sigmoid, or a 2-way softmax)."""
    return loss == "binary_cross_entropy" or (loss == "cross_entropy" and n_outputs == 2)


def predicted_classes(outputs: np.ndarray, loss: str) -> np.ndarray:
    """(n,) class indices, decided as accuracy decides them (p > 0.5, or the argmax)."""
    if loss == "binary_cross_entropy":
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return outputs.argmax(axis=1)


def positive_scores(outputs: np.ndarray, loss: str) -> np.ndarray:
    """(n,) the probability of class 1 from a binary classifier's outputs."""
    return outputs[:, 0] if loss == "binary_cross_entropy" else outputs[:, 1]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    cells = np.asarray(y_true, np.int64) * n_classes + np.asarray(y_pred, np.int64)
    return np.bincount(cells, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def f1_macro(confusion: np.ndarray) -> float:
    """The unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN), over the classes
    present in the labels or the predictions (scikit-learn's `average="macro"`)."""
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    present = (predicted + actual) > 0
    f1 = 2 * tp[present] / (predicted[present] + actual[present])  # 2TP+FP+FN = pred + actual
    return float(f1.mean()) if f1.size else math.nan


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of scores for class 1 against 0/1 labels: the chance that a
    random positive scores above a random negative, ties counting half (Mann-Whitney U).
    NaN when one of the two classes is absent."""
    positive = np.asarray(y_true) == 1
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # 1-based ranks of the scores, tied scores sharing the mean of their ranks
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the rank of each group's last member
    ranks = (last - (counts - 1) / 2.0)[group.reshape(-1)]
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def classification(y_true: np.ndarray, outputs: np.ndarray, loss: str) -> dict:
    """`f1_macro`, `auc` (binary models), and `confusion` (the matrix) of a classifier."""
    n_classes = 2 if loss == "binary_cross_entropy" else outputs.shape[1]
    confusion = confusion_matrix(y_true, predicted_classes(outputs, loss), n_classes)
    result: dict = {"f1_macro": f1_macro(confusion)}
    if is_binary(loss, outputs.shape[1]):
        result["auc"] = roc_auc(y_true, positive_scores(outputs, loss))
    result["confusion"] = confusion
    return result


def regression(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """`mse`, `mae` (means over samples and target columns) and `r2` (the mean over target
    columns of 1 - SS_res / SS_tot; a column whose targets are all equal has no R² and is
    left out; NaN when every column is so), of (n, k) arrays in the same units."""
    y_true = np.asarray(y_true, np.float64).reshape(len(y_true), -1)
    err = np.asarray(y_pred, np.float64).reshape(y_true.shape) - y_true
    ss_res = (err**2).sum(axis=0)
    ss_tot = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    defined = ss_tot > 0
    r2 = 1.0 - ss_res[defined] / ss_tot[defined]
    return {
        "mse": float((err**2).mean()),
        "mae": float(np.abs(err).mean()),
        "r2": float(r2.mean()) if r2.size else math.nan,
    }
