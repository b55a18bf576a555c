r"""Answer extraction and judging for GSM8K and MATH generations (the paper's Table 4), two ways.

**The authors' protocol** (``accuracy``, what the paper's Table 4 reports): their ``eval_gsm8k.py`` /
``eval_math.py`` (Exploration-Lab/LoRMA, from MetaMath). A generation ends at the first of their vLLM stop
strings (:data:`PAPER_STOP_STRINGS`); only the text after its last "The answer is: " counts. GSM8K: the first
number there, rounded to an integer, equal to the reference's value (:func:`paper_gsm8k_answer`). MATH:
that text up to the sentence's end, equivalent to the reference under the MATH benchmark's own checker,
Hendrycks et al.'s ``is_equiv`` (:func:`hendrycks_equivalent`, which reproduces it, quirks included).

**The lenient judge** (``accuracy_lenient``): an extractor pulls the final answer out of the free text
wherever it is (:func:`extract_gsm8k_answer`: ``####``, "The answer is", else the last number;
:func:`extract_math_answer`: the last ``\boxed{}``, else "The answer is"), then :func:`answers_match`
compares it with the reference after normalising both at least as far as the MATH checker does
(``\dfrac`` → ``\frac``, ``\frac12`` → ``\frac{1}{2}``, ``x^{2}`` → ``x^2``, no spaces, no
``\left``/``\right``, degrees, percent, dollar signs and trailing ``\text{...}`` units dropped, ``k = 3`` →
``3``). On top of that string test, numbers are compared as exact rationals (``0.5`` equals ``\frac12`` and
``1/2``; ``1,000`` equals ``1000``), and tuples, intervals and matrix rows element by element.

:func:`judge_generation` applies both to one generation; :func:`score_generations` gives the maths suite's
metrics and the per-item records that evaluation writes.
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


_LATEX_NOISE = re.compile(r"\\[!,;:]|\\q?quad(?![a-zA-Z])|\\displaystyle|\\(?:left|right)(?:\.|(?![a-zA-Z]))")
# A LaTeX line break (``\\``, matrix rows) or a control space (``\ ``), read left to right so that the line
# break in ``1 \\ 2`` is not taken for a space.
_BREAK_OR_SPACE = re.compile(r"\\\\|\\ ")
# A one-character exponent or subscript in braces: ``x^{2}`` is ``x^2``.
_BRACED_SCRIPT = re.compile(r"([\^_])\{(\w)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![a-zA-Z])")
# A trailing \text{...} unit ("5\text{ cm}^2"): only after a value that ends like a quantity, not after "=".
_TRAILING_UNIT = re.compile(r"^(?P<value>.*[\w})\]])\s*\\(?:text|mbox)\{[^{}]*\}(?:\^\{?\d\}?)?$", re.DOTALL)
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
    text = _BREAK_OR_SPACE.sub(lambda found: "\\" if found[0] == "\\\\" else " ", text)
    text = _LATEX_NOISE.sub("", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _DEGREES.sub("", text)
    text = text.replace("\\%", "").replace("%", "").strip()
    unit = _TRAILING_UNIT.match(text)
    if unit and "\\text" not in unit["value"] and "\\mbox" not in unit["value"]:
        text = unit["value"]
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = _BRACED_SCRIPT.sub(r"\1\2", "".join(text.split()).rstrip("."))
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
"""The lenient judge's answer extractor of each answer format, by the name tasks use."""


def judged_text(generation: str) -> str:
    """The part of a generation the lenient judge reads: up to where it starts another "### ..." block.

    An untrained model often goes on to invent the next problem; its final answer must come from the
    solution it wrote, not from the invented one.
    """
    continuation = _PROMPT_FORMAT_CONTINUATION.search(generation)
    return generation[: continuation.start()].rstrip() if continuation else generation


# ---- the authors' protocol ---------------------------------------------------------------------------
PAPER_STOP_STRINGS = (
    "Question:",
    "Question",
    "USER:",
    "USER",
    "ASSISTANT:",
    "ASSISTANT",
    "Instruction:",
    "Instruction",
    "Response:",
    "Response",
)
"""The stop strings of the authors' vLLM decoding: the generation they judge ends before the first one."""
PAPER_ANSWER_MARKER = "The answer is: "
"""The only place the authors' scripts look for an answer: after the last occurrence of this."""
# The authors' GSM8K number: optional sign, digits, at most one of . , / inside, digits ("1,234,567" stops
# after "1,234").
_PAPER_NUMBER = re.compile(r"[-+]?\d*[.,/]?\d+")


