"""The maths task families: MetaMathQA (the whole file, or seeded subsets), benchmark splits from local files, gsm_symbolic."""

from __future__ import annotations

import json
import re

import pytest

from lorma_exp.config import ConfigError
from lorma_exp.data import build_task_data
from lorma_exp.data.hub import DataLoadError
from lorma_exp.data.maths import generate_gsm_symbolic

from .maths_samples import CPU, GSM8K_ROWS, MATH_ROWS, metamathqa_rows, write_json_lines

PROBLEM_NUMBER = re.compile(r"Problem (\d+):")


def _train_problems(task, tokenizer) -> list[int]:
    """Which source rows the training split holds (each question names its row)."""
    return [int(PROBLEM_NUMBER.search(tokenizer.decode(row["input_ids"]))[1]) for row in task.train]


def _validation_problems(task) -> list[int]:
    return [int(PROBLEM_NUMBER.search(example["prompt"])[1]) for example in task.eval_splits["validation"]]


@pytest.fixture
def metamathqa_file(tmp_path):
    """A MetaMathQA-format JSON file (a list of rows, like MetaMathQA-395K.json) with 60 rows."""
    path = tmp_path / "MetaMathQA.json"
    path.write_text(json.dumps(metamathqa_rows(60)))
    return path


def _metamathqa(compose_settings, tokenizer, path, *overrides):
    settings = compose_settings("task=metamathqa", f"data.train_file={path}", *overrides)
    return build_task_data(settings, tokenizer, CPU)


def test_the_metamathqa_subset_is_the_same_for_the_same_seed_and_differs_for_another(
    compose_settings, tokenizer, metamathqa_file
):
    first = _metamathqa(compose_settings, tokenizer, metamathqa_file, "data.limit=20", "data.eval_limit=10")
    again = _metamathqa(compose_settings, tokenizer, metamathqa_file, "data.limit=20", "data.eval_limit=10")
    other = _metamathqa(
        compose_settings,
        tokenizer,
        metamathqa_file,
        "data.limit=20",
        "data.eval_limit=10",
        "data.sample_seed=1",
    )
    rows = _train_problems(first, tokenizer)
    assert len(rows) == len(set(rows)) == 20
    assert rows == _train_problems(again, tokenizer)
    assert set(rows) != set(_train_problems(other, tokenizer))
    assert _validation_problems(first) == _validation_problems(again)


def test_the_default_trains_on_every_row_of_the_authors_file(compose_settings, tokenizer, metamathqa_file):
    defaults = compose_settings("task=metamathqa")
    assert (defaults.data.dataset, defaults.data.limit) == ("meta-math/MetaMathQA-40K", None)
    task = _metamathqa(compose_settings, tokenizer, metamathqa_file, "data.eval_limit=10")
    trained = _train_problems(task, tokenizer)
    assert sorted(trained) == list(range(60))  # every row, as the authors' script trains on its file
    assert set(_validation_problems(task)) <= set(trained)  # a fit check: no row is left to hold out


def test_a_sample_of_a_larger_pool_holds_validation_out_and_it_does_not_move_as_the_sample_grows(
    compose_settings, tokenizer, metamathqa_file
):
    small = _metamathqa(compose_settings, tokenizer, metamathqa_file, "data.limit=20", "data.eval_limit=10")
    large = _metamathqa(compose_settings, tokenizer, metamathqa_file, "data.limit=50", "data.eval_limit=10")
    everything = _metamathqa(compose_settings, tokenizer, metamathqa_file, "data.eval_limit=10")
    validation = _validation_problems(small)
    assert len(validation) == 10
    assert not set(validation) & set(_train_problems(large, tokenizer))
    assert validation == _validation_problems(large) == _validation_problems(everything)
    assert set(validation) | set(_train_problems(large, tokenizer)) == set(range(60))
    assert _train_problems(large, tokenizer)[:20] == _train_problems(small, tokenizer)


