"""Config faults that need the model's shape or the machine are caught before any data loads: fp16 on a
CPU, targets that match no layer, a rank that is no longer low. Each exits 2 naming the field."""

from __future__ import annotations

import pytest

from lorma_exp import pipeline


@pytest.fixture
def no_data_loading(monkeypatch):
    """Fail the test if the run gets as far as reading its data."""

    def refuse(*args, **kwargs):
        raise AssertionError("the data was loaded before the config fault was reported")

    monkeypatch.setattr(pipeline, "build_task_data", refuse)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.precision=fp16", "trainer.device=cpu"], "trainer.precision: fp16 needs a GPU"),
        (["model.targets=[query_proj]"], "method.targets: target 'query_proj' matches no layer"),
        (["method=lora", "model.targets=[q,nope]"], "method.targets: target 'nope' matches no layer"),
        (["r=32"], "r: r=32 is not below min(d_in, d_out) = 32 of the target layer"),
        (["method=peft_lora", "r=40"], "the update is no longer low-rank"),
    ],
    ids=["fp16-on-cpu", "no-such-target", "one-target-missing", "rank-32-of-32", "peft-rank-40"],
)
def test_a_config_fault_exits_2_naming_the_field_before_data_loads(
    compose_train, tiny_run_overrides, no_data_loading, capsys, overrides, message
):
    with pytest.raises(SystemExit) as failed:
        pipeline.train(compose_train(*tiny_run_overrides, *overrides))
    assert failed.value.code == 2
    assert message in capsys.readouterr().err


def test_the_highest_rank_below_both_sides_is_accepted(compose_train, tiny_run_overrides):
    record = pipeline.train(compose_train(*tiny_run_overrides, "r=31", "trainer.max_steps=1"))
    assert record["r"] == 31