def paper_judged_text(generation: str) -> str:
    r"""``generation`` as the authors' decoding returns it: cut before the first of their stop strings.

    Cutting a greedy generation afterwards gives the same text as stopping the decoding there.
    """
    cut = min((index for stop in PAPER_STOP_STRINGS if (index := generation.find(stop)) >= 0), default=None)
    return generation if cut is None else generation[:cut]


def _paper_answer_text(generation: str) -> str | None:
    pieces = generation.split(PAPER_ANSWER_MARKER)
    return pieces[-1] if len(pieces) > 1 else None


def paper_gsm8k_answer(generation: str) -> int | None:
    r"""The authors' GSM8K answer: the first number after the last "The answer is: ", rounded to an integer.

    A fraction ``a/b`` counts as its value (``a`` when ``b`` is zero); rounding is Python's (half to even).
    None when there is no answer sentence or no number in it.

    >>> paper_gsm8k_answer("18 - 3 = 15 eggs.\nThe answer is: 15")
    15
    >>> paper_gsm8k_answer("The answer is: $1,234,567.50")
    1234
    >>> paper_gsm8k_answer("The answer is: 7/2 cups") is None, paper_gsm8k_answer("so 42")
    (False, None)
    """
    tail = _paper_answer_text(generation)
    found = _PAPER_NUMBER.search(tail.strip()) if tail is not None else None
    if found is None:
        return None
    token = found[0]
    if "/" in token:
        numerator, denominator = token.split("/")
        if not numerator.lstrip("+-"):
            return None  # a bare "/5" or "-/5": the scripts' number test rejects the empty numerator
        if int(denominator) == 0:
            return round(float(numerator))
        return round(float(Fraction(int(numerator), int(denominator))))
    value = float(token.replace(",", ""))
    return None if value == float("inf") else round(value)


def paper_math_answer(generation: str) -> str | None:
    r"""The authors' MATH answer: the rest of the last "The answer is: " sentence, up to ``".\n"``, without a
    final period. None when there is no answer sentence.

    >>> paper_math_answer("Adding, we get 10.\nThe answer is: \\frac{1}{2}.\nDone.")
    '\\frac{1}{2}'
    """
    tail = _paper_answer_text(generation)
    if tail is None:
        return None
    answer = tail.split(".\n")[0].strip()
    return answer.removesuffix(".").strip()


class _CheckerFallback(Exception):
    """Where Hendrycks' ``strip_string`` raises, so that ``is_equiv`` compares the raw strings instead."""


def _hendrycks_units(text: str) -> str:
    r"""Everything before ``\text{ `` (a unit, the checker assumes); two of them make the checker fail."""
    pieces = text.split("\\text{ ")
    if len(pieces) > 2:
        raise _CheckerFallback
    return pieces[0]


def _hendrycks_sqrt(text: str) -> str:
    r"""``\sqrt3`` → ``\sqrt{3}``: a bare argument of one character is braced."""
    head, *arguments = text.split("\\sqrt")
    pieces = [head]
    for argument in arguments:
        if not argument:
            raise _CheckerFallback
        braced = argument if argument[0] == "{" else "{" + argument[0] + "}" + argument[1:]
        pieces.append("\\sqrt" + braced)
    return "".join(pieces)


def _hendrycks_fracs(text: str) -> str:
    r"""``\frac12`` → ``\frac{1}{2}``, ``\frac1{72}`` → ``\frac{1}{72}``; a first argument in braces is left
    as written, and a ``\frac`` with fewer than two characters after it leaves the whole string as is."""
    head, *arguments = text.split("\\frac")
    pieces = [head]
    for argument in arguments:
        if not argument:
            raise _CheckerFallback
        if argument[0] == "{":
            pieces.append("\\frac" + argument)
            continue
        if len(argument) < 2:
            return text
        first, second, rest = argument[0], argument[1], argument[2:]
        pieces.append("\\frac{" + first + "}" + (second if second == "{" else "{" + second + "}") + rest)
    return "".join(pieces)


def _hendrycks_slash(text: str) -> str:
    r"""``a/b`` of two integers written plainly → ``\frac{a}{b}``; a non-integer side makes the checker fail."""
    sides = text.split("/")
    if len(sides) != 2:
        return text
    try:
        numerator, denominator = int(sides[0]), int(sides[1])
    except ValueError:
        raise _CheckerFallback from None
    if f"{numerator}/{denominator}" != text:
        return text
    return f"\\frac{{{numerator}}}{{{denominator}}}"


