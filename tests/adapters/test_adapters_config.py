"""AdapterConfig: defaults, normalisation, and a ValueError naming the field for every bad value."""

from __future__ import annotations

import pytest

from lorma_exp.adapters import INFLATIONS, AdapterConfig

from .cases import METHODS


def test_lorma_defaults_to_the_papers_rri_pre():
    config = AdapterConfig(targets=["q", "v"])
    assert (config.method, config.inflation, config.mode) == ("lorma", "rri", "pre")
    assert config.targets == ("q", "v") and config.scale == config.alpha / config.r


def test_round_trips_through_a_dict():
    config = AdapterConfig(targets=["q"], method="lora", r=4, alpha=8, modules_to_save=["classifier"])
    assert AdapterConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("fields", "field_named"),
    [
        ({"r": 0}, "r"),
        ({"r": -2}, "r"),
        ({"r": 2.5}, "r"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"method": "dora"}, "method"),
        ({"inflation": "square"}, "inflation"),
        ({"mode": "middle"}, "mode"),
        ({"method": "lora", "inflation": "rri"}, "inflation"),
        ({"method": "lora", "mode": "pre"}, "mode"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"dropout_on": "output"}, "dropout_on"),
        ({"inflation": "shift", "dropout": 0.1}, "dropout_on"),
        ({"bias": "some"}, "bias"),
        ({"targets": []}, "targets"),
        ({"targets": ""}, "targets"),
        ({"targets": "query("}, "targets"),
        ({"targets": ["q", ""]}, "targets"),
        ({"modules_to_save": "classifier"}, "modules_to_save"),
    ],
)
def test_bad_values_raise_naming_the_field(fields, field_named):
    arguments = {"targets": ["q"], **fields}
    with pytest.raises(ValueError, match=rf"AdapterConfig\.{field_named}\b"):
        AdapterConfig(**arguments)


def test_unknown_keys_in_a_dict_are_refused():
    with pytest.raises(ValueError, match="lora_dim"):
        AdapterConfig.from_dict({"targets": ["q"], "lora_dim": 8})


def test_inflations_are_the_registered_lorma_variants():
    expected = {method.fields["inflation"] for method in METHODS.values() if "inflation" in method.fields}
    assert set(INFLATIONS) == expected and INFLATIONS[:3] == ("rri", "shift", "none")
    for inflation in INFLATIONS:
        assert AdapterConfig(targets=["q"], inflation=inflation).variant.name == inflation


@pytest.mark.parametrize("method_name", list(METHODS))
def test_which_updates_export_exactly_to_lora(method_name):
    """method.md §3: LoRA and LoRMA₊ updates are rank-r additive terms; π, no inflation and a row
    magnitude are full rank (the expectation of each method is written in cases.py)."""
    method = METHODS[method_name]
    config = AdapterConfig(targets=["q"], **method.fields)
    assert config.exports_exactly_to_lora is method.exact_lora_export
