"""Methods as strategies: the registry, the settings each method declares, and the framework asking the
method rather than its kind (a method registered here, in the test, trains and evaluates end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForSequenceClassification

from lorma_exp import pipeline
from lorma_exp.adapters import INFLATIONS, AdapterConfig, inject_adapters, iter_adapter_layers
from lorma_exp.config import ConfigError, validate
from lorma_exp.methods import (
    IDENTITY_FIELDS,
    METHODS,
    FullFineTuning,
    Lora,
    Lorma,
    Method,
    PeftDora,
    PeftLora,
    method_for,
    method_kinds,
    method_of,
)
from lorma_exp.methods.base import BackboneLoader

from .helpers import eval_scores

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
METHOD_YAMLS = sorted((CONF_DIR / "method").glob("*.yaml"))


@pytest.mark.parametrize("path", METHOD_YAMLS, ids=[p.stem for p in METHOD_YAMLS])
def test_every_method_config_names_a_registered_kind_and_its_run_name_suffix(compose_settings, path):
    settings = compose_settings(
        f"method={path.stem}", "r=4", "alpha=12", "mode=post"
    )  # composed: a file may extend another
    method = settings.method
    assert method.name == path.stem
    assert method.kind in method_kinds()
    has = method_for(method.kind).settings
    # The run folder names exactly the settings the method has: r, α, mode, targets or none of them.
    expected = {"r": "_r4", "alpha": "_a12", "mode": "_post", "targets": "_q-v"}
    for setting, fragment in expected.items():
        assert (fragment in method.run_name_suffix) == (setting in has), (setting, method.run_name_suffix)


def test_an_unknown_kind_fails_at_validate_naming_the_field_and_the_kinds(compose_train):
    with pytest.raises(
        ConfigError, match=r"^method\.kind: 'lorma_times' .*not a registered method kind"
    ) as error:
        validate(compose_train("method.kind=lorma_times"))
    assert all(kind in str(error.value) for kind in ("full_ft", "lora", "lorma", "peft_dora", "peft_lora"))


def test_an_unknown_inflation_fails_at_validate_listing_the_librarys(compose_train):
    with pytest.raises(ConfigError, match=r"^inflation: 'double' .*Use one of: ") as error:
        validate(compose_train("inflation=double"))
    assert str(error.value).endswith(f"Use one of: {', '.join(INFLATIONS)}.")
    assert {"rri", "shift", "none"} <= set(INFLATIONS)


@pytest.mark.parametrize("inflation", INFLATIONS)
def test_every_inflation_of_the_adapter_library_validates(compose_settings, inflation):
    assert compose_settings("method=lorma_plus", f"inflation={inflation}").method.inflation == inflation


def test_a_setting_the_adapter_library_refuses_fails_at_validate(compose_train):
    """LoRMA_π has no adapter branch to drop out: refused before any data or weights load."""
    cfg = compose_train("method=lorma_pi", "method.dropout=0.1", "method.dropout_on=adapter")
    with pytest.raises(
        ConfigError, match=r"^method: .*dropout_on='adapter' is undefined for inflation='shift'"
    ):
        validate(cfg)


@pytest.mark.parametrize(
    ("method", "recorded"),
    [
        ("lorma_pi", {"inflation": "shift", "mode": "post", "r": 4, "alpha": 8.0, "targets": ["q", "v"]}),
        ("lora", {"inflation": None, "mode": None, "r": 4, "alpha": 8.0, "targets": ["q", "v"]}),
        ("peft_dora", {"inflation": None, "mode": None, "r": 4, "alpha": 8.0, "targets": ["q", "v"]}),
        ("full_ft", dict.fromkeys(IDENTITY_FIELDS)),
    ],
)
def test_results_record_only_the_settings_a_method_has(compose_settings, method, recorded):
    settings = compose_settings(f"method={method}", "r=4", "alpha=8", "mode=post")
    identity = method_for(settings.method.kind).run_identity(settings.method)
    assert identity == {"kind": settings.method.kind, **recorded}
    assert list(identity) == ["kind", *IDENTITY_FIELDS]  # results.json keeps its field order


@pytest.mark.parametrize(
    ("method", "run_name"),
    [
        ("lorma_plus", "minilm/reviews/lorma_plus_r4_a8_post_q-v/seed3"),
        ("lora", "minilm/reviews/lora_r4_a8_q-v/seed3"),
        ("peft_lora", "minilm/reviews/peft_lora_r4_a8_q-v/seed3"),
        ("full_ft", "minilm/reviews/full_ft/seed3"),
    ],
)
def test_the_run_name_names_what_the_method_has(compose_train, method, run_name):
    assert compose_train(f"method={method}", "r=4", "alpha=8", "mode=post", "seed=3").run_name == run_name


# --- serving: the method recognised from the model, exported exactly -------------------------------------

PROBE = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102]])


def _logits(model: nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=PROBE).logits


def _perturbed(model: nn.Module) -> nn.Module:
    """Trainable parameters moved off their initial values, as training would (LoRMA₊ starts at W)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def _base(tiny_bert_dir: Path) -> nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)


