"""Classification and regression metrics for GLUE and user text-classification datasets.

Every metric takes final predictions (class ids, or scores for regression) and gold labels and returns a
fraction (0.85, not 85); reports scale to the paper's units. Degenerate inputs get a defined, finite
value rather than a warning and NaN, so that best-epoch selection and ``results.json`` stay well-defined:

- Matthews correlation is 0.0 when predictions or labels are constant (scikit-learn's convention);
- Pearson and Spearman correlations are 0.0 when predictions or labels are constant (the coefficient
  is undefined there; 0.0 says "no measurable association", as for Matthews);
- F1 is 0.0 for a class that is neither predicted nor present.

Non-finite regression predictions (a diverged head) give NaN correlations, so divergence stays visible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

MetricFunction = Callable[[np.ndarray, np.ndarray], float]


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions == labels))


def _binary_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class 1, as GLUE reports it for MRPC and QQP."""
    for name, values in (("predictions", predictions), ("labels", labels)):
        unexpected = set(np.unique(values).tolist()) - {0, 1}
        if unexpected:
            raise ValueError(
                f"metric 'f1' is the binary F1 of class 1 and needs {name} in {{0, 1}}, "
                f"got {sorted(unexpected)}; use 'macro_f1' for multi-class labels"
            )
    return float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0.0))


def _macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes seen in labels or predictions."""
    return float(f1_score(labels, predictions, average="macro", zero_division=0.0))


def _matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(matthews_corrcoef(labels, predictions))


def _is_constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values[0]))


def _pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    if _is_constant(predictions) or _is_constant(labels):
        return 0.0
    return float(stats.pearsonr(predictions.astype(np.float64), labels.astype(np.float64)).statistic)


def _spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    if _is_constant(predictions) or _is_constant(labels):
        return 0.0
    return float(stats.spearmanr(predictions, labels).statistic)


METRICS: Mapping[str, MetricFunction] = MappingProxyType(
    {
        "accuracy": _accuracy,
        "f1": _binary_f1,
        "macro_f1": _macro_f1,
        "matthews": _matthews,
        "pearson": _pearson,
        "spearman": _spearman,
    }
)
"""The metrics :func:`compute_metrics` knows, by the name used in configs and ``results.json``."""


def _as_vector(name: str, values: npt.ArrayLike) -> np.ndarray:
    """Flattens ``(n,)`` or ``(n, 1)`` (a regression head's output) to ``(n,)``; rejects anything else."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"{name} must have shape (n,) or (n, 1), got {array.shape}; "
            "for classification pass class ids (the argmax of the logits), not logits"
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one example")
    return array


def compute_metrics(
    metric_names: Sequence[str], predictions: npt.ArrayLike, labels: npt.ArrayLike
) -> dict[str, float]:
    """Computes each named metric of ``predictions`` against ``labels``.

    ``predictions`` are class ids for classification metrics and real-valued scores for ``pearson`` /
    ``spearman``; ``metric_names`` come from :data:`METRICS` (a task config's ``task.metrics``). Returns ``{name: fraction}`` in the order asked for.
    """
    unknown = [name for name in metric_names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known metrics: {', '.join(METRICS)}")
    prediction_vector = _as_vector("predictions", predictions)
    label_vector = _as_vector("labels", labels)
    if prediction_vector.shape != label_vector.shape:
        raise ValueError(
            f"predictions and labels differ in length ({prediction_vector.size} vs {label_vector.size}); "
            "pass one prediction per labelled example"
        )
    return {name: METRICS[name](prediction_vector, label_vector) for name in metric_names}
