"""The user's own files (task=text_classification, maths files): every data fault is one line, exit 2,
naming the field, the file, the line and the column, before the model is loaded; string labels keep
their ids from training to eval.py through the run folder's labels.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lorma_exp import pipeline
from lorma_exp.run_folder import LABELS_FILE

from .helpers import eval_scores

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
GOOD_ROWS = [("a wonderful little film", "1"), ("dull and far too long", "0")] * 8


def _csv(path: Path, rows, header: str = "text,label") -> Path:
    path.write_text(
        "\n".join([header, *(f'"{text}",{label}' for text, label in rows)]) + "\n", encoding="utf-8"
    )
    return path


def _jsonl(path: Path, rows) -> Path:
    lines = [json.dumps({"text": text, "label": label}) for text, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def run_on(compose_train, tiny_run_overrides, monkeypatch, capsys):
    """Trains text_classification on the given files with the model's loading forbidden; returns the one
    stderr line of the refusal (after checking exit status 2)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before the data fault was reported")

    monkeypatch.setattr(pipeline, "load_backbone", forbidden)

    def run(train: Path, validation: Path, *overrides: str) -> str:
        cfg = compose_train(
            *tiny_run_overrides,
            "task=text_classification",
            f"data.train_file={train}",
            f"data.validation_file={validation}",
            *overrides,
        )
        with pytest.raises(SystemExit) as failed:
            pipeline.train(cfg)
        assert failed.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1
        return errors[0]

    return run


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_missing_column_lists_the_columns_the_file_has(run_on, tmp_path, suffix) -> None:
    write = _csv if suffix == ".csv" else _jsonl
    train = write(tmp_path / f"train{suffix}", GOOD_ROWS)
    message = run_on(train, train, "data.text_fields=[review]")
    assert message == (
        f"error: data.text_fields: column 'review' is not in data.train_file={train} (its columns: "
        "['text', 'label']). Set data.text_fields to one of those, or fix the file."
    )
    message = run_on(train, train, "data.label_field=sentiment")
    assert message.startswith("error: data.label_field: column 'sentiment' is not in data.train_file=")


def test_a_validation_file_without_a_used_column_is_named(run_on, tmp_path) -> None:
    train = _csv(tmp_path / "train.csv", GOOD_ROWS)
    validation = _csv(tmp_path / "dev.csv", GOOD_ROWS, header="review,label")
    message = run_on(train, validation)
    assert message.startswith(
        f"error: data.text_fields: column 'text' is not in data.validation_file={validation}"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty. Give a file with a header and at least one row."),
        (b"\n  \n", "is empty. Give a file with a header and at least one row."),
        (b"text,label\n", "has a header but no rows. Add at least one row."),
    ],
    ids=["empty", "blank", "header-only"],
)
def test_an_empty_or_header_only_file_is_refused(run_on, tmp_path, content, expected) -> None:
    train = tmp_path / "train.csv"
    train.write_bytes(content)
    validation = _csv(tmp_path / "dev.csv", GOOD_ROWS)
    assert run_on(train, validation) == f"error: data.train_file: {train} {expected}"


