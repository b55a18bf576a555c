r"""Answer extraction and matching for GSM8K and MATH generations (the paper's Table 4).

A generation is scored in two steps: an extractor pulls the final answer out of the free text
(:func:`extract_gsm8k_answer`, :func:`extract_math_answer`), then :func:`answers_match` compares it with the
reference after normalising both the way the MATH benchmark's own checker does (``\dfrac`` → ``\frac``,
``\frac12`` → ``\frac{1}{2}``, no spaces, no ``\left``/``\right``, degrees, percent, dollar signs and
trailing ``\text{...}`` units dropped, ``k = 3`` → ``3``). On top of that string test, numbers are compared
as exact rationals (``0.5`` equals ``\frac12`` and ``1/2``; ``1,000`` equals ``1000``), and tuples and
intervals element by element. :func:`judge_generation` and :func:`score_predictions` turn this into the
per-item records and the accuracy that evaluation writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Literal, TypedDict

AnswerFormat = Literal["gsm8k", "math"]

# A number as written in prose: optional minus (not when it is a hyphen or a subtraction, i.e. right
# after a word character or a closing bracket, or when a space separates it from the number), optional
# currency sign, digits with optional thousands commas, optional decimals; or a decimal with no integer
# part.
_PROSE_NUMBER = re.compile(
    r"(?P<sign>(?<![\w)\]}])[-−])?\$?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
_GSM8K_FINAL_MARKER = re.compile(r"####")
_ANSWER_IS_MARKER = re.compile(r"(?:final\s+)?answer\s+is\s*:?", re.IGNORECASE)
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
# A model continuing the prompt format ("### Instruction: <a new problem>") has finished its answer.
_PROMPT_FORMAT_CONTINUATION = re.compile(r"#{3}\s*(?:Instruction|Response|Input)\b")


def _canonical_number(sign: str | None, digits: str) -> str:
    """``"1,200.50"`` → ``"1200.5"``; drops thousands commas, leading zeros and trailing decimal zeros."""
    value = Decimal(digits.replace(",", ""))
    if sign:
        value = -value
    return format(value.normalize() + 0, "f")


def _first_number(text: str) -> str | None:
    match = _PROSE_NUMBER.search(text)
    return _canonical_number(match["sign"], match["digits"]) if match else None


def _last_number(text: str) -> str | None:
    matches = list(_PROSE_NUMBER.finditer(text))
    return _canonical_number(matches[-1]["sign"], matches[-1]["digits"]) if matches else None


def _text_after_last(marker: re.Pattern[str], text: str) -> str | None:
    matches = list(marker.finditer(text))
    return text[matches[-1].end() :] if matches else None


def extract_gsm8k_answer(text: str) -> str | None:
    r"""The final number of a GSM8K-style solution, in canonical form, or None if it has no number.

    Looks, in order, for the number after the last ``####`` (GSM8K's own answer line), the number after
    the last "The answer is" (MetaMathQA's closing sentence), then the last number in the text. Thousands
    commas, currency signs, units and a sentence's final period are dropped; a minus sign is kept unless
    it is a hyphen or a subtraction (it follows a letter, digit or closing bracket).

    >>> extract_gsm8k_answer("She pays 3 * $400 = $1,200.")
    '1200'
    >>> extract_gsm8k_answer("So 6 + 36 = 42.\n#### 42")
    '42'
    >>> extract_gsm8k_answer("The answer is: -7 degrees. Next question: 12 apples.")
    '-7'
    >>> extract_gsm8k_answer("It costs 2.50 dollars.")
    '2.5'
    >>> extract_gsm8k_answer("I cannot tell.") is None
    True
    """
    for marker in (_GSM8K_FINAL_MARKER, _ANSWER_IS_MARKER):
        tail = _text_after_last(marker, text)
        if tail is not None and (number := _first_number(tail)) is not None:
            return number
    return _last_number(text)


def _braced_group_end(text: str, open_index: int) -> int | None:
    """Index just past the ``}`` matching the ``{`` at ``open_index``; None if it is never closed."""
    depth = 0
    for index in range(open_index, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def _box_content(text: str, command_end: int) -> str | None:
    r"""The argument of a ``\boxed`` ending at ``command_end``: ``{...}`` (nested) or ``\boxed 5``."""
    rest = text[command_end:]
    if rest.startswith("{"):
        group_end = _braced_group_end(text, command_end)
        return text[command_end + 1 : group_end - 1] if group_end is not None else None
    spaced = re.match(r"\s+([^\s$]+)", rest)
    return spaced[1] if spaced else None


def _answer_sentence(tail: str) -> str | None:
    """The answer in the rest of an "answer is" sentence: ``$...$`` if it starts so, else up to its end."""
    line = tail.strip().split("\n", 1)[0].strip()
    dollar_quoted = re.match(r"\$([^$]+)\$", line)
    if dollar_quoted:
        return dollar_quoted[1].strip()
    answer = re.split(r"\.\s", line, maxsplit=1)[0].strip().rstrip(".").strip()
    return answer or None


def extract_math_answer(text: str) -> str | None:
    r"""The final answer of a MATH-style solution, as written, or None if it gives none.

    The content of the last complete ``\boxed{...}`` or ``\fbox{...}`` (nested braces allowed; a box cut off
    by the generation limit is skipped), else what follows the last "The answer is" / "The final answer
    is" up to the end of its sentence (MetaMathQA ends its solutions with "The answer is: ...").

    >>> extract_math_answer(r"so $x = \boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    >>> extract_math_answer(r"\boxed{1} then \boxed{\sqrt{\frac{3}{4}}}")
    '\\sqrt{\\frac{3}{4}}'
    >>> extract_math_answer("Adding them up gives 10.\nThe answer is: 10\\%.")
    '10\\%'
    >>> extract_math_answer("The final answer is $(1, 2]$. I hope it is correct.")
    '(1, 2]'
    >>> extract_math_answer("We have x = 3.") is None
    True
    """
    for command in reversed(list(_BOX_COMMAND.finditer(text))):
        content = _box_content(text, command.end())
        if content is not None and content.strip():
            return content.strip()
    tail = _text_after_last(_ANSWER_IS_MARKER, text)
    return _answer_sentence(tail) if tail is not None else None


_LATEX_NOISE = re.compile(r"\\[!,;:]|\\displaystyle|\\(?:left|right)(?:\.|(?![a-zA-Z]))")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![a-zA-Z])")
_TRAILING_UNIT = re.compile(r"^(?P<value>.*\S)\s*\\(?:text|mbox)\{[^{}]*\}(?:\^\{?\d\}?)?$", re.DOTALL)
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}")
_BARE_DECIMAL_POINT = re.compile(r"(?<!\d)\.(?=\d)")
_SHORT_LEFT_HAND_SIDE = 2


def _read_argument(text: str, start: int) -> tuple[str, int] | None:
    r"""One macro argument at ``start``: a braced group's content, a command (``\frac\pi2``) or a character."""
    if start >= len(text):
        return None
    if text[start] == "{":
        group_end = _braced_group_end(text, start)
        return (text[start + 1 : group_end - 1], group_end) if group_end is not None else None
    command = re.match(r"\\[a-zA-Z]+", text[start:])
    if command:
        return command[0], start + command.end()
    return text[start], start + 1


def _brace_macro_arguments(text: str) -> str:
    r"""Writes every ``\frac`` and ``\sqrt`` argument in braces: ``\frac1{72}`` → ``\frac{1}{72}``."""
    pieces: list[str] = []
    index = 0
    for macro in re.finditer(r"\\(frac|sqrt)(?![a-zA-Z\[])", text):
        if macro.start() < index:
            continue
        arity = 2 if macro[1] == "frac" else 1
        arguments: list[str] = []
        cursor = macro.end()
        for _ in range(arity):
            argument = _read_argument(text, cursor)
            if argument is None:
                break
            arguments.append(argument[0])
            cursor = argument[1]
        if len(arguments) < arity:
            continue
        pieces.append(text[index : macro.start()])
        pieces.append(f"\\{macro[1]}" + "".join("{" + _brace_macro_arguments(a) + "}" for a in arguments))
        index = cursor
    pieces.append(text[index:])
    return "".join(pieces)


def _normalize(answer: str) -> str:
    """The MATH checker's canonical spelling of an answer (see the module docstring)."""
    text = answer.replace("\\$", "").replace("$", "").replace("\n", " ").strip()
    text = _LATEX_NOISE.sub("", text).replace("\\ ", " ")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _DEGREES.sub("", text)
    unit = _TRAILING_UNIT.match(text)
    if unit and "\\text" not in unit["value"] and "\\mbox" not in unit["value"]:
        text = unit["value"]
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = text.replace("\\%", "").replace("%", "")
    text = "".join(text.split()).rstrip(".")
    text = _BARE_DECIMAL_POINT.sub("0.", text)
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= _SHORT_LEFT_HAND_SIDE:
        text = sides[1]
    text = _brace_macro_arguments(text)
    if text.startswith("{") and _braced_group_end(text, 0) == len(text):
        text = text[1:-1]
    return text


_PLAIN_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_FORMS = (
    re.compile(rf"(?P<numerator>{_PLAIN_NUMBER})"),
    re.compile(rf"(?P<numerator>{_PLAIN_NUMBER})/(?P<denominator>{_PLAIN_NUMBER})"),
    re.compile(
        rf"(?P<sign>-?)\\frac\{{(?P<numerator>{_PLAIN_NUMBER})\}}\{{(?P<denominator>{_PLAIN_NUMBER})\}}"
    ),
)


def _as_number(normalized: str) -> Fraction | None:
    """The exact value of a normalised integer, decimal, ``a/b`` or ``\\frac{a}{b}``; None otherwise."""
    for form in _NUMBER_FORMS:
        match = form.fullmatch(normalized)
        if match is None:
            continue
        fields = match.groupdict()
        value = Fraction(fields["numerator"].replace(",", ""))
        if fields.get("denominator") is not None:
            denominator = Fraction(fields["denominator"].replace(",", ""))
            if denominator == 0:
                return None
            value /= denominator
        return -value if fields.get("sign") else value
    return None


_OPENING = ("\\{", "(", "[")
_CLOSING = ("\\}", ")", "]")


def _split_top_level_commas(text: str) -> list[str] | None:
    """``"1,(2,3)"`` → ``["1", "(2,3)"]``; None if the brackets in ``text`` do not balance."""
    items: list[str] = []
    depth = 0
    item_start = 0
    for index, character in enumerate(text):
        if character in "([{":
            depth += 1
        elif character in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif character == "," and depth == 0:
            items.append(text[item_start:index])
            item_start = index + 1
    items.append(text[item_start:])
    return items if depth == 0 else None


def _split_sequence(normalized: str) -> tuple[str, list[str], str] | None:
    """``"[1,2)"`` → ``("[", ["1", "2"], ")")``; a bare ``"1,2"`` has empty brackets; None if not a list.

    Brackets pair loosely, because an interval may open with ``[`` and close with ``)``, but a bracketed
    form counts only if its inside balances (so ``(1,2)\\cup(3,4)`` is not one interval).
    """
    opening = next((o for o in _OPENING if normalized.startswith(o)), "")
    closing = next((c for c in _CLOSING if normalized.endswith(c)), "")
    if opening and closing:
        items = _split_top_level_commas(normalized[len(opening) : -len(closing)])
        if items is not None and len(items) > 1:
            return opening, items, closing
    items = _split_top_level_commas(normalized)
    if items is not None and len(items) > 1:
        return "", items, ""
    return None


def _equivalent(prediction: str, reference: str) -> bool:
    if prediction == reference:
        return True
    predicted_value, reference_value = _as_number(prediction), _as_number(reference)
    if predicted_value is not None and reference_value is not None:
        return predicted_value == reference_value
    predicted_items, reference_items = _split_sequence(prediction), _split_sequence(reference)
    if predicted_items is None or reference_items is None:
        return False
    predicted_open, predicted_elements, predicted_close = predicted_items
    reference_open, reference_elements, reference_close = reference_items
    return (
        predicted_open == reference_open
        and predicted_close == reference_close
        and len(predicted_elements) == len(reference_elements)
        and all(_equivalent(p, r) for p, r in zip(predicted_elements, reference_elements, strict=True))
    )


def answers_match(prediction: str | None, reference: str) -> bool:
    r"""Whether an extracted answer equals the reference answer, up to notation.

    Both are normalised as the MATH checker does; then they match if the strings are equal, if both are
    numbers with the same exact value, or if both are tuples / intervals with the same brackets whose
    elements match in order. A missing prediction (None) never matches.

    >>> answers_match("0.5", r"\frac12")
    True
    >>> answers_match(r"\left( 3, \dfrac{1}{2} \right)", "(3,0.5)")
    True
    >>> answers_match(r"90^\circ", "90")
    True
    >>> answers_match(r"5\text{ cm}", "5")
    True
    >>> answers_match("[1, 2)", "[1,2]")
    False
    >>> answers_match(None, "4")
    False
    """
    if prediction is None:
        return False
    return _equivalent(_normalize(prediction), _normalize(reference))


EXTRACTORS: Mapping[str, Callable[[str], str | None]] = MappingProxyType(
    {"gsm8k": extract_gsm8k_answer, "math": extract_math_answer}
)
"""The answer extractor of each answer format, by the name tasks use."""


class JudgedGeneration(TypedDict):
    """One scored generation, as written to the predictions JSONL file."""

    generation: str
    extracted: str | None
    reference: str
    correct: bool


def judge_generation(generation: str, reference: str, answer_format: AnswerFormat) -> JudgedGeneration:
    """Extracts the answer from ``generation`` and checks it against the reference answer.

    ``reference`` is the final answer, not a worked solution (for GSM8K, ``extract_gsm8k_answer`` of the
    dataset's solution; for MATH, ``extract_math_answer`` of it or the dataset's answer field).

    >>> judge_generation("6 + 36 = 42. The answer is: 42", "42", "gsm8k")["correct"]
    True
    """
    if answer_format not in EXTRACTORS:
        raise ValueError(f"unknown answer_format {answer_format!r}; known formats: {', '.join(EXTRACTORS)}")
    extracted = EXTRACTORS[answer_format](generation)
    return JudgedGeneration(
        generation=generation,
        extracted=extracted,
        reference=reference,
        correct=answers_match(extracted, reference),
    )


def judged_text(generation: str) -> str:
    """The part of a generation that answers the prompt: up to where it starts another "### ..." block.

    An untrained model often goes on to invent the next problem; its final answer must come from the
    solution it wrote, not from the invented one.
    """
    continuation = _PROMPT_FORMAT_CONTINUATION.search(generation)
    return generation[: continuation.start()].rstrip() if continuation else generation


class ScoredGeneration(JudgedGeneration):
    """A judged generation and the answer format it was judged in, as the predictions file records it."""

    answer_format: AnswerFormat


def score_generations(
    generations: Sequence[str], references: Sequence[str], answer_formats: Sequence[AnswerFormat]
) -> tuple[dict[str, float], list[ScoredGeneration]]:
    """The maths suite's metrics of decoded generations, and one record per generation.

    Each generation is judged on its :func:`judged_text` against its reference answer, extracted in its
    answer format.
    """
    records = [
        ScoredGeneration(
            **judge_generation(judged_text(generation), reference, answer_format), answer_format=answer_format
        )
        for generation, reference, answer_format in zip(generations, references, answer_formats, strict=True)
    ]
    return score_predictions(records), records


def score_predictions(records: Sequence[JudgedGeneration]) -> dict[str, float]:
    """Accuracy over judged generations, and the fraction from which any answer could be extracted.

    >>> score_predictions([judge_generation("#### 3", "3", "gsm8k"), judge_generation("no idea", "5", "gsm8k")])
    {'accuracy': 0.5, 'answer_rate': 0.5}
    """
    if not records:
        raise ValueError("records is empty; accuracy needs at least one judged generation")
    return {
        "accuracy": sum(record["correct"] for record in records) / len(records),
        "answer_rate": sum(record["extracted"] is not None for record in records) / len(records),
    }