def _adapted(kind: str, tiny_bert_dir: Path) -> nn.Module:
    base = _base(tiny_bert_dir)
    if kind in ("lorma_plus", "lorma_pi", "lora"):
        inflation = {"lorma_plus": "rri", "lorma_pi": "shift", "lora": None}[kind]
        method = "lora" if kind == "lora" else "lorma"
        return inject_adapters(
            base, AdapterConfig(method=method, inflation=inflation, r=2, targets=["q", "v"])
        )
    if kind in ("peft_lora", "peft_dora"):
        config = LoraConfig(
            r=2, lora_alpha=4, target_modules=["query", "value"], use_dora=kind == "peft_dora",
            modules_to_save=["classifier"],
        )  # fmt: skip
        return get_peft_model(base, config)
    return FullFineTuning().apply(base, None)  # type: ignore[arg-type]


SERVED = [
    ("lorma_plus", Lorma, True),
    ("lora", Lora, True),
    ("peft_lora", PeftLora, True),
    ("lorma_pi", Lorma, False),
    ("peft_dora", PeftDora, False),
    ("full_ft", FullFineTuning, False),
]


@pytest.mark.parametrize(("kind", "method_class", "as_lora"), SERVED, ids=[case[0] for case in SERVED])
def test_a_trained_model_is_exported_for_serving_as_what_computes_it_exactly(
    tiny_bert_dir, tmp_path, kind, method_class, as_lora
):
    model = _perturbed(_adapted(kind, tiny_bert_dir))
    expected = _logits(model)
    method = method_of(model)
    assert isinstance(method, method_class)

    export = method.export_for_serving(model, tmp_path)

    assert export.is_lora == as_lora
    if as_lora:  # loaded by PEFT, the reference implementation of a LoRA adapter
        served = PeftModel.from_pretrained(_base(tiny_bert_dir), export.path)
    else:
        served = AutoModelForSequenceClassification.from_pretrained(export.path)
    torch.testing.assert_close(_logits(served), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_logits(model), expected)  # the model itself is left as it was


@pytest.mark.parametrize("kind", ["lorma_plus", "lora", "peft_lora"])
def test_exact_lora_factors_give_the_weight_update(tiny_bert_dir, kind):
    model = _perturbed(_adapted(kind, tiny_bert_dir))
    factors = method_of(model).exact_lora_factors(model)
    if kind == "peft_lora":  # PEFT's own ΔW is the reference
        modules = dict(model.base_model.model.named_modules())
        deltas = {name: modules[name].get_delta_weight("default") for name in factors}
    else:
        deltas = {name: layer.delta_weight(torch.float64) for name, layer in iter_adapter_layers(model)}
    assert set(factors) == set(deltas) and len(factors) == 4
    for name, pieces in factors.items():
        ((whole, lora_b, lora_a),) = pieces
        assert (whole.start, whole.stop) == (0, deltas[name].shape[0])
        torch.testing.assert_close(lora_b @ lora_a, deltas[name].to(torch.float64), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["lorma_pi", "peft_dora", "full_ft"])
