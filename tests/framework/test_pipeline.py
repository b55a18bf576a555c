"""Training runs end to end in-process on a tiny backbone: every method, resume, run folders, eval."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lorma_exp import pipeline
from lorma_exp.config import EvalConfig, load_run_settings
from lorma_exp.data import build_task_data, restore_label_names
from lorma_exp.data.base import TaskData
from lorma_exp.data.classification import PaddingCollator
from lorma_exp.distributed import init_distributed
from lorma_exp.methods import method_for
from lorma_exp.models import load_backbone, load_tokenizer
from lorma_exp.run_folder import RunFolder

from .helpers import comparable, eval_scores, interrupting_collate

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

METHOD_CASES = [
    ("lorma_plus", "pre"),
    ("lorma_plus", "post"),
    ("lorma_pi", "pre"),
    ("lorma_pi", "post"),
    ("lorma_none", "pre"),
    ("lora", "pre"),
    ("full_ft", "pre"),
    ("peft_lora", "pre"),
    ("peft_dora", "pre"),
]


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize(("method", "mode"), METHOD_CASES)
def test_each_method_trains_and_writes_a_complete_run_folder(compose_train, tiny_run_overrides, method, mode):
    cfg = compose_train(*tiny_run_overrides, f"method={method}", f"mode={mode}", "trainer.epochs=1")
    record = pipeline.train(cfg)
    run_dir = Path(cfg.run_dir)
    assert record == _results(run_dir)
    assert record["method"] == method
    final = record["final"]["metrics"]
    assert set(final) == {"accuracy", "f1"} and all(math.isfinite(v) for v in final.values())
    events = RunFolder(run_dir).read_events()
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert any(e["event"] == "eval" and e["step"] == 0 for e in events)  # the untrained model, for reference
    for name in ("config.yaml", "metrics.csv", "loss_curve.png", method_for(record["kind"]).weights_name):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "checkpoints").exists()  # resume state is removed once the run has finished
    counts = record["trainable_params"]
    assert counts["total"] == counts["adapter"] + counts["head"] + counts["other"] > 0
    if method == "full_ft":
        assert counts["adapter"] == 0 and counts["other"] > 0
    else:
        assert counts["adapter"] > 0 and counts["head"] > 0


def test_an_interrupted_run_resumes_to_the_same_result(
    compose_train, dropout_run_overrides, tmp_path, monkeypatch
):
    common = [*dropout_run_overrides, "trainer.epochs=3"]
    straight = compose_train(*common, f"run_dir={tmp_path / 'straight'}")
    expected = pipeline.train(straight)

    resumed_dir = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(PaddingCollator, "__call__", interrupting_collate(after_calls=17))
        with pytest.raises(SystemExit) as stopped:
            pipeline.train(compose_train(*common, f"run_dir={resumed_dir}"))
    assert stopped.value.code == 130
    assert (resumed_dir / "checkpoints" / "last" / "state.pt").exists()
    assert not (resumed_dir / "results.json").exists()

    with pytest.raises(SystemExit) as refused:  # an unfinished run is never silently restarted
        pipeline.train(compose_train(*common, f"run_dir={resumed_dir}"))
    assert refused.value.code == 2

    resumed = pipeline.train(compose_train(*common, f"run_dir={resumed_dir}", "resume=true"))
    assert resumed["train"]["resumed_from_step"] > 0
    for key in ("best", "final", "initial"):
        assert resumed[key] == expected[key]
    assert resumed["train"]["final_loss"] == pytest.approx(expected["train"]["final_loss"], rel=1e-6)
    assert comparable(RunFolder(resumed_dir).read_events()) == comparable(
        RunFolder(tmp_path / "straight").read_events()
    )


def test_a_finished_run_is_never_overwritten_and_can_be_skipped(compose_train, tiny_run_overrides):
    cfg = compose_train(*tiny_run_overrides, "trainer.max_steps=2")
    pipeline.train(cfg)
    before = (Path(cfg.run_dir) / "results.json").read_text()
    with pytest.raises(SystemExit) as refused:
        pipeline.train(cfg)
    assert refused.value.code == 2
    assert (
        pipeline.train(compose_train(*tiny_run_overrides, "trainer.max_steps=2", "skip_finished=true"))
        is None
    )
    assert (Path(cfg.run_dir) / "results.json").read_text() == before


def test_eval_reproduces_the_runs_final_metrics_from_the_saved_adapter(compose_train, tiny_run_overrides):
    cfg = compose_train(*tiny_run_overrides, "trainer.epochs=1")
    record = pipeline.train(cfg)
    with initialize_config_dir(config_dir=str(CONF_DIR / "eval"), version_base="1.3"):
        eval_cfg = compose("eval", overrides=[f"run_dir={cfg.run_dir}"])
    scores = pipeline.evaluate(eval_cfg)
    assert scores["validation"] == pytest.approx(eval_scores(Path(cfg.run_dir), record))
    written = list(Path(cfg.run_dir).glob("evals/*/metrics.json"))
    assert len(written) == 1
    assert json.loads(written[0].read_text())["splits"]["validation"] == pytest.approx(scores["validation"])


def test_text_classification_trains_on_the_users_csv_files(compose_train, tiny_run_overrides, tmp_path):
    rows = [
        ("a wonderful little film", "pos"),
        ("dull and far too long", "neg"),
        ("a joy to watch", "pos"),
        ("i want my money back", "neg"),
    ] * 6
    for name, part in (("train.csv", rows), ("dev.csv", rows[:8])):
        lines = ["review,sentiment", *(f'"{text}",{label}' for text, label in part)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    cfg = compose_train(
        *tiny_run_overrides,
        "task=text_classification",
        f"data.train_file={tmp_path / 'train.csv'}",
        f"data.validation_file={tmp_path / 'dev.csv'}",
        "data.text_fields=[review]",
        "data.label_field=sentiment",
        "trainer.epochs=1",
    )
    record = pipeline.train(cfg)
    assert record["task"] == "text_classification"
    assert 0.0 <= record["final"]["metrics"]["accuracy"] <= 1.0


def test_text_classification_names_a_missing_column(compose_train, tiny_run_overrides, tmp_path):
    (tmp_path / "train.csv").write_text("review,label\ngood,1\nbad,0\n")
    cfg = compose_train(
        *tiny_run_overrides,
        "task=text_classification",
        f"data.train_file={tmp_path / 'train.csv'}",
        f"data.validation_file={tmp_path / 'train.csv'}",
        "data.text_fields=[text]",
    )
    with pytest.raises(SystemExit) as failed:
        pipeline.train(cfg)
    assert failed.value.code == 2


def _saved_model_and_task(run_dir: Path) -> tuple[torch.nn.Module, TaskData]:
    """The run's final weights loaded back (eval mode) and its task data rebuilt from its config."""
    settings = load_run_settings(run_dir, EvalConfig(run_dir=str(run_dir)))
    restore_label_names(settings, RunFolder(run_dir))
    task = build_task_data(
        settings, load_tokenizer(settings.model, settings.task.problem), init_distributed("cpu")
    )
    method = method_for(settings.method.kind)

    def backbone(name_or_path: str | None) -> torch.nn.Module:
        return load_backbone(settings.model, settings.task.problem, settings.task.num_labels)

    model = method.load(run_dir / method.weights_name, backbone, settings.model.name_or_path).eval()
    return model, task


