"""Prompt format, loss masking, solution rewriting and scoring of the maths tasks."""

from __future__ import annotations

import datasets

from lorma_exp.data.base import IGNORE_INDEX
from lorma_exp.data.maths import (
    Columns,
    MathProblem,
    encode_training_rows,
    evaluation_example,
    format_prompt,
    format_training_prompt,
    gsm8k_solution,
    parse_competition_math,
    parse_gsm8k,
    parse_metamathqa,
    score_math,
    training_target,
)
from lorma_exp.metrics.math import judged_text

from .maths_samples import GSM8K_ROWS, MATH_ROWS, metamathqa_rows

# MetaMath's eval_gsm8k.py / eval_math.py prompt (github.com/meta-math/MetaMath), which the paper's Table 4
# evaluation uses: the instruction goes where {instruction} is.
METAMATH_EVAL_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response: Let's think step by step."
)
METAMATHQA_COLUMNS = Columns("query", "response", None)


def test_the_prompt_is_metamaths_evaluation_prompt() -> None:
    question = "What is 6 times 7?"
    assert format_prompt(question) == METAMATH_EVAL_PROMPT.format(instruction=question)


# The authors' train_math_lorma.py (Alpaca's PROMPT_DICT): a query's first line is the instruction, its
# other lines the input; the response follows "### Response:" directly.
AUTHORS_TRAINING_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)
AUTHORS_TRAINING_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n### Response:"
)


def test_the_training_prompt_is_the_authors() -> None:
    assert format_training_prompt("What is 6 times 7?") == AUTHORS_TRAINING_PROMPT.format(
        instruction="What is 6 times 7?"
    )
    question = "Solve for x.\n2x + 3 = 7\nGive x."
    assert format_training_prompt(question) == AUTHORS_TRAINING_PROMPT_WITH_INPUT.format(
        instruction="Solve for x.", input="2x + 3 = 7\nGive x."
    )


def test_only_the_solution_and_end_of_sequence_carry_loss(tokenizer) -> None:
    row = metamathqa_rows(1)[0]
    encoded = encode_training_rows(
        datasets.Dataset.from_list([row]), parse_metamathqa, METAMATHQA_COLUMNS, tokenizer, max_length=512
    )[0]
    prompt_length = len(tokenizer(format_training_prompt(row["query"]))["input_ids"])
    labels, input_ids = encoded["labels"], encoded["input_ids"]
    assert labels[:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert IGNORE_INDEX not in labels[prompt_length:]
    assert labels[prompt_length:] == input_ids[prompt_length:]
    assert input_ids[-1] == tokenizer.eos_token_id
    learned = tokenizer.decode(labels[prompt_length:-1])
    assert learned == row["response"]
    assert tokenizer.decode(input_ids[:prompt_length]).endswith("### Response:")


def test_training_rows_are_truncated_at_max_length(tokenizer) -> None:
    row = dict(metamathqa_rows(1)[0], response="Count: " + " one" * 600 + "\nThe answer is: 3")
    encoded = encode_training_rows(
        datasets.Dataset.from_list([row]), parse_metamathqa, METAMATHQA_COLUMNS, tokenizer, max_length=512
    )[0]
    assert len(encoded["input_ids"]) == len(encoded["labels"]) == 512


def test_gsm8k_solutions_drop_calculator_notes_and_end_in_the_answer_sentence() -> None:
    solution, answer = gsm8k_solution(GSM8K_ROWS[0]["answer"])
    assert solution == "In May she sold 48/2 = 24 clips.\nIn total 48+24 = 72 clips.\nThe answer is: 72"
    assert answer == "72"
    solution, answer = gsm8k_solution(GSM8K_ROWS[2]["answer"])
    assert (solution.splitlines()[-1], answer) == ("The answer is: 1500", "1500")


def test_each_source_gives_its_reference_answer_and_format() -> None:
    gsm8k = parse_gsm8k(GSM8K_ROWS[1], Columns("question", "answer", None))
    assert (gsm8k.answer, gsm8k.answer_format) == ("10", "gsm8k")
    math = parse_competition_math(MATH_ROWS[0], Columns("problem", "solution", None))
    assert (math.answer, math.answer_format) == ("\\frac{3}{4}", "math")
    assert math.solution.endswith("\\boxed{\\frac{3}{4}}$.\nThe answer is: \\frac{3}{4}")
    with_answer_column = parse_competition_math(
        {**MATH_ROWS[1], "answer": "5"}, Columns("problem", "solution", "answer")
    )
    assert with_answer_column.answer == "5"
    gsm_row, math_row = metamathqa_rows(2)
    assert parse_metamathqa(gsm_row, METAMATHQA_COLUMNS).answer_format == "gsm8k"
    assert parse_metamathqa(gsm_row, METAMATHQA_COLUMNS).answer == "3"
    assert parse_metamathqa(math_row, METAMATHQA_COLUMNS).answer_format == "math"
    assert parse_metamathqa(math_row, METAMATHQA_COLUMNS).answer == "\\frac{1}{2}"


def test_a_generation_is_judged_up_to_where_it_starts_a_new_prompt_block() -> None:
    generation = "2 + 2 = 4.\nThe answer is: 4\n\n### Instruction:\nWhat is 5 + 5?\n\n### Response: 10"
    assert judged_text(generation) == "2 + 2 = 4.\nThe answer is: 4"
    assert judged_text("So 6 + 36 = 42.\n#### 42") == "So 6 + 36 = 42.\n#### 42"  # GSM8K's own marker stays


def test_scoring_judges_each_example_in_its_format_both_ways() -> None:
    examples = [
        evaluation_example("a", MathProblem("q", "s", "72", "gsm8k")),
        evaluation_example("b", MathProblem("q", "s", "\\frac{3}{4}", "math")),
        evaluation_example("c", MathProblem("q", "s", "10", "gsm8k")),
        evaluation_example("d", MathProblem("q", "s", "5", "math")),
    ]
    hypotheses = [
        "48 + 24 = 72 clips.\nThe answer is: 72",  # right both ways
        "So it is $\\boxed{0.75}$.",  # lenient only: no answer sentence; 0.75 = 3/4
        "She earns 12 dollars.\n### Instruction: 10 more",  # wrong: 10 is in the invented next problem
        "I do not know.",  # no answer at all
    ]
    metrics, records = score_math(hypotheses, examples)
    assert metrics == {
        "accuracy": 1 / 4,
        "answer_rate": 1 / 4,
        "accuracy_lenient": 2 / 4,
        "answer_rate_lenient": 3 / 4,
    }
    assert [record["correct"] for record in records] == [True, False, False, False]
    assert [record["correct_lenient"] for record in records] == [True, True, False, False]
    assert [record["extracted_lenient"] for record in records] == ["72", "0.75", "12", None]
    assert [record["answer_format"] for record in records] == ["gsm8k", "math", "gsm8k", "math"]


def test_an_evaluation_example_prompts_with_the_question_and_keeps_the_reference() -> None:
    problem = MathProblem("What is 1 + 1?", "1 + 1 = 2.\nThe answer is: 2", "2", "gsm8k")
    example = evaluation_example("test-0", problem)
    assert example["prompt"] == format_prompt(problem.question)
    assert example["target"] == training_target(problem)
    assert example["references"] == ["2"]