def test_updates_that_are_not_lora_have_no_exact_lora_factors(tiny_bert_dir, kind):
    model = _adapted(kind, tiny_bert_dir)
    assert method_of(model).exact_lora_factors(model) is None


# --- a method registered in a test runs through the framework untouched -----------------------------------


class BiasTuning(Method):
    """Trains only the biases (BitFit-style), saved as a state dict of what trained: a method the framework
    has never seen, in its own weights folder."""

    kind = "bias_tuning"
    weights_name = "biases"

    def apply(self, model: nn.Module, config: object) -> nn.Module:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.endswith("bias"))
        return model

    def parameter_counts(self, model: nn.Module) -> dict[str, int]:
        total = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {"adapter": 0, "head": 0, "other": total, "total": total}

    def save(self, model: nn.Module, folder: Path, base_model_name_or_path: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        trained = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
        torch.save(trained, folder / "biases.pt")

    def load(self, folder: Path, backbone: BackboneLoader, base_model_name_or_path: str) -> nn.Module:
        model = backbone(None)
        model.load_state_dict(torch.load(folder / "biases.pt"), strict=False)
        return model

    def write_merged(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)


def test_a_method_registered_in_a_test_trains_and_evaluates_end_to_end(
    compose_train, tiny_run_overrides, monkeypatch
):
    monkeypatch.setitem(METHODS, BiasTuning.kind, BiasTuning())
    cfg = compose_train(
        *tiny_run_overrides, "method=full_ft", "method.name=bitfit", f"method.kind={BiasTuning.kind}"
    )
    record = pipeline.train(cfg)
    run_dir = Path(cfg.run_dir)
    assert (record["method"], record["kind"]) == ("bitfit", "bias_tuning")
    assert {name: record[name] for name in IDENTITY_FIELDS} == dict.fromkeys(IDENTITY_FIELDS)
    assert 0 < record["trainable_params"]["total"] == record["trainable_params"]["other"]
    assert (run_dir / "biases" / "biases.pt").is_file() and (run_dir / "biases_best").is_dir()
    assert not list(run_dir.glob("adapter*"))

    with initialize_config_dir(config_dir=str(CONF_DIR / "eval"), version_base="1.3"):
        scores = pipeline.evaluate(compose("eval", overrides=[f"run_dir={run_dir}"]))
    assert scores["validation"] == pytest.approx(eval_scores(run_dir, record))


def test_full_fine_tuning_names_its_folder_and_files_after_the_model(
    compose_train, tiny_run_overrides, capsys
):
    cfg = compose_train(*tiny_run_overrides, "method=full_ft", "trainer.epochs=1")
    assert cfg.run_name == "minilm/reviews/full_ft/seed42"
    record = pipeline.train(cfg)
    run_dir = Path(cfg.run_dir)
    assert (run_dir / "model" / "config.json").is_file() and (run_dir / "model_best").is_dir()
    assert not [path.name for path in run_dir.iterdir() if "adapter" in path.name]
    assert "model/" in capsys.readouterr().out  # the summary points at the model folder

    def evaluate(*overrides: str) -> dict:
        with initialize_config_dir(config_dir=str(CONF_DIR / "eval"), version_base="1.3"):
            return pipeline.evaluate(compose("eval", overrides=[f"run_dir={run_dir}", *overrides]))

    assert evaluate()["validation"] == pytest.approx(eval_scores(run_dir, record))
    (written,) = run_dir.glob("evals/*/metrics.json")
    assert json.loads(written.read_text())["weights"] == "model"
    assert evaluate("weights=model_best")["validation"] == pytest.approx(eval_scores(run_dir, record, "best"))
    with pytest.raises(SystemExit) as refused:
        evaluate("weights=adapter")
    assert refused.value.code == 2
    assert "Saved weights in this run: ['model', 'model_best']" in capsys.readouterr().err
