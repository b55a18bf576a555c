"""Resuming with the run's config of record, through train.py as users type it: differing overrides are
refused with each key listed, a refused run leaves the folder byte for byte as it was, there must be a run
to resume, and a run's length changes only when the result stays exact."""

from __future__ import annotations

import logging

import pytest

from lorma_exp import pipeline
from lorma_exp.data.classification import PaddingCollator
from lorma_exp.models import load_backbone
from lorma_exp.run_folder import RunFolder

from .helpers import comparable, folder_snapshot, interrupting_collate, run_entry


def _interrupted(compose_train, overrides: list[str], monkeypatch, after_calls: int = 9) -> None:
    """Run ``overrides`` until a Ctrl-C after ``after_calls`` batches (a checkpoint is written)."""
    with monkeypatch.context() as patch:
        patch.setattr(PaddingCollator, "__call__", interrupting_collate(after_calls))
        with pytest.raises(SystemExit) as stopped:
            pipeline.train(compose_train(*overrides))
    assert stopped.value.code == 130


def test_resume_true_alone_continues_with_the_runs_own_config_and_refuses_other_settings(
    compose_train, dropout_run_overrides, tmp_path, monkeypatch
):
    straight = pipeline.train(compose_train(*dropout_run_overrides, f"run_dir={tmp_path / 'straight'}"))
    run_dir = tmp_path / "run"
    _interrupted(compose_train, [*dropout_run_overrides, f"run_dir={run_dir}"], monkeypatch)
    before = folder_snapshot(run_dir)

    refused = run_entry("train.py", "resume=true", f"run_dir={run_dir}", "trainer.lr=0.01", "method=lora")
    assert refused.returncode == 2, refused.stderr[-3000:]
    message = refused.stderr.strip().splitlines()[-1]
    assert "trainer.lr: 0.002 → 0.01" in message
    assert "method.name: lorma_plus → lora" in message and "method.kind: lorma → lora" in message
    assert "Traceback" not in refused.stderr
    assert folder_snapshot(run_dir) == before

    resumed = run_entry("train.py", "resume=true", f"run_dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = RunFolder(run_dir).read_results()
    assert record["train"]["resumed_from_step"] > 0
    for key in ("best", "final", "initial"):
        assert record[key] == straight[key]
    assert comparable(RunFolder(run_dir).read_events()) == comparable(
        RunFolder(tmp_path / "straight").read_events()
    )


def test_a_refused_run_leaves_a_finished_run_folder_byte_for_byte_as_it_was(
    compose_train, tiny_run_overrides, tmp_path
):
    run_dir = tmp_path / "run"
    pipeline.train(compose_train(*tiny_run_overrides, "trainer.max_steps=2"))
    before = folder_snapshot(run_dir)
    refused = run_entry("train.py", *tiny_run_overrides, "trainer.max_steps=2", "trainer.lr=0.01")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "already holds a finished run" in refused.stderr
    assert folder_snapshot(run_dir) == before


def test_resume_of_a_missing_run_dir_exits_2_naming_it_before_anything_is_created(tmp_path):
    run_dir = tmp_path / "no_run"
    result = run_entry("train.py", "resume=true", f"run_dir={run_dir}", timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"run_dir: {run_dir} does not exist" in result.stderr
    assert not run_dir.exists()


def test_resume_of_a_folder_that_holds_no_run_exits_2_naming_it(
    compose_train, tiny_run_overrides, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(SystemExit) as refused:
        pipeline.train(compose_train(*tiny_run_overrides, "resume=true"))
    assert refused.value.code == 2
    assert f"run_dir: {run_dir} holds no run to resume" in capsys.readouterr().err
    assert not any(run_dir.iterdir())


def _length_run(compose_train, base: list[str], run_dir, *more: str):
    return compose_train(*base, "trainer.warmup_ratio=0", f"run_dir={run_dir}", *more)


def test_a_run_resumed_with_more_epochs_equals_one_started_with_them_under_a_constant_rate(
    compose_train, dropout_run_overrides, tmp_path, monkeypatch
):
    constant = [*dropout_run_overrides, "trainer.scheduler=constant"]
    longer = pipeline.train(_length_run(compose_train, constant, tmp_path / "longer", "trainer.epochs=3"))
    run_dir = tmp_path / "extended"
    _interrupted(compose_train, [*constant, "trainer.warmup_ratio=0", f"run_dir={run_dir}"], monkeypatch)
    extended = pipeline.train(
        _length_run(compose_train, constant, run_dir, "trainer.epochs=3", "resume=true")
    )
    assert extended["train"]["steps"] == longer["train"]["steps"] == 24
    for key in ("best", "final", "initial"):
        assert extended[key] == longer[key]
    assert comparable(RunFolder(run_dir).read_events()) == comparable(
        RunFolder(tmp_path / "longer").read_events()
    )
    assert RunFolder(run_dir).read_config().trainer.epochs == 3


def test_a_decaying_learning_rate_refuses_another_length_on_resume(
    compose_train, dropout_run_overrides, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    _interrupted(compose_train, [*dropout_run_overrides, f"run_dir={run_dir}"], monkeypatch)
    before = folder_snapshot(run_dir)
    with pytest.raises(SystemExit) as refused:
        pipeline.train(
            compose_train(*dropout_run_overrides, f"run_dir={run_dir}", "trainer.epochs=3", "resume=true")
        )
    assert refused.value.code == 2
    assert folder_snapshot(run_dir) == before


def test_a_length_the_checkpoint_refuses_leaves_the_folder_as_it_was(
    compose_train, dropout_run_overrides, tmp_path, monkeypatch, capsys, caplog
):
    """A constant rate after a warm-up of 6% of the run: a longer run warms up longer, so its first rates
    differ. Found only once the checkpoint is read, after the data and the model have loaded; what they
    log on the way (a GGUF conversion, a script dataset, dropped maths rows) must not reach train.log."""
    caplog.set_level(logging.INFO)
    constant = [*dropout_run_overrides, "trainer.scheduler=constant", "trainer.warmup_ratio=0.06"]
    run_dir = tmp_path / "run"
    _interrupted(compose_train, [*constant, f"run_dir={run_dir}"], monkeypatch)
    before = folder_snapshot(run_dir)

    def logging_load_backbone(*args, **kwargs):
        logging.getLogger("lorma_exp.models").info("Converting the model from GGUF (once)")
        return load_backbone(*args, **kwargs)

    monkeypatch.setattr(pipeline, "load_backbone", logging_load_backbone)
    with pytest.raises(SystemExit) as refused:
        pipeline.train(compose_train(*constant, f"run_dir={run_dir}", "trainer.epochs=3", "resume=true"))
    assert refused.value.code == 2
    assert "trainer.epochs: the run was made for 16 steps and this config gives 24" in capsys.readouterr().err
    assert folder_snapshot(run_dir) == before
