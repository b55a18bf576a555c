"""The benchmark at tiny sizes: every variant of every scope measured, the JSON complete and consistent,
the memory measure measuring what it says, the weight-built reference computing LoRMA, the CLI writing
its files. No timing is asserted: only that times are finite and positive."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lorma_exp.adapters import AdapterConfig, LormaLinear
from lorma_exp.bench import benchmark
from lorma_exp.bench import presets as bench_presets
from lorma_exp.bench.__main__ import main
from lorma_exp.bench.measure import round_robin, saved_tensor_bytes, time_ms
from lorma_exp.bench.presets import LayerShape, ModelShape, Preset
from lorma_exp.bench.report import CHECKS, check_targets, update_readme
from lorma_exp.bench.run import INFERENCE_VARIANTS
from lorma_exp.bench.variants import TRAIN_VARIANTS, WeightBuiltLorma

LAYER = LayerShape("tiny", d_out=12, d_in=8, tokens=16, r=2)
MODEL = ModelShape(
    "llama-micro",
    hidden=16,
    intermediate=40,
    layers=1,
    heads=2,
    kv_heads=2,
    vocab=64,
    batch=2,
    seq=8,
    r=2,
    targets=("qv", "mlp"),
)
TINY = Preset(
    name="tiny", device_type="cpu", dtype=torch.float32, layers=(LAYER,), models=(MODEL,), repeats=3, warmup=1
)
FIELDS = {
    "scope",
    "variant",
    "targets",
    "shape",
    "dtype",
    "device",
    "ms",
    "peak_bytes",
    "ratio_vs_lora",
    "ratio_vs_peft_lora",
    "ms_q25",
    "ms_q75",
    "repeats",
    "tokens_per_s",
    "memory_measure",
    "saved_bytes",
    "ratio_vs_frozen",
    "ratio_vs_base",
    "ratio_vs_lora_per_round",
    "ratio_vs_peft_lora_per_round",
    "ratio_vs_base_per_round",
    "peak_ratio_vs_lora",
    "trainable_params",
    "description",
}
TRAIN_NAMES = [variant.name for variant in TRAIN_VARIANTS]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny sizes measure per-call overhead; one thread keeps a shared machine from stalling on thread sync."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def document(one_thread):
    return benchmark(TINY, command="pytest")


def _groups(records):
    groups: dict[tuple, dict[str, dict]] = {}
    for record in records:
        key = (record["scope"], record["shape"]["name"], record["targets"])
        groups.setdefault(key, {})[record["variant"]] = record
    return groups


def test_every_scope_measures_every_variant_once(document):
    groups = _groups(document["records"])
    assert set(groups) == {
        ("layer", "tiny", None),
        ("model", "llama-micro", "qv"),
        ("model", "llama-micro", "mlp"),
        ("inference", "llama-micro", "mlp"),
    }
    for (scope, _, _), group in groups.items():
        expected = INFERENCE_VARIANTS if scope == "inference" else TRAIN_NAMES
        assert sorted(group) == sorted(expected)


def test_every_record_has_every_field_and_finite_numbers(document):
    json.dumps(document, allow_nan=False)  # strict JSON: no NaN or Infinity anywhere
    for record in document["records"]:
        assert set(record) == FIELDS
        assert record["repeats"] == TINY.repeats
        assert math.isfinite(record["ms"]) and record["ms"] > 0
        assert record["ms_q25"] <= record["ms"] <= record["ms_q75"]
        assert math.isfinite(record["tokens_per_s"]) and record["tokens_per_s"] > 0
        assert isinstance(record["peak_bytes"], int) and record["peak_bytes"] >= 0
        assert record["dtype"] == "float32" and record["device"] == "cpu"
    assert document["machine"]["torch_threads"] >= 1
    assert len(document["machine"]["load_average_end"]) == 3


def test_ratios_are_the_ratios_of_the_ms_and_memory_fields(document):
    for (scope, _, _), group in _groups(document["records"]).items():
        for record in group.values():
            if scope == "inference":
                assert record["ratio_vs_base"] == pytest.approx(record["ms"] / group["base"]["ms"], rel=1e-12)
                assert record["ratio_vs_lora"] is None and record["ratio_vs_peft_lora"] is None
                continue
            assert record["ratio_vs_lora"] == pytest.approx(record["ms"] / group["lora"]["ms"], rel=1e-12)
            assert record["ratio_vs_peft_lora"] == pytest.approx(
                record["ms"] / group["peft_lora"]["ms"], rel=1e-12
            )
            assert record["ratio_vs_frozen"] == pytest.approx(record["ms"] / group["frozen"]["ms"], rel=1e-12)
            assert record["peak_ratio_vs_lora"] == pytest.approx(
                record["peak_bytes"] / group["lora"]["peak_bytes"], rel=1e-12
            )
            low, middle, high = record["ratio_vs_lora_per_round"]
            assert 0 < low <= middle <= high
        reference, per_round = (
            ("base", "ratio_vs_base_per_round")
            if scope == "inference"
            else ("lora", "ratio_vs_lora_per_round")
        )
        assert group[reference][per_round] == [1.0, 1.0, 1.0]


def test_a_run_without_a_reference_variant_leaves_its_ratios_empty():
    subset = [variant for variant in TRAIN_VARIANTS if variant.name in ("lora", "lorma_plus_pre")]
    records = benchmark(TINY, scopes=["layer"], variants=subset)["records"]
    assert [record["variant"] for record in records] == ["lora", "lorma_plus_pre"]
    for record in records:
        assert record["ratio_vs_frozen"] is None and record["ratio_vs_peft_lora"] is None
        assert record["ratio_vs_peft_lora_per_round"] is None and record["ratio_vs_lora"] is not None


def test_layer_memory_is_what_autograd_keeps(document):
    """Expected bytes from the maths, float32: the frozen layer keeps nothing but its weight (a parameter,
    excluded); a LoRA layer keeps its input (tokens × d_in) and `U` (tokens × r); the authors' form keeps
    `W'` (d_out × d_in) on top of that."""
    layer = _groups(document["records"])[("layer", "tiny", None)]
    floats = 4
    assert layer["frozen"]["saved_bytes"] == 0
    lora = floats * (LAYER.tokens * LAYER.d_in + LAYER.tokens * LAYER.r)
    assert layer["lora"]["saved_bytes"] == lora
    for name in ("lorma_plus_pre", "lorma_plus_post"):
        assert layer[name]["saved_bytes"] == lora
    assert layer["lorma_plus_pre_weight"]["saved_bytes"] >= floats * LAYER.d_out * LAYER.d_in
    assert all(record["peak_bytes"] == record["saved_bytes"] for record in layer.values())


def test_trainable_parameters_follow_the_method(document):
    """LoRA trains r·(d_in + d_out) per layer, LoRMA pre 2·r·d_out, post 2·r·d_in (method.md §1)."""
    layer = _groups(document["records"])[("layer", "tiny", None)]
    r, d_in, d_out = LAYER.r, LAYER.d_in, LAYER.d_out
    assert layer["frozen"]["trainable_params"] == 0
    assert layer["lora"]["trainable_params"] == layer["peft_lora"]["trainable_params"] == r * (d_in + d_out)
    assert layer["lorma_plus_pre"]["trainable_params"] == layer["lorma_pi_pre_weight"]["trainable_params"]
    assert layer["lorma_plus_pre"]["trainable_params"] == 2 * r * d_out
    assert layer["lorma_plus_post"]["trainable_params"] == 2 * r * d_in


def test_target_checks_cover_both_target_sets_and_merged_inference(document):
    checks = document["checks"]
    assert len(checks) == len(CHECKS) + 1
    for check in checks:
        assert check["met"] == (
            check["per_round_iqr"][0] <= 1.0 <= check["per_round_iqr"][1]
            if check["check"].startswith("merged")
            else check["measured"] <= check["limit"]
        )
    assert check_targets([]) == []


@pytest.mark.parametrize(("inflation", "mode"), [("rri", "pre"), ("rri", "post"), ("shift", "pre")])
def test_the_weight_built_reference_computes_what_lorma_computes(inflation, mode):
    """The reference the library is measured against must be the same function, with the same gradients."""
    torch.manual_seed(0)
    base = nn.Linear(6, 9, bias=True).double().requires_grad_(False)
    config = AdapterConfig(inflation=inflation, mode=mode, r=2, alpha=3.0, targets=["layer"])
    ours, reference = LormaLinear(base, config), WeightBuiltLorma(base, config)
    with torch.no_grad():
        for own, theirs in zip(ours.adapter_parameters(), reference.adapter_parameters(), strict=True):
            own.normal_()
            theirs.copy_(own)
    x = torch.randn(5, 6, dtype=torch.float64)
    grad_out = torch.randn(5, 9, dtype=torch.float64)
    out_ours, out_reference = ours(x), reference(x)
    out_ours.backward(grad_out)
    out_reference.backward(grad_out)
    torch.testing.assert_close(out_reference, out_ours, rtol=1e-12, atol=1e-12)
    for own, theirs in zip(ours.adapter_parameters(), reference.adapter_parameters(), strict=True):
        torch.testing.assert_close(theirs.grad, own.grad, rtol=1e-12, atol=1e-12)


def test_round_robin_runs_every_step_once_per_round_in_changing_orders():
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    samples = round_robin(steps, repeats=6, device=torch.device("cpu"), clock="process")
    rounds = ["".join(calls[index : index + 4]) for index in range(0, len(calls), 4)]
    assert all(sorted(order) == list("abcd") for order in rounds)
    assert len(set(rounds)) > 1 and len({order[0] for order in rounds}) > 1
    assert all(len(values) == 6 for values in samples.values())
    calls.clear()
    round_robin(steps, repeats=6, device=torch.device("cpu"), clock="process")
    assert ["".join(calls[index : index + 4]) for index in range(0, len(calls), 4)] == rounds  # seeded


def test_saved_tensor_bytes_counts_each_storage_once_and_skips_parameters():
    weight = nn.Parameter(torch.randn(4, 3))
    x = torch.randn(5, 4, requires_grad=True)
    # x @ weight saves x (for weight's gradient) and weight (a parameter); (x @ weight) * x saves both
    # factors, one of them x again: 5·4 + 5·3 floats.
    kept = saved_tensor_bytes(lambda: (x @ weight).sum(1, keepdim=True) * x, [weight])
    assert kept == 4 * (5 * 4 + 5 * 1)


@pytest.mark.parametrize("clock", ["wall", "process"])
def test_both_cpu_clocks_give_positive_milliseconds(clock):
    assert time_ms(lambda: torch.randn(64, 64) @ torch.randn(64, 64), torch.device("cpu"), clock) > 0


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="clock"):
        benchmark(TINY, clock="sundial")
    with pytest.raises(ValueError, match="scopes"):
        benchmark(TINY, scopes=["layers"])
    with pytest.raises(ValueError, match="repeats"):
        round_robin({"a": lambda: None}, repeats=0, device=torch.device("cpu"), clock="wall")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="--preset cpu"):
            benchmark(bench_presets.GPU)
    with pytest.raises(SystemExit):
        main(["--repeats", "0"])


def test_the_cli_writes_json_markdown_and_keeps_one_readme_section_per_device(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bench_presets.PRESETS, "cpu", TINY)
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Benchmarks\n\nIntro.\n\n<!-- latest:other -->\nother device\n<!-- /latest:other -->\n"
    )
    out = tmp_path / "results"
    args = ["--scope", "layer", "--out", str(out), "--readme", str(readme), "--clock", "process"]
    for _ in range(2):
        assert main(args) == 0
    written = sorted(path.name for path in out.iterdir())
    assert [name.rsplit("-", 1)[1] for name in written] == ["cpu.json", "cpu.md"]
    document = json.loads((out / written[0]).read_text())
    assert document["command"] == "python -m lorma_exp.bench " + " ".join(args)
    assert document["clock"] == "process" and {r["scope"] for r in document["records"]} == {"layer"}
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nIntro.") and "other device" in text
    assert text.count("<!-- latest:cpu -->") == 1 and text.count("<!-- /latest:cpu -->") == 1
    assert "| `lorma_plus_pre` |" in text
    assert "| `lorma_plus_pre` |" in capsys.readouterr().out


def test_a_readme_without_the_device_gets_its_section_appended(tmp_path, document):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n")
    update_readme(readme, document, tmp_path / "results" / "run.md")
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\n<!-- latest:cpu -->\n### cpu, ")
    assert "\n#### Layer tiny" in text
    assert "(results/run.md)" in text and text.endswith("<!-- /latest:cpu -->\n")