def test_a_json_lines_copy_gives_the_same_subset(compose_settings, tokenizer, metamathqa_file, tmp_path):
    lines = write_json_lines(tmp_path / "MetaMathQA.jsonl", metamathqa_rows(60))
    from_json = _metamathqa(
        compose_settings, tokenizer, metamathqa_file, "data.limit=20", "data.eval_limit=10"
    )
    from_lines = _metamathqa(compose_settings, tokenizer, lines, "data.limit=20", "data.eval_limit=10")
    assert _train_problems(from_json, tokenizer) == _train_problems(from_lines, tokenizer)


def test_metamathqa_validation_judges_each_row_by_its_type(compose_settings, tokenizer, metamathqa_file):
    task = _metamathqa(compose_settings, tokenizer, metamathqa_file, "data.limit=20", "data.eval_limit=10")
    for example in task.eval_splits["validation"]:
        number = int(PROBLEM_NUMBER.search(example["prompt"])[1])
        expected = ("gsm8k", str(number + 3)) if number % 2 == 0 else ("math", f"\\frac{{{number}}}{{2}}")
        assert (example["answer_format"], example["answer"]) == expected


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["data.eval_splits=[test]"], "data.eval_splits"),
        (["data.eval_limit=null"], "data.eval_limit"),
        (["data.eval_limit=60"], "data.eval_limit"),
        (["data.text_fields=[question,response]"], "data.text_fields"),
        (["data.text_fields=[query]"], "data.text_fields"),
    ],
)
def test_bad_metamathqa_settings_fail_naming_the_field(
    compose_settings, tokenizer, metamathqa_file, overrides, field
):
    with pytest.raises(ConfigError, match=rf"^{re.escape(field)}"):
        _metamathqa(compose_settings, tokenizer, metamathqa_file, *overrides)


def test_gsm8k_from_local_files_trains_on_solutions_and_scores_the_test_file(
    compose_settings, tokenizer, tmp_path
):
    train = write_json_lines(tmp_path / "train.jsonl", GSM8K_ROWS)
    test = write_json_lines(tmp_path / "test.jsonl", GSM8K_ROWS[:2])
    settings = compose_settings("task=gsm8k", f"data.train_file={train}", f"data.test_file={test}")
    task = build_task_data(settings, tokenizer, CPU)
    assert len(task.train) == 3
    assert [example["answer"] for example in task.eval_splits["test"]] == ["72", "10"]
    first = tokenizer.decode(task.train[0]["input_ids"])
    assert "<<" not in first and first.removesuffix(tokenizer.eos_token).endswith("The answer is: 72")


def _gsm8k_test_file_fault(compose_settings, tokenizer, path) -> str:
    with pytest.raises((DataLoadError, ConfigError)) as failed:
        build_task_data(compose_settings("task=gsm8k", f"data.test_file={path}"), tokenizer, CPU)
    return str(failed.value)


def test_a_malformed_json_lines_line_in_a_maths_file_is_named(compose_settings, tokenizer, tmp_path):
    test = write_json_lines(tmp_path / "test.jsonl", GSM8K_ROWS)
    test.write_text(test.read_text().replace("}\n", "\n", 1))  # the first line loses its closing brace
    message = _gsm8k_test_file_fault(compose_settings, tokenizer, test)
    assert message.startswith(f"data.test_file: {test} line 1 is not valid JSON (")


def test_a_blank_question_in_a_maths_file_is_named(compose_settings, tokenizer, tmp_path):
    test = write_json_lines(tmp_path / "test.jsonl", [*GSM8K_ROWS[:2], {**GSM8K_ROWS[2], "question": " "}])
    assert _gsm8k_test_file_fault(compose_settings, tokenizer, test) == (
        f"data.test_file: {test} line 3, column 'question' is blank or missing. Fill it in or remove the row "
        "(data.text_fields names this column)."
    )