def _hendrycks_normal_form(answer: str) -> str:
    r"""The MATH checker's ``strip_string``: the same rewrites, in the same order, quirks included (every
    ``\left`` is dropped even inside ``\leftarrow``, everything after a ``\text{ `` is a unit)."""
    text = answer.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    text = _hendrycks_units(text).replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= _SHORT_LEFT_HAND_SIDE:
        text = sides[1]
    text = _hendrycks_fracs(_hendrycks_sqrt(text).replace(" ", ""))
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _hendrycks_slash(text)


def hendrycks_equivalent(prediction: str | None, reference: str | None) -> bool:
    r"""The MATH benchmark's checker (Hendrycks et al.'s ``is_equiv``, which the authors' ``eval_math.py``
    calls): equal after ``strip_string``, or, where that fails, equal as written. Two Nones are equal.

    >>> hendrycks_equivalent(r"\dfrac12", r"\frac{1}{2}"), hendrycks_equivalent("0.50", r"\frac12")
    (True, False)
    """
    if prediction is None or reference is None:
        return prediction is None and reference is None
    try:
        return _hendrycks_normal_form(prediction) == _hendrycks_normal_form(reference)
    except _CheckerFallback:
        return prediction == reference


def _same_value(number: int, reference: str) -> bool:
    """The authors' GSM8K comparison: ``float(prediction) == float(reference)``."""
    try:
        return float(number) == float(reference)
    except ValueError:
        return False


# ---- judging and scoring -----------------------------------------------------------------------------
class JudgedGeneration(TypedDict):
    """One generation judged both ways, as written to the predictions JSONL file."""

    reference: str
    answer_format: AnswerFormat
    extracted: str | None
    """The authors' protocol's answer (GSM8K: the rounded integer), None when it finds none."""
    correct: bool
    extracted_lenient: str | None
    correct_lenient: bool


def judge_generation(generation: str, reference: str, answer_format: AnswerFormat) -> JudgedGeneration:
    """Judges ``generation`` against the reference answer by the authors' protocol and by the lenient judge.

    ``reference`` is the final answer, not a worked solution (for GSM8K, ``extract_gsm8k_answer`` of the
    dataset's solution; for MATH, ``extract_math_answer`` of it or the dataset's answer field).

    >>> judged = judge_generation("6 + 36 = 42. So the answer is 42.", "42", "gsm8k")
    >>> judged["correct"], judged["correct_lenient"]
    (False, True)
    """
    if answer_format not in EXTRACTORS:
        raise ValueError(f"unknown answer_format {answer_format!r}; known formats: {', '.join(EXTRACTORS)}")
    paper_text = paper_judged_text(generation)
    if answer_format == "gsm8k":
        number = paper_gsm8k_answer(paper_text)
        extracted = None if number is None else str(number)
        correct = number is not None and _same_value(number, reference)
    else:
        extracted = paper_math_answer(paper_text)
        correct = extracted is not None and hendrycks_equivalent(extracted, reference)
    extracted_lenient = EXTRACTORS[answer_format](judged_text(generation))
    return JudgedGeneration(
        reference=reference,
        answer_format=answer_format,
        extracted=extracted,
        correct=correct,
        extracted_lenient=extracted_lenient,
        correct_lenient=answers_match(extracted_lenient, reference),
    )


def score_predictions(records: Sequence[JudgedGeneration]) -> dict[str, float]:
    """The maths suite's metrics of judged generations: the fraction correct and the fraction with an
    answer at all, by the authors' protocol and by the lenient judge.

    >>> score_predictions([judge_generation("The answer is: 3", "3", "gsm8k"), judge_generation("#### 5", "5", "gsm8k")])
    {'accuracy': 0.5, 'answer_rate': 0.5, 'accuracy_lenient': 1.0, 'answer_rate_lenient': 1.0}
    """
    if not records:
        raise ValueError("records is empty; accuracy needs at least one judged generation")
    count = len(records)
    return {
        "accuracy": sum(record["correct"] for record in records) / count,
        "answer_rate": sum(record["extracted"] is not None for record in records) / count,
        "accuracy_lenient": sum(record["correct_lenient"] for record in records) / count,
        "answer_rate_lenient": sum(record["extracted_lenient"] is not None for record in records) / count,
    }


def score_generations(
    generations: Sequence[str], references: Sequence[str], answer_formats: Sequence[AnswerFormat]
) -> tuple[dict[str, float], list[JudgedGeneration]]:
    """The maths suite's metrics of decoded generations, and one judged record per generation."""
    records = [
        judge_generation(generation, reference, answer_format)
        for generation, reference, answer_format in zip(generations, references, answer_formats, strict=True)
    ]
    return score_predictions(records), records