def _logits_and_labels(
    model: torch.nn.Module, task: TaskData, rows: list
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits on ``rows`` (in batches of 16) and their labels."""
    logits, labels = [], []
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            batch = task.collate(rows[start : start + 16])
            labels.append(batch.pop("labels"))
            logits.append(model(**batch).logits)
    return torch.cat(logits), torch.cat(labels)


def _accuracy_on_training_rows(run_dir: Path) -> float:
    """The saved adapter's accuracy on the run's training rows, computed by hand (not by the evaluator):
    the task data rebuilt from the run's config, the model loaded back, argmax against the labels."""
    model, task = _saved_model_and_task(run_dir)
    logits, labels = _logits_and_labels(model, task, list(task.train))
    return float((logits.argmax(-1) == labels).double().mean())


def test_eval_train_scores_the_training_rows_at_every_evaluation(compose_train, tiny_run_overrides):
    """Figure 8's training accuracy: the training rows scored in eval mode at each evaluation, logged as an
    eval event of split ``train``; the last equals the saved adapter's accuracy on them, counted by hand."""
    cfg = compose_train(*tiny_run_overrides, "trainer.eval_train=true")
    record = pipeline.train(cfg)
    events = RunFolder(Path(cfg.run_dir)).read_events()
    evaluated = [(e["step"], e["split"]) for e in events if e["event"] == "eval"]
    steps = sorted({step for step, _ in evaluated})
    assert len(steps) == 3  # before training and after each of the 2 epochs
    assert evaluated == [(step, split) for step in steps for split in ("validation", "train")]
    final = record["final"]["metrics"]
    assert {"accuracy", "train/accuracy", "train/f1"} <= set(final)
    assert final["train/accuracy"] == pytest.approx(_accuracy_on_training_rows(Path(cfg.run_dir)))


def test_evaluations_log_the_mean_cross_entropy_of_the_model_on_each_split(compose_train, tiny_run_overrides):
    """The eval loss of the last evaluation equals the cross-entropy of the saved model's logits, computed
    here in float64 over every row of the split (the validation rows, and the training rows with
    eval_train)."""
    cfg = compose_train(*tiny_run_overrides, "trainer.eval_train=true")
    pipeline.train(cfg)
    run_dir = Path(cfg.run_dir)
    events = RunFolder(run_dir).read_events()
    last_step = max(e["step"] for e in events)
    logged = {e["split"]: e["loss"] for e in events if e["event"] == "eval" and e["step"] == last_step}
    model, task = _saved_model_and_task(run_dir)
    for split, rows in (("validation", task.eval_splits["validation"]), ("train", task.train)):
        logits, labels = _logits_and_labels(model, task, list(rows))
        expected = torch.nn.functional.cross_entropy(logits.double(), labels).item()
        assert logged[split] == pytest.approx(expected, rel=1e-5)


def test_eval_train_is_refused_for_generation_tasks(compose_train, tiny_run_overrides):
    cfg = compose_train(
        *tiny_run_overrides, "task=restaurants", "model=smollm2_135m", "trainer.eval_train=true"
    )
    with pytest.raises(SystemExit) as refused:
        pipeline.train(cfg)
    assert refused.value.code == 2
