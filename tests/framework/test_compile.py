"""`trainer.compile=true`: the model is compiled for its training steps and trains to the eager run's losses;
a machine that cannot compile is refused before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch._inductor.config

from lorma_exp import pipeline
from lorma_exp.run_folder import RunFolder


def _losses(run_dir: Path) -> list[float]:
    return [event["loss"] for event in RunFolder(run_dir).read_events() if event["event"] == "train"]


def _train(compose_train, overrides: list[str], run_dir: Path, *extra: str) -> dict:
    """`pipeline.train` on `overrides` with the run folder moved to `run_dir`."""
    kept = [override for override in overrides if not override.startswith("run_dir=")]
    return pipeline.train(compose_train(*kept, f"run_dir={run_dir}", *extra))


def _spy_on_compile(monkeypatch, backend: str | None) -> list[torch.nn.Module]:
    """Record what `torch.compile` is asked to compile; `backend` replaces inductor when given."""
    compiled: list[torch.nn.Module] = []
    real_compile = torch.compile

    def spy(model, **options):
        compiled.append(model)
        return real_compile(model, **({**options, "backend": backend} if backend else options))

    monkeypatch.setattr(torch, "compile", spy)
    return compiled


def _compare(
    compose_train, tiny_run_overrides, tmp_path, monkeypatch, backend: str | None, rel: float
) -> None:
    common = [*tiny_run_overrides, "trainer.max_steps=4", "trainer.log_every=1", "method=lorma_plus"]
    common += ["method.dropout=0.1"]  # the masks must be the eager run's too
    eager = _train(compose_train, common, tmp_path / "eager")
    compiled = _spy_on_compile(monkeypatch, backend)
    torch._dynamo.utils.counters.clear()
    record = _train(compose_train, common, tmp_path / "compiled", "trainer.compile=true")
    assert not torch._dynamo.utils.counters["graph_break"]  # the adapters and the model trace whole
    assert len(compiled) == 1 and not isinstance(compiled[0], torch._dynamo.eval_frame.OptimizedModule)
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=rel)
    assert len(_losses(tmp_path / "eager")) == 4
    assert record["final"]["metrics"] == pytest.approx(eager["final"]["metrics"], abs=1e-6)
    saved = json.loads((tmp_path / "compiled" / "adapter" / "adapter_config.json").read_text())
    assert saved == json.loads((tmp_path / "eager" / "adapter" / "adapter_config.json").read_text())


@pytest.mark.slow  # ~18 s; every adapter's fullgraph compile stays in the fast suite
def test_a_compiled_run_traces_the_model_and_trains_to_the_eager_losses(
    compose_train, tiny_run_overrides, tmp_path, monkeypatch
):
    """Traced forward and backward (`aot_eager`: inductor's graphs, no kernels to build) give the eager run's
    losses exactly: the same graph, the same dropout masks."""
    torch._dynamo.reset()
    _compare(compose_train, tiny_run_overrides, tmp_path, monkeypatch, backend="aot_eager", rel=1e-6)


@pytest.mark.slow
def test_a_run_compiled_with_inductor_trains_to_the_eager_losses(
    compose_train, tiny_run_overrides, tmp_path, monkeypatch
):
    torch._dynamo.reset()
    with torch._inductor.config.patch(fallback_random=True):  # eager's dropout masks, not inductor's own
        _compare(compose_train, tiny_run_overrides, tmp_path, monkeypatch, backend=None, rel=1e-4)


def test_compile_without_a_cpp_compiler_is_refused_before_anything_loads(
    compose_train, tiny_run_overrides, tmp_path, capsys
):
    no_compiler = torch._inductor.config.patch({"cpp.cxx": ("no-such-c++",)})
    with no_compiler, pytest.raises(SystemExit) as refused:
        _train(compose_train, tiny_run_overrides, tmp_path / "run", "trainer.compile=true")
    assert refused.value.code == 2
    message = capsys.readouterr().err
    assert "trainer.compile: on a CPU inductor needs a C++ compiler" in message
    assert "trainer.compile=false" in message
    assert not (tmp_path / "run").exists()