def test_a_maths_file_without_the_question_column_lists_its_columns(compose_settings, tokenizer, tmp_path):
    rows = [{"problem": row["question"], "answer": row["answer"]} for row in GSM8K_ROWS]
    test = write_json_lines(tmp_path / "test.jsonl", rows)
    assert _gsm8k_test_file_fault(compose_settings, tokenizer, test).startswith(
        f"data.text_fields: column 'question' is not in data.test_file={test} (its columns: ['problem', 'answer'])"
    )


def test_a_maths_file_that_is_not_utf8_is_named_by_offset(compose_settings, tokenizer, tmp_path):
    test = tmp_path / "test.jsonl"
    test.write_bytes(b'{"question": "caf\xe9?", "answer": "#### 1"}\n')
    assert _gsm8k_test_file_fault(compose_settings, tokenizer, test).startswith(
        f"data.test_file: {test} is not UTF-8: byte 0xe9 at offset 17 (line 1)"
    )


def test_a_benchmark_without_a_training_split_can_still_be_evaluated(compose_settings, tokenizer, tmp_path):
    test = write_json_lines(tmp_path / "math_test.jsonl", MATH_ROWS)
    task = build_task_data(compose_settings("task=math", f"data.test_file={test}"), tokenizer, CPU)
    assert len(task.train) == 0
    assert [example["answer"] for example in task.eval_splits["test"]] == ["\\frac{3}{4}", "5"]


def test_math_takes_the_answer_column_when_configured(compose_settings, tokenizer, tmp_path):
    rows = [{**row, "answer": answer} for row, answer in zip(MATH_ROWS, ["0.75", "5"], strict=True)]
    test = write_json_lines(tmp_path / "math500.jsonl", rows)
    settings = compose_settings("task=math", f"data.test_file={test}", "data.label_field=answer")
    task = build_task_data(settings, tokenizer, CPU)
    assert [example["answer"] for example in task.eval_splits["test"]] == ["0.75", "5"]


def test_eval_limit_draws_a_seeded_subset_of_the_test_split(compose_settings, tokenizer, tmp_path):
    rows = [
        {"question": f"Item {i}: 1 + {i}?", "answer": f"1 + {i} = {i + 1}\n#### {i + 1}"} for i in range(30)
    ]
    test = write_json_lines(tmp_path / "test.jsonl", rows)
    pick = ["task=gsm8k", f"data.test_file={test}", "data.eval_limit=8"]
    first = build_task_data(compose_settings(*pick), tokenizer, CPU).eval_splits["test"]
    again = build_task_data(compose_settings(*pick), tokenizer, CPU).eval_splits["test"]
    assert len(first) == 8
    assert [e["prompt"] for e in first] == [e["prompt"] for e in again]


def test_a_missing_evaluation_split_is_named(compose_settings, tokenizer, tmp_path):
    train = write_json_lines(tmp_path / "train.jsonl", GSM8K_ROWS)
    with pytest.raises(ConfigError, match=r"^data.eval_splits: \['test'\] not in"):
        build_task_data(compose_settings("task=gsm8k", f"data.train_file={train}"), tokenizer, CPU)


def test_gsm_symbolic_holds_out_the_same_problems_whatever_the_training_size(compose_settings, tokenizer):
    small = build_task_data(
        compose_settings("task=gsm_symbolic", "data.num_examples=8", "data.eval_limit=4"), tokenizer, CPU
    )
    large = build_task_data(
        compose_settings("task=gsm_symbolic", "data.num_examples=24", "data.eval_limit=4"), tokenizer, CPU
    )
    held_out = [example["prompt"] for example in small.eval_splits["validation"]]
    assert held_out == [example["prompt"] for example in large.eval_splits["validation"]]
    assert len(small.train) == 8 and len(large.train) == 24
    training_text = [tokenizer.decode(row["input_ids"]) for row in large.train]
    assert not any(prompt in text for prompt in held_out for text in training_text)


def test_gsm_symbolic_solutions_end_in_the_items_own_answer() -> None:
    for row in generate_gsm_symbolic(20, seed=3):
        assert row["solution"].rstrip().endswith(f"#### {row['answer']}")
