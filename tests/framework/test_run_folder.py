"""The run-folder contract: run_folder.py is the one module that names a run folder's files, and a run's
folder and files are named after what its method has."""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import pytest

from lorma_exp import run_folder
from lorma_exp.run_folder import RunFolder, is_final_weights, prediction_files

SRC = Path(run_folder.__file__).resolve().parent
FILE_NAMES = {
    run_folder.CONFIG_FILE,
    run_folder.TRAIN_LOG,
    run_folder.METRICS_FILE,
    run_folder.METRICS_CSV,
    run_folder.RESULTS_FILE,
    run_folder.LOSS_CURVE,
    run_folder.WANDB_ID_FILE,
    run_folder.CHECKPOINT_STATE,
    run_folder.EVALUATION_RECORD,
    run_folder.LOCK_FILE,
}
FOLDER_NAMES = {
    run_folder.CHECKPOINTS_DIR,
    run_folder.SNAPSHOTS_DIR,
    run_folder.PREDICTIONS_DIR,
    run_folder.EVALUATIONS_DIR,
}


def _documentation(tree: ast.AST) -> set[int]:
    """Strings standing alone as statements: docstrings, and the comments under constants."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def _path_operands(tree: ast.AST) -> set[int]:
    """Strings joined onto a path (``folder / "name"``)."""
    return {
        id(operand)
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
        for operand in (node.left, node.right)
    }


def _names_a_run_file(text: str, joined_onto_a_path: bool = False) -> bool:
    """A run folder's file name anywhere in ``text``, or one of its folders as a path piece."""
    tokens = [token.rstrip(".,;:!?") for token in re.split(r"[\s/()'\"`{}\[\]*]+", text)]
    if any(token in FILE_NAMES or token.endswith(run_folder.HYPOTHESES_SUFFIX) for token in tokens if token):
        return True
    segments = [segment for segment in text.split("/") if segment]
    return (joined_onto_a_path or len(segments) > 1) and any(s in FOLDER_NAMES for s in segments)


def test_run_folder_is_the_only_module_spelling_run_folder_file_names():
    """Every string in src/ except documentation: a run folder's file names come from run_folder.py."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "run_folder.py":
            continue
        tree = ast.parse(path.read_text())
        skipped, joined = _documentation(tree), _path_operands(tree)
        for node in ast.walk(tree):
            is_code_string = (
                isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped
            )
            if is_code_string and _names_a_run_file(node.value, joined_onto_a_path=id(node) in joined):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not offenders, "\n".join(offenders)


def test_the_file_name_check_catches_a_spelled_name():
    assert _names_a_run_file("results.json")
    assert _names_a_run_file("run_dir: has no config.yaml.")
    assert _names_a_run_file("*/metrics.json")
    assert _names_a_run_file("checkpoints/last")
    assert _names_a_run_file("evals", joined_onto_a_path=True)
    assert _names_a_run_file(".hyp.txt")
    assert not _names_a_run_file("evals")  # a word in a message, not a path
    assert not _names_a_run_file("resume from the last checkpoint")


def test_paths_of_a_run_folder(tmp_path):
    run = RunFolder(tmp_path)
    assert run.weights("model") == tmp_path / "model"
    assert run.best_weights("model") == tmp_path / "model_best"
    assert run.best_weights("adapter") == tmp_path / "adapter_best"
    assert run.snapshot(3) == tmp_path / "snapshots" / "epoch_3"
    assert run.checkpoint_state == tmp_path / "checkpoints" / "last" / "state.pt"
    assert run.evaluation("2026-01-01_00-00-00_00001") == tmp_path / "evals" / "2026-01-01_00-00-00_00001"
    assert prediction_files(tmp_path, "test") == (tmp_path / "test.hyp.txt", tmp_path / "test.jsonl")


def test_saved_weights_lists_the_methods_folders_and_the_snapshots(tmp_path):
    run = RunFolder(tmp_path)
    for folder in (run.weights("model"), run.best_weights("model"), run.snapshot(2), run.snapshot(10)):
        folder.mkdir(parents=True)
    (tmp_path / "snapshots" / "not_a_snapshot").mkdir()
    assert run.saved_weights("model") == ["model", "model_best", "snapshots/epoch_2", "snapshots/epoch_10"]
    assert run.saved_weights("adapter") == ["snapshots/epoch_2", "snapshots/epoch_10"]


@pytest.mark.parametrize(
    ("weights", "final"),
    [("adapter", True), ("model", True), ("adapter_best", False), ("model_best", False),
     ("snapshots/epoch_1", False), (None, False)],
)  # fmt: skip
def test_the_end_of_training_weights_are_told_apart(weights, final):
    assert is_final_weights(weights) is final


def test_events_name_a_line_that_is_not_json_and_drop_a_half_written_last_line(tmp_path, caplog):
    run = RunFolder(tmp_path)
    assert run.read_events() == []
    run.metrics.write_text('{"event": "train", "step": 1}\n\n{"event": \n{"event": "train", "step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:3: not a JSON object"):
        run.read_events()
    run.metrics.write_text('{"event": "train", "step": 1}\n{"event": "train", "st')  # a kill mid-write
    assert run.read_events() == [{"event": "train", "step": 1}]
    assert "metrics.jsonl:2: dropped a half-written last line" in caplog.text


def test_records_are_strict_json_and_read_back_with_their_non_finite_numbers(tmp_path):
    run = RunFolder(tmp_path)
    record = {"final": {"metrics": {"pearson": float("nan"), "mse": 0.5}}, "losses": [1.0, float("-inf")]}
    run.write_results(record)
    written = json.loads(run.results.read_text(), parse_constant=lambda constant: pytest.fail(constant))
    assert written["final"]["metrics"]["pearson"] is None and written["losses"] == [1.0, None]
    assert written["nonfinite"] == {"final.metrics.pearson": "nan", "losses.1": "-inf"}
    restored = run.read_results()
    assert math.isnan(restored["final"]["metrics"]["pearson"]) and restored["losses"][1] == float("-inf")
    assert "nonfinite" not in restored
