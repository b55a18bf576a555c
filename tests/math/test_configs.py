"""The maths tasks and the Table 4 experiments compose with the paper's settings (Table 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lorma_exp.config import GenerationBackend, Mode, Precision, Scheduler, load_run_settings
from lorma_exp.paper import REPRODUCTIONS

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# paper-results.md, Table 17: Gemma r=4 on q,k,v,up,down,o,gate; LLaMA r=8 on up,down,o,gate; alpha = 2r.
TABLE17_ADAPTERS = {
    "gemma_2b": (4, {"q", "k", "v", "up", "down", "o", "gate"}),
    "llama3_8b": (8, {"up", "down", "o", "gate"}),
}
TABLE4_METHODS = {"lorma_plus": "lorma", "lora": "lora", "peft_dora": "peft_dora"}
TABLE4 = REPRODUCTIONS["table4"].grid


def test_table4_runs_every_model_with_every_method() -> None:
    assert (set(TABLE4.models), TABLE4.tasks) == (set(TABLE17_ADAPTERS), ("metamathqa",))
    assert set(TABLE4.methods) == set(TABLE4_METHODS)


@pytest.mark.parametrize("model", sorted(TABLE17_ADAPTERS))
@pytest.mark.parametrize("method", sorted(TABLE4_METHODS))
def test_table4_experiments_carry_table17(compose_settings, model, method) -> None:
    settings = compose_settings("experiment=table4", f"model={model}", "task=metamathqa", f"method={method}")
    rank, targets = TABLE17_ADAPTERS[model]
    assert settings.model.name == model and settings.model.dtype == "bfloat16"
    assert (settings.method.name, settings.method.kind) == (method, TABLE4_METHODS[method])
    assert (settings.method.r, settings.method.alpha) == (rank, 2 * rank)
    assert set(settings.method.targets) == targets
    assert settings.method.mode == Mode.pre
    trainer = settings.trainer
    assert (trainer.lr, trainer.scheduler, trainer.warmup_ratio) == (5e-4, Scheduler.cosine, 0.1)
    assert (trainer.epochs, trainer.global_batch_size, trainer.weight_decay) == (2, 64, 0.0)
    assert trainer.precision == Precision.bf16
    assert 64 % trainer.batch_size == 0
    assert settings.task.name == "metamathqa"
    assert (settings.data.dataset, settings.data.limit, settings.data.max_length) == (
        "meta-math/MetaMathQA-40K",
        None,
        512,
    )
    assert (settings.generation.num_beams, settings.generation.max_new_tokens) == (1, 512)
    cell = settings.paper_cell
    assert (cell.table, cell.model, cell.task, cell.method) == ("table4", model, "metamathqa", method)


@pytest.mark.parametrize(
    ("task", "dataset", "subset", "split", "new_tokens"),
    [
        ("metamathqa", "meta-math/MetaMathQA-40K", None, "validation", 512),
        ("gsm8k", "openai/gsm8k", "main", "test", 512),  # the authors' eval_gsm8k.py
        ("math", "DigitalLearningGmbH/MATH-lighteval", "default", "test", 2048),  # their eval_math.py
    ],
)
def test_the_maths_tasks_decode_greedily_as_the_authors_scripts(
    compose_settings, task, dataset, subset, split, new_tokens
) -> None:
    settings = compose_settings(f"task={task}", "model=llama3_8b")
    assert (settings.data.dataset, settings.data.subset, settings.data.eval_splits) == (
        dataset,
        subset,
        [split],
    )
    assert settings.task.problem.value == "causal_lm" and settings.task.main_metric == "accuracy"
    assert (settings.generation.num_beams, settings.generation.max_new_tokens) == (1, new_tokens)
    assert settings.generation.backend == GenerationBackend.hf


def test_the_offline_maths_task_picks_the_embedded_decoder_unless_told_otherwise(compose_settings) -> None:
    assert compose_settings("task=gsm_symbolic").model.name == "smollm2_135m"
    assert compose_settings("task=gsm_symbolic", "model=gemma_2b").model.name == "gemma_2b"
    settings = compose_settings("task=gsm_symbolic")
    assert settings.trainer.eval_before_training
    assert settings.model.name_or_path.startswith("embedded:")


def test_eval_can_switch_task_and_decoding_backend_of_a_finished_run(compose_train, tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    OmegaConf.save(
        compose_train("experiment=table4", "model=llama3_8b", "task=metamathqa", "method=lorma_plus"),
        run_dir / "config.yaml",
    )
    with initialize_config_dir(config_dir=str(CONF_DIR / "eval"), version_base="1.3"):
        options = compose(
            "eval",
            overrides=[f"run_dir={run_dir}", "task=math", "+generation.backend=vllm", "+data.eval_limit=50"],
        )
    settings = load_run_settings(run_dir, OmegaConf.to_object(options))
    assert settings.task.name == "math" and settings.data.dataset == "DigitalLearningGmbH/MATH-lighteval"
    assert settings.generation.backend == GenerationBackend.vllm
    assert settings.data.eval_limit == 50
    assert (settings.model.name, settings.method.name) == ("llama3_8b", "lorma_plus")
