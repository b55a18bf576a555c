"""GLUE metrics against independent textbook formulas, plus degenerate inputs and bad input.

Expected values are computed in this file from confusion counts and numpy (not scipy/sklearn, which the
module uses), so a wrong wiring of the library calls shows up as a mismatch.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from lorma_exp.metrics.glue import compute_metrics

BINARY_PREDICTIONS = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1]
BINARY_LABELS = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1]


def _confusion(predictions: list[int], labels: list[int], positive: int) -> tuple[int, int, int, int]:
    pairs = list(zip(predictions, labels, strict=True))
    true_positive = sum(p == positive and y == positive for p, y in pairs)
    false_positive = sum(p == positive and y != positive for p, y in pairs)
    false_negative = sum(p != positive and y == positive for p, y in pairs)
    true_negative = len(pairs) - true_positive - false_positive - false_negative
    return true_positive, false_positive, false_negative, true_negative


def _f1_from_counts(true_positive: int, false_positive: int, false_negative: int) -> float:
    return 2 * true_positive / (2 * true_positive + false_positive + false_negative)


def test_accuracy_is_the_fraction_of_exact_matches() -> None:
    matches = sum(p == y for p, y in zip(BINARY_PREDICTIONS, BINARY_LABELS, strict=True))
    result = compute_metrics(["accuracy"], BINARY_PREDICTIONS, BINARY_LABELS)
    assert result == {"accuracy": pytest.approx(matches / len(BINARY_LABELS))}


def test_f1_is_the_positive_class_f1_from_confusion_counts() -> None:
    true_positive, false_positive, false_negative, _ = _confusion(BINARY_PREDICTIONS, BINARY_LABELS, 1)
    expected = _f1_from_counts(true_positive, false_positive, false_negative)
    assert compute_metrics(["f1"], BINARY_PREDICTIONS, BINARY_LABELS)["f1"] == pytest.approx(expected)


def test_matthews_matches_the_binary_formula() -> None:
    tp, fp, fn, tn = _confusion(BINARY_PREDICTIONS, BINARY_LABELS, 1)
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    result = compute_metrics(["matthews"], np.array(BINARY_PREDICTIONS), np.array(BINARY_LABELS))
    assert result["matthews"] == pytest.approx(expected)


def test_matthews_is_one_for_perfect_and_minus_one_for_inverted_predictions() -> None:
    labels = [0, 1, 1, 0, 1]
    assert compute_metrics(["matthews"], labels, labels)["matthews"] == pytest.approx(1.0)
    inverted = [1 - y for y in labels]
    assert compute_metrics(["matthews"], inverted, labels)["matthews"] == pytest.approx(-1.0)


def test_macro_f1_is_the_mean_of_per_class_f1() -> None:
    predictions = [0, 1, 2, 2, 1, 0, 2, 1, 0, 2]
    labels = [0, 1, 2, 1, 1, 2, 2, 0, 0, 2]
    per_class = [_f1_from_counts(*_confusion(predictions, labels, c)[:3]) for c in (0, 1, 2)]
    result = compute_metrics(["macro_f1"], predictions, labels)
    assert result["macro_f1"] == pytest.approx(sum(per_class) / 3)


def test_pearson_matches_numpy_correlation_and_accepts_a_regression_head_column() -> None:
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, size=50)
    predictions = labels + rng.normal(scale=0.8, size=50)
    expected = np.corrcoef(predictions, labels)[0, 1]
    result = compute_metrics(["pearson"], predictions[:, None], labels)
    assert result["pearson"] == pytest.approx(expected)


def test_spearman_is_pearson_of_the_ranks() -> None:
    rng = np.random.default_rng(1)
    labels = rng.uniform(0, 5, size=40)
    predictions = np.exp(labels) + rng.normal(scale=5.0, size=40)  # monotone distortion plus noise, no ties
    prediction_ranks = np.argsort(np.argsort(predictions))
    label_ranks = np.argsort(np.argsort(labels))
    expected = np.corrcoef(prediction_ranks, label_ranks)[0, 1]
    assert compute_metrics(["spearman"], predictions, labels)["spearman"] == pytest.approx(expected)


def test_metrics_are_returned_as_python_floats_in_the_order_asked() -> None:
    result = compute_metrics(["f1", "accuracy", "matthews"], BINARY_PREDICTIONS, BINARY_LABELS)
    assert list(result) == ["f1", "accuracy", "matthews"]
    assert all(type(value) is float for value in result.values())


@pytest.mark.parametrize(
    ("constant_side", "metric"),
    [
        ("predictions", "matthews"),
        ("labels", "matthews"),
        ("predictions", "pearson"),
        ("labels", "pearson"),
        ("predictions", "spearman"),
        ("labels", "spearman"),
    ],
)
def test_correlations_with_constant_input_are_zero_without_warnings(constant_side: str, metric: str) -> None:
    varying = [0, 1, 1, 0, 1, 0]
    constant = [1, 1, 1, 1, 1, 1]
    predictions, labels = (constant, varying) if constant_side == "predictions" else (varying, constant)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_metrics([metric], predictions, labels) == {metric: 0.0}


def test_f1_is_zero_when_the_positive_class_is_never_predicted_or_present() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_metrics(["f1"], [0, 0, 0], [0, 0, 0]) == {"f1": 0.0}


def test_non_finite_regression_predictions_give_nan_correlations() -> None:
    result = compute_metrics(["pearson"], [0.1, float("nan"), 0.7], [0.0, 1.0, 2.0])
    assert math.isnan(result["pearson"])


def test_unknown_metric_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown metric.*'mcc'.*accuracy, f1, macro_f1, matthews"):
        compute_metrics(["accuracy", "mcc"], [1], [1])


def test_binary_f1_on_multiclass_labels_points_to_macro_f1() -> None:
    with pytest.raises(ValueError, match=r"labels in \{0, 1\}.*macro_f1"):
        compute_metrics(["f1"], [0, 1, 1], [0, 1, 2])


def test_length_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"differ in length \(3 vs 2\)"):
        compute_metrics(["accuracy"], [0, 1, 1], [0, 1])


def test_logits_instead_of_class_ids_are_rejected() -> None:
    logits = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"predictions must have shape.*argmax"):
        compute_metrics(["accuracy"], logits, [0, 1, 2, 0])


def test_empty_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="predictions is empty"):
        compute_metrics(["accuracy"], [], [])
