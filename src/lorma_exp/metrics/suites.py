"""The metric suites: which metric names each kind of task can report, and the check of a task's choice.

A suite is the contract between a task config (``task.metrics``) and the scorer that computes those
names (:mod:`lorma_exp.metrics.glue`, :mod:`~lorma_exp.metrics.nlg`, :mod:`~lorma_exp.metrics.math`). This
module imports none of the scorers, so the check runs at start-up in a fraction of a second, before any
data, weights or scorer dependency (Java, NLTK, scikit-learn) is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from lorma_exp.config import ConfigError


@dataclass(frozen=True)
class MetricSuite:
    """A scorer's metrics, by the names that configs, ``results.json`` and reports use."""

    name: str
    metrics: tuple[str, ...]


CLASSIFICATION = MetricSuite("classification", ("accuracy", "f1", "macro_f1", "matthews"))
REGRESSION = MetricSuite("regression", ("pearson", "spearman"))
E2E = MetricSuite("e2e", ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"))
"""The E2E NLG Challenge scorer's metrics."""
WEBNLG = MetricSuite("webnlg", ("BLEU", "METEOR", "TER"))
"""WebNLG GenerationEval's metrics as the paper's pipeline runs it (WebNLG and DART)."""
MATHS = MetricSuite("maths", ("accuracy", "answer_rate", "accuracy_lenient", "answer_rate_lenient"))
"""The authors' protocol (accuracy, answer_rate) and the lenient judge's (:mod:`lorma_exp.metrics.math`)."""

SUITES: Mapping[str, MetricSuite] = MappingProxyType(
    {suite.name: suite for suite in (CLASSIFICATION, REGRESSION, E2E, WEBNLG, MATHS)}
)
"""Every suite, by name."""


def check_task_metrics(suite: MetricSuite, metrics: Sequence[str]) -> None:
    """Fails naming ``task.metrics`` and the valid names when it lists a name ``suite`` does not report."""
    unknown = [name for name in metrics if name not in suite.metrics]
    if unknown:
        raise ConfigError(
            f"task.metrics: {unknown} are not reported by the {suite.name} metric suite. "
            f"Choose from {list(suite.metrics)}."
        )