def test_a_blank_text_cell_names_its_line(run_on, tmp_path) -> None:
    train = _csv(tmp_path / "train.csv", [*GOOD_ROWS[:3], ("  ", "1"), *GOOD_ROWS[3:]])
    message = run_on(train, train)
    assert message == (
        f"error: data.train_file: {train} line 5, column 'text' is blank or missing. Fill it in or remove "
        "the row (data.text_fields names this column)."
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_blank_label_names_its_line_instead_of_becoming_a_class(run_on, tmp_path, suffix) -> None:
    rows = [*GOOD_ROWS[:6], ("an empty label", ""), *GOOD_ROWS[6:]]
    train = (_csv if suffix == ".csv" else _jsonl)(tmp_path / f"train{suffix}", rows)
    message = run_on(train, _csv(tmp_path / "dev.csv", GOOD_ROWS))
    line = 8 if suffix == ".csv" else 7
    assert message == (
        f"error: data.train_file: {train} line {line}, column 'label' is blank or missing. Fill it in or "
        "remove the row (data.label_field names this column)."
    )


def test_an_integer_label_outside_the_classes_is_refused(run_on, tmp_path) -> None:
    # Before, label 5 with task.num_labels=2 silently became class 1.
    train = _csv(tmp_path / "train.csv", [*GOOD_ROWS, ("a five", "5")])
    message = run_on(train, _csv(tmp_path / "dev.csv", GOOD_ROWS))
    assert message == (
        f"error: data.train_file: {train} line 18, column 'label' is '5', not a class id in 0..1 "
        "(task.num_labels=2). Fix the label, or set task.num_labels."
    )


def test_non_utf8_bytes_are_named_by_offset(run_on, tmp_path) -> None:
    train = tmp_path / "train.csv"
    train.write_bytes(b"text,label\ncaf\xe9 au lait,1\ngood,0\n")
    message = run_on(train, _csv(tmp_path / "dev.csv", GOOD_ROWS))
    assert message == (
        f"error: data.train_file: {train} is not UTF-8: byte 0xe9 at offset 14 (line 2) cannot be decoded. "
        "Save the file as UTF-8."
    )


def test_a_malformed_json_lines_line_is_named(run_on, tmp_path) -> None:
    train = _jsonl(tmp_path / "train.jsonl", GOOD_ROWS)
    lines = train.read_text(encoding="utf-8").splitlines()
    lines[3] = '{"text": "unterminated, "label": 1}'
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = run_on(train, _jsonl(tmp_path / "dev.jsonl", GOOD_ROWS))
    assert message.startswith(f"error: data.train_file: {train} line 4 is not valid JSON (")
    assert message.endswith("Each line of a JSON Lines file must be one JSON object.")


def test_validation_columns_may_differ_where_they_are_not_used(compose_train, tiny_run_overrides, tmp_path):
    train = _csv(tmp_path / "train.csv", GOOD_ROWS)
    validation = tmp_path / "dev.jsonl"
    rows = [
        json.dumps({"id": index, "label": int(label), "text": text})
        for index, (text, label) in enumerate(GOOD_ROWS)
    ]
    validation.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = compose_train(
        *tiny_run_overrides,
        "task=text_classification",
        f"data.train_file={train}",
        f"data.validation_file={validation}",
        "trainer.max_steps=1",
    )
    record = pipeline.train(cfg)
    assert set(record["final"]["metrics"]) == {"accuracy", "macro_f1"}


def test_string_labels_keep_their_ids_from_training_to_eval(compose_train, tiny_run_overrides, tmp_path):
    names = ["negative", "positive"]
    words = ["awful dreadful boring", "wonderful moving brilliant"]
    rows = [(f"{words[index % 2]} review {index}", names[index % 2]) for index in range(24)]
    train = _csv(tmp_path / "train.csv", rows)
    validation = _csv(tmp_path / "dev.csv", rows[:8])
    cfg = compose_train(
        *tiny_run_overrides,
        "task=text_classification",
        f"data.train_file={train}",
        f"data.validation_file={validation}",
        "trainer.max_steps=30",
        "trainer.lr=5e-2",
        "trainer.eval_before_training=true",
    )
    record = pipeline.train(cfg)
    # training moved the scores, so an evaluation that forgot the trained weights could not match them
    assert record["final"]["metrics"] != record["initial"]["metrics"]
    run_dir = Path(cfg.run_dir)
    assert json.loads((run_dir / LABELS_FILE).read_text()) == names
    # The training file changes afterwards: "negative" is gone, so reading its labels again would give
    # "positive" id 0 (or refuse the run). eval.py must score with the training ids, from labels.json.
    _csv(train, [row for row in rows if row[1] != "negative"])
    with initialize_config_dir(config_dir=str(CONF_DIR / "eval"), version_base="1.3"):
        eval_cfg = compose("eval", overrides=[f"run_dir={run_dir}"])
    scores = pipeline.evaluate(eval_cfg)
    assert scores["validation"] == pytest.approx(eval_scores(run_dir, record))


def test_data_labels_fixes_the_class_order(compose_train, tiny_run_overrides, tmp_path):
    rows = [(f"review number {index}", ["bad", "good"][index % 2]) for index in range(16)]
    train = _csv(tmp_path / "train.csv", rows)
    cfg = compose_train(
        *tiny_run_overrides,
        "task=text_classification",
        f"data.train_file={train}",
        f"data.validation_file={train}",
        "data.labels=[good,bad]",
        "trainer.max_steps=1",
    )
    pipeline.train(cfg)
    assert json.loads((Path(cfg.run_dir) / LABELS_FILE).read_text()) == ["good", "bad"]


def test_a_label_outside_data_labels_is_named(run_on, tmp_path) -> None:
    train = _csv(tmp_path / "train.csv", [("fine", "good"), ("awful", "bad"), ("meh", "okay")])
    message = run_on(train, train, "data.labels=[good,bad]")
    assert message == (
        f"error: data.train_file: {train} line 4, column 'label' is 'okay', not one of the classes "
        "['good', 'bad']. Fix the label, or list every class in data.labels."
    )
