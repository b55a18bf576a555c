r"""Maths judging against an oracle nobody here wrote: the MATH benchmark's official checker.

Hendrycks et al.'s ``is_equiv`` / ``strip_string`` (the checker the authors' ``eval_math.py`` imports from
MetaMath's ``util.py``) ships, unchanged, in the PyPI package lm-eval as
``lm_eval/tasks/hendrycks_math/utils.py``; ``make install`` installs lm-eval 0.4.13 without its
dependencies (requirements-oracles.txt), and the module is loaded from its file, since it needs only
``datasets``. Two properties are pinned on a corpus of answers in many spellings:

- the paper protocol's :func:`hendrycks_equivalent` gives the checker's verdict on every pair;
- the lenient :func:`answers_match` accepts every pair of spellings the checker accepts; where the
  checker errs (a few false positives, listed below), the lenient judge does not follow it.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from lorma_exp.metrics.math import answers_match, hendrycks_equivalent

ORACLE_PACKAGE = "lm-eval==0.4.13"


@pytest.fixture(scope="module")
def official() -> ModuleType:
    """lm-eval's copy of the MATH checker, loaded from its file (the package's own imports need more)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            f"the official MATH checker comes from {ORACLE_PACKAGE}: run `make install`, or "
            f"`pip install --no-deps {ORACLE_PACKAGE}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "tasks" / "hendrycks_math" / "utils.py"
    module_spec = importlib.util.spec_from_file_location("official_hendrycks_math", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


# Answers of the kinds MATH has: integers, decimals, fractions, radicals, pi, expressions, tuples,
# intervals, sets, matrices, degrees, percentages, money, units, words, equations.
ANSWERS = [
    "5",
    "-3",
    "0",
    "1000",
    "0.5",
    "2.25",
    r"\frac{1}{2}",
    r"\frac{3}{4}",
    r"-\frac{2}{3}",
    r"\frac{1}{72}",
    r"2\sqrt{3}",
    r"\sqrt{2}",
    r"\frac{\sqrt{3}}{2}",
    r"\pi",
    r"\frac{\pi}{4}",
    r"x^{2}+1",
    r"2x-5",
    r"\frac{x}{2}",
    "(1,2)",
    r"(3,\frac{1}{2})",
    "[1,2)",
    r"(-\infty,3)",
    r"\{1,2\}",
    r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}",
    r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}",
    r"90^\circ",
    r"10\%",
    r"\$18.90",
    r"5\text{ cm}",
    r"\text{(A)}",
    r"\text{Monday}",
    "y=2x+3",
    "3/4",
]


def _spaced(answer: str) -> str:
    return answer.replace(",", ", ").replace("+", " + ").replace("=", " = ").replace("&", " & ")


def _with_left_right(answer: str) -> str:
    for opening, closing in (("(", ")"), ("[", "]"), (r"\{", r"\}")):
        answer = answer.replace(opening, r"\left" + opening, 1).replace(closing, r"\right" + closing, 1)
    return answer


def _bare_arguments(answer: str) -> str:
    r"""``\frac{1}{2}`` -> ``\frac12``, ``\sqrt{3}`` -> ``\sqrt3`` (single-character arguments only)."""
    for digit_a, digit_b in itertools.product("0123456789", repeat=2):
        answer = answer.replace(rf"\frac{{{digit_a}}}{{{digit_b}}}", rf"\frac{digit_a}{digit_b}")
    return answer.replace(r"\sqrt{3}", r"\sqrt3").replace(r"\sqrt{2}", r"\sqrt2")


# Rewrites the official checker's normalisation undoes (each applied to every answer where it changes it).
SPELLINGS: list[Callable[[str], str]] = [
    _spaced,
    _with_left_right,
    _bare_arguments,
    lambda a: a.replace(r"\frac", r"\dfrac"),
    lambda a: a.replace(r"\frac", r"\tfrac"),
    lambda a: a.replace(r"^\circ", r"^{\circ}"),
    lambda a: a.replace(r"\\ ", "\\\\\n"),
    lambda a: a.replace("0.", "."),
    lambda a: a.replace(",", r",\!"),
    lambda a: r"\$" + a,
    lambda a: a if r"\text" in a else a + r"\text{ cm}",
    lambda a: a + r"\%",
    lambda a: "k = " + a,
    lambda a: {"0.5": r"\frac{1}{2}", r"\frac{1}{2}": "1/2", "3/4": r"\frac{3}{4}"}.get(a, a),
]

CORPUS = sorted({spelling(answer) for answer in ANSWERS for spelling in [str, *SPELLINGS]})

# Pairs the official checker calls equivalent that are not, and the lenient judge keeps apart: everything
# after "\text{ " is a unit to the checker, and every "\left" goes, even inside "\leftarrow".
CHECKER_FALSE_POSITIVES = [
    (r"\text{ Monday}", r"\text{ Tuesday}"),
    (r"5\text{ cm and }7", "5"),
    (r"\leftarrow", "arrow"),
]


def test_the_corpus_is_rich_in_spellings_the_checker_accepts(official) -> None:
    accepted = [(a, b) for a, b in itertools.permutations(CORPUS, 2) if official.is_equiv(a, b)]
    assert len(CORPUS) > 200
    assert len(accepted) > 1000


def test_the_paper_protocol_gives_the_official_checkers_verdict_on_every_pair(official) -> None:
    disagreements = [
        (a, b)
        for a, b in itertools.product(CORPUS, repeat=2)
        if hendrycks_equivalent(a, b) != official.is_equiv(a, b)
    ]
    assert disagreements == []


# Strings on which the checker's normalisation fails and it falls back to comparing raw strings, or that
# meet its rewrites in odd places.
CHECKER_EDGE_CASES = [
    "",
    ".",
    r"\sqrt",
    r"\frac",
    r"\frac1",
    r"\frac\frac",
    r"2\text{ cm}\text{ m}",
    r"1\text{ cm}\text{ m}",
    "x/2",
    "01/2",
    "+3/4",
    "1/2/3",
    "a=b=c",
    r"\leftarrow",
    "arrow",
    r"\\frac12",
    r"\frac{1}2",
    " .5",
    "{.5}",
    "0.50",
    "k=",
]


@pytest.mark.parametrize("prediction", CHECKER_EDGE_CASES)
def test_the_paper_protocol_follows_the_checker_where_it_fails_or_surprises(official, prediction) -> None:
    for reference in [*CHECKER_EDGE_CASES, *ANSWERS]:
        assert hendrycks_equivalent(prediction, reference) == official.is_equiv(prediction, reference), (
            reference
        )


def test_the_lenient_judge_accepts_every_spelling_the_checker_accepts(official) -> None:
    missed = [
        (a, b)
        for a, b in itertools.permutations(CORPUS, 2)
        if official.is_equiv(a, b) and not answers_match(a, b)
    ]
    assert missed == []


def test_the_listed_false_positives_are_the_checkers(official) -> None:
    for prediction, reference in CHECKER_FALSE_POSITIVES:
        assert official.is_equiv(prediction, reference)
        assert not answers_match(prediction, reference)
