"""``trainer=fsdp`` (FSDP2 over 2 gloo processes under torchrun) trains what one process trains, saves what
one process saves, and resumes exactly from its sharded checkpoints after a hard kill."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import (
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from lorma_exp import models, pipeline, sharding
from lorma_exp.config import CONF_DIR, ConfigError, Strategy, validate
from lorma_exp.distributed import DistEnv
from lorma_exp.methods import method_for
from lorma_exp.run_folder import RunFolder
from lorma_exp.sharding import ShardedModel, materialised, meta_template

from .helpers import KILL_DRIVER, comparable, run_entry

SCALER_DRIVER = Path(__file__).resolve().parent / "fsdp_scaler_driver.py"
LOAD_DRIVER = Path(__file__).resolve().parent / "fsdp_load_driver.py"


@pytest.mark.parametrize("task", ["restaurants", "e2e", "gsm_symbolic", "metamathqa"])
def test_fsdp_trains_generation_tasks_and_refuses_vllm_decoding(compose_train, task):
    """Generation tasks decode in lockstep under fsdp, compiled or not; vLLM, which decodes from the whole
    model in one process, is refused with the one-process route to it."""
    validate(compose_train("trainer=fsdp", f"task={task}", "trainer.compile=true"))
    with pytest.raises(ConfigError, match=r"^generation.backend: vllm decodes in one process .* eval.py"):
        validate(compose_train("trainer=fsdp", f"task={task}", "generation.backend=vllm"))
    # a classification task decodes nothing: its generation settings are ignored
    validate(compose_train("trainer=fsdp", "generation.backend=vllm"))


def _trained_model(compose_settings, tiny_bert_dir, *overrides: str):
    """The tiny BERT with a method applied and every trained parameter moved off its initial value."""
    settings = compose_settings(f"model.name_or_path={tiny_bert_dir}", *overrides)
    method = method_for(settings.method.kind)
    torch.manual_seed(0)
    model = method.apply(BertForSequenceClassification.from_pretrained(tiny_bert_dir), settings.method)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return method, model


class _MetaComputations(TorchDispatchMode):
    """Records the operations that compute with a meta tensor (a parameter that was not gathered): some give
    uninitialised memory instead of an error (``cpu_tensor @ meta_tensor``). Detaching one (PEFT's
    ``state_dict`` detaches every tensor before it filters) reads nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.operations: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [value for value in tree_flatten((args, kwargs))[0] if isinstance(value, torch.Tensor)]
        if func is not torch.ops.aten.detach.default and any(tensor.is_meta for tensor in tensors):
            self.operations.append(str(func))
        return func(*args, **kwargs)


def _folder_contents(folder) -> dict[str, bytes | dict]:
    """Every file's bytes; PEFT's adapter_config.json parsed, its ``target_modules`` sorted (a set in PEFT,
    written in the set's iteration order, which a copy of the set may change)."""
    contents: dict[str, bytes | dict] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            name = str(path.relative_to(folder))
            contents[name] = path.read_bytes()
            config = json.loads(contents[name]) if path.name == "adapter_config.json" else {}
            if isinstance(config.get("target_modules"), list):
                contents[name] = {**config, "target_modules": sorted(config["target_modules"])}
    return contents


# every method config users can pick, and LoRMA₊ post (its export reads W on the other side)
METHOD_CASES = [[f"method={path.stem}"] for path in sorted((CONF_DIR / "method").glob("*.yaml"))]
METHOD_CASES.append(["method=lorma_plus", "mode=post"])


@pytest.mark.parametrize("overrides", METHOD_CASES, ids=lambda overrides: "-".join(overrides))
def test_a_storage_free_template_holding_only_the_parameters_a_method_reads_saves_the_same_files(
    compose_settings, tiny_bert_dir, tmp_path, overrides
):
    """What a sharded run's rank 0 saves from: the model's template on the meta device, with only the
    parameters the method declares gathered into it, writes a single-process run's files byte for byte
    (the weights folder from ``saved_parameter_names``; with the PEFT export from ``exported_parameter_names``).
    An undeclared read need not raise (``cpu_tensor @ meta_tensor`` returns uninitialised memory): every
    operation on a meta tensor is recorded."""
    method, model = _trained_model(compose_settings, tiny_bert_dir, *overrides)
    values = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    template = meta_template(model)
    assert all(parameter.is_meta for parameter in template.parameters())

    def write(trained, folder, exports: bool) -> None:
        method.save(trained, folder / "weights", "hub/base")
        if exports and method.exports_exactly_to_lora(trained):
            method.write_lora(trained, folder / "peft", "hub/base", "SEQ_CLS")

    write(model, tmp_path / "one_process", exports=True)
    for exports, names in (
        (False, method.saved_parameter_names(model)),
        (True, method.exported_parameter_names(model)),
    ):
        with (
            materialised(template, {name: values[name] for name in names}) as holding,
            _MetaComputations() as meta,
        ):
            write(holding, tmp_path / f"template_{exports}", exports)
        assert meta.operations == []
        assert all(parameter.is_meta for parameter in template.parameters())  # freed again
        written = _folder_contents(tmp_path / f"template_{exports}")
        expected = _folder_contents(tmp_path / "one_process")
        if not exports:
            expected = {path: data for path, data in expected.items() if path.startswith("weights")}
        assert written == expected and written
    frozen = [name for name, parameter in model.named_parameters() if not parameter.requires_grad]
    gathered = set(method.exported_parameter_names(model))
    if method.kind != "full_ft":  # adapters: the frozen embeddings and blocks stay off rank 0
        assert not any(name.endswith("word_embeddings.weight") for name in gathered)
        # of the frozen base, at most the adapted layers' weights (LoRMA₊'s exact LoRA export reads them)
        assert {name for name in gathered & set(frozen) if not name.endswith("base_layer.weight")} == set()


@pytest.fixture(scope="module")
def tiny_decoder_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny decoders of the embedded and paper families, each tying its embedding and LM head: a Llama as
    SmolLM2 is (rotary frequencies in non-persistent buffers) and a GPT-2 (fused ``c_attn``)."""
    torch.manual_seed(0)
    decoders = {
        "llama": LlamaForCausalLM(
            LlamaConfig(
                vocab_size=200,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                tie_word_embeddings=True,
            )
        ),
        "gpt2": GPT2LMHeadModel(
            GPT2Config(
                vocab_size=200, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
            )
        ),
    }
    folders = {}
    for name, model in decoders.items():
        folders[name] = tmp_path_factory.mktemp(f"tiny_{name}")
        model.save_pretrained(folders[name])
    return folders


def _signature(model: torch.nn.Module) -> dict:
    """Everything of a model's structure that sharding and saving depend on, without its values."""
    tied: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        tied.setdefault(id(parameter), []).append(name)
    return {
        "parameters": [
            (name, p.shape, p.dtype, p.requires_grad)
            for name, p in model.named_parameters(remove_duplicate=False)
        ],
        "buffers": [(name, b.shape, b.dtype) for name, b in model.named_buffers()],
        "persistent": sorted(model.state_dict()),
        "tied": sorted(group for group in tied.values() if len(group) > 1),
        "training": [(name, module.training) for name, module in model.named_modules()],
        "config": {k: v for k, v in model.config.to_dict().items() if k not in ("dtype", "torch_dtype")},
        "dtype": model.dtype,
    }


BUILD_CASES = [
    ("bert", ["task=reviews"]),
    ("llama", ["task=e2e", "model=smollm2_135m"]),
    ("gpt2", ["task=e2e", "model=gpt2"]),
]


@pytest.mark.parametrize("overrides", METHOD_CASES, ids=lambda overrides: "-".join(overrides))
@pytest.mark.parametrize(("family", "model_overrides"), BUILD_CASES, ids=[case[0] for case in BUILD_CASES])
def test_a_rank_that_does_not_load_builds_the_model_rank_0_loads_on_the_meta_device(
    compose_settings, tiny_bert_dir, tiny_decoder_dirs, monkeypatch, family, model_overrides, overrides
):
    """Under ``trainer=fsdp`` rank 1 never reads the pretrained weights: its model (backbone and method) has
    every parameter and buffer on the meta device, and the same names, shapes, dtypes, trained parameters,
    ties, buffers, modes and config as rank 0's loaded model, so that ``fully_shard`` shards both alike."""
    folder = tiny_bert_dir if family == "bert" else tiny_decoder_dirs[family]
    settings = compose_settings("trainer=fsdp", *model_overrides, f"model.name_or_path={folder}", *overrides)
    method = method_for(settings.method.kind)
    rank_0, rank_1 = (DistEnv(rank, 2, rank, torch.device("cpu")) for rank in (0, 1))
    loaded = pipeline.build_model(settings, method, rank_0)
    reads: list[tuple] = []
    monkeypatch.setattr(models, "_pretrained", lambda *args: reads.append(args))
    built = pipeline.build_model(settings, method, rank_1)
    assert reads == []
    assert all(tensor.is_meta for tensor in (*built.parameters(), *built.buffers()))
    assert not any(tensor.is_meta for tensor in (*loaded.parameters(), *loaded.buffers()))
    assert _signature(built) == _signature(loaded)
    if family != "bert":
        assert _signature(built)["tied"]  # the decoders tie their LM head to the embedding


def test_every_rank_reads_the_weights_unless_the_model_is_sharded():
    assert [
        sharding.loads_weights(strategy, DistEnv(rank, 2, rank, torch.device("cpu")))
        for strategy in (Strategy.fsdp, Strategy.ddp)
        for rank in (0, 1)
    ] == [True, False, True, True]


def test_sharding_gives_every_rank_rank_0s_parameters_buffers_and_ties(
    tiny_bert_dir, tiny_decoder_dirs, tmp_path
):
    """2 gloo ranks build each model as train.py does under ``trainer=fsdp`` (rank 1 on the meta device,
    without reading weights) and shard it: every rank then holds rank 0's loaded parameters (the adapters'
    and the classifier's seeded initialisation included) and buffers (BERT's position ids, Llama's rotary
    frequencies, neither in a state dict), tied parameters stay tied, and the sharded model computes the
    unsharded model's logits."""
    # each case, and a buffer its model keeps out of its state dict (GPT-2 has no buffers)
    cases = {
        "position_ids": [f"model.name_or_path={tiny_bert_dir}", "method=lorma_plus"],
        "inv_freq": [
            "task=e2e",
            "model=smollm2_135m",
            f"model.name_or_path={tiny_decoder_dirs['llama']}",
            "method=lorma_plus",
        ],
        None: [
            "task=e2e",
            "model=gpt2",
            f"model.name_or_path={tiny_decoder_dirs['gpt2']}",
            "method=peft_lora",
        ],
    }
    arguments = [argument for case in cases.values() for argument in ("trainer=fsdp", *case, "::")][:-1]
    result = run_entry(
        *_torchrun(str(LOAD_DRIVER), str(tmp_path), *arguments), module="torch.distributed.run", timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for index, unsaved_buffer in enumerate(cases):
        first, second = (torch.load(tmp_path / f"case{index}_rank{rank}.pt") for rank in (0, 1))
        assert first["pretrained_reads"] == 1 and first["meta_before"] == []
        assert second["pretrained_reads"] == 0 and len(second["meta_before"]) == second["tensors_before"] > 0
        expected, buffers = first["values_before"], first["buffers_before"]
        if unsaved_buffer is not None:
            unsaved = [name for name in buffers if name.endswith(unsaved_buffer)]
            assert unsaved and not set(unsaved) & set(first["state_dict_keys"])
        for record in (first, second):
            assert record["tied_after"] == record["tied_before"] == first["tied_before"]
            assert record["values_after"].keys() == expected.keys()
            for name, value in expected.items():
                torch.testing.assert_close(record["values_after"][name], value, rtol=0, atol=0)
            assert record["buffers_after"].keys() == buffers.keys()
            for name, value in buffers.items():
                torch.testing.assert_close(record["buffers_after"][name], value, rtol=0, atol=0)
            torch.testing.assert_close(record["logits_after"], first["logits_before"], rtol=1e-5, atol=1e-6)
    assert first["tied_before"]  # GPT-2 ties its LM head to the embedding


@pytest.fixture
def world_of_one(tmp_path, monkeypatch):
    """A gloo process group of this process alone: FSDP2 shards over one rank, in the test process."""
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{tmp_path / 'store'}",
        rank=0,
        world_size=1,
        timeout=timedelta(seconds=60),
    )
    yield DistEnv(0, 1, 0, torch.device("cpu"))
    torch.distributed.destroy_process_group()


def test_sharded_models_rank_0_holds_no_weights_between_saves_and_gathers_only_what_is_asked(
    compose_settings, tiny_bert_dir, tmp_path, world_of_one
):
    """Rank 0's template has every parameter on the meta device; a save gathers just the named parameters,
    with the sharded model's values, and frees them at its end."""
    method, model = _trained_model(compose_settings, tiny_bert_dir, "method=lorma_plus")
    expected = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    sharded = ShardedModel(model, world_of_one, param_dtype=None)
    assert sharded.template is not None
    assert all(parameter.is_meta for parameter in sharded.template.parameters())
    names = method.saved_parameter_names(model)
    with sharded.gathered(names) as holding:
        held = {name: parameter for name, parameter in holding.named_parameters() if not parameter.is_meta}
        assert sorted(held) == sorted(names)
        for name in names:
            torch.testing.assert_close(held[name], expected[name], rtol=0, atol=0)
        method.save(holding, tmp_path / "adapter", "hub/base")
    assert all(parameter.is_meta for parameter in sharded.template.parameters())
    assert load_file(tmp_path / "adapter" / "adapter_model.safetensors").keys() == set(names)


def test_with_compile_each_block_is_compiled_whole_before_it_is_sharded(
    compose_settings, tiny_bert_dir, world_of_one, monkeypatch
):
    """FSDP2's recipe: ``block.compile(fullgraph=True)`` then ``fully_shard(block)``, the root sharded eager;
    rank 0's save template is a copy of the model from before compiling."""
    _, model = _trained_model(compose_settings, tiny_bert_dir, "method=lorma_plus")
    blocks = sharding.transformer_blocks(model)
    compiled: list[tuple[torch.nn.Module, dict]] = []
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda module, **options: compiled.append((module, options)), raising=True
    )
    sharded_in_order: list[tuple[torch.nn.Module, bool]] = []
    real_fully_shard = sharding.fully_shard

    def spy(module, **options):
        sharded_in_order.append((module, any(done is module for done, _ in compiled)))
        return real_fully_shard(module, **options)

    monkeypatch.setattr(sharding, "fully_shard", spy)
    sharded = ShardedModel(model, world_of_one, param_dtype=None, compile_blocks=True)
    assert [module for module, _ in compiled] == blocks and len(blocks) == 2
    assert all(options == {"fullgraph": True} for _, options in compiled)
    assert sharded_in_order == [*((block, True) for block in blocks), (model, False)]
    assert sharded.template is not None and sharded.template not in [module for module, _ in compiled]


def test_fp16_loss_scaling_skips_a_step_on_every_rank_when_one_ranks_shard_overflows(tmp_path):
    """2 gloo ranks, an inf in rank 1's gradient shard only: both ranks skip the update and halve the scale
    (``ShardedGradScaler`` all-reduces the overflow); the next, finite step updates both, scale kept."""
    result = run_entry(
        *_torchrun(str(SCALER_DRIVER), str(tmp_path)), module="torch.distributed.run", timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert seen[0] == seen[1]
    assert seen[0] == {
        "scaler": "ShardedGradScaler",
        "step0": {"weights_changed": False, "scale": 2.0**15},
        "step1": {"weights_changed": True, "scale": 2.0**15},
    }


@pytest.mark.slow  # ~7 s; the same preflight check keeps its fast test for trainer=ddp (test_cli.py)
def test_trainer_fsdp_without_torchrun_says_how_to_launch(tmp_path):
    result = run_entry("train.py", "trainer=fsdp", f"run_dir={tmp_path / 'run'}", timeout=120)
    assert result.returncode == 2
    assert "trainer.strategy: trainer=fsdp needs several processes" in result.stderr
    assert "torchrun --nproc_per_node=N train.py trainer=fsdp" in result.stderr


def _torchrun(*args: str) -> list[str]:
    return ["--standalone", "--nproc_per_node=2", *args]


def _assert_same_events(first, second, rel: float) -> None:
    events = [comparable(RunFolder(folder).read_events()) for folder in (first, second)]
    assert [e["event"] for e in events[0]] == [e["event"] for e in events[1]]
    for mine, theirs in zip(*events, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            assert theirs[key] == (pytest.approx(value, rel=rel) if isinstance(value, float) else value), key


def _adapters(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter" / "adapter_model.safetensors")


# 9 evaluation rows in batches of 4: rank 0 runs 2 batches, rank 1 one of its own and one in lockstep
COMPARED_RUN = [
    "data.num_examples=96",
    "data.max_length=32",
    "data.eval_limit=9",
    "trainer.eval_batch_size=4",
    "trainer.max_steps=3",
    "trainer.batch_size=8",
    "trainer.log_every=1",
    "trainer.eval_before_training=false",
    "trainer.progress_bar=false",
]


def _one_process_and_fsdp(tmp_path, *overrides: str, run: list[str] = COMPARED_RUN, steps: int = 3) -> None:
    """``run`` (``steps`` optimizer steps) on one process accumulating a global batch in 2 micro-steps,
    and on 2 FSDP ranks."""
    common = [*run, *overrides]
    single = run_entry("train.py", *common, "trainer.grad_accum=2", f"run_dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    fsdp = run_entry(
        *_torchrun("train.py", *common, "trainer=fsdp", f"run_dir={tmp_path / 'fsdp'}"),
        module="torch.distributed.run",
    )
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    one, two = (RunFolder(tmp_path / name).read_results() for name in ("single", "fsdp"))
    assert two["train"]["world_size"] == 2 and one["train"]["world_size"] == 1
    assert [e["event"] for e in RunFolder(tmp_path / "fsdp").read_events()] == ["train"] * steps + ["eval"]
    assert sorted(p.name for p in (tmp_path / "fsdp").iterdir()) == sorted(
        p.name for p in (tmp_path / "single").iterdir()
    )


def _assert_same_tensors(tmp_path, saved: str, rtol: float, atol: float) -> None:
    tensors = [load_file(tmp_path / name / saved) for name in ("single", "fsdp")]
    assert tensors[0].keys() == tensors[1].keys() and tensors[0]
    for name, tensor in tensors[0].items():
        assert tensors[1][name].dtype == tensor.dtype
        torch.testing.assert_close(tensors[1][name], tensor, rtol=rtol, atol=atol)


@pytest.mark.slow  # ~40 s (two torchrun ranks); DDP's equality test stays fast
def test_fsdp_with_two_processes_trains_and_saves_what_one_process_with_the_same_global_batch_does(tmp_path):
    """The embedded MiniLM as users run it (dropout 0.1), its 6 blocks sharded over 2 ranks: the same losses,
    gradient norms (of the unsharded gradients), evaluations, adapter tensors and run folder as one process
    accumulating the same global batch."""
    _one_process_and_fsdp(tmp_path)
    _assert_same_events(tmp_path / "single", tmp_path / "fsdp", rel=1e-4)
    for saved in ("adapter", "adapter_best"):
        _assert_same_tensors(tmp_path, f"{saved}/adapter_model.safetensors", rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fsdp_full_fine_tuning_trains_and_saves_what_one_process_does(tmp_path):
    """Every weight trained and sharded: the same losses and gradient norms, and model/ and model_best/ as
    one process's files. Adam's first steps move each weight by about the learning rate (1e-3) whatever the
    size of its gradient, so a gradient near 0 summed in another order can move a weight differently: the
    weights agree to 2e-4 (measured: 7e-5 at most), not to float precision."""
    _one_process_and_fsdp(tmp_path, "method=full_ft")
    _assert_same_events(tmp_path / "single", tmp_path / "fsdp", rel=1e-4)
    for saved in ("model", "model_best"):
        _assert_same_tensors(tmp_path, f"{saved}/model.safetensors", rtol=1e-3, atol=2e-4)
        assert (tmp_path / "fsdp" / saved / "config.json").read_text() == (
            tmp_path / "single" / saved / "config.json"
        ).read_text()


def _eager_and_compiled_sharded_runs(tmp_path, monkeypatch, common: list[str], timeout: int) -> None:
    """``common`` on 2 FSDP ranks into ``tmp_path/eager`` and, with ``trainer.compile=true``, into
    ``tmp_path/compiled``, each with its own inductor cache: only the compiled run generates code."""
    for name, extra in (("eager", []), ("compiled", ["trainer.compile=true"])):
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / f"inductor_{name}"))
        result = run_entry(
            *_torchrun("train.py", *common, *extra, f"run_dir={tmp_path / name}"),
            module="torch.distributed.run",
            timeout=timeout,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert any((tmp_path / "inductor_compiled").rglob("*.py"))  # inductor generated the blocks' code
    assert not any((tmp_path / "inductor_eager").rglob("*.py"))


@pytest.mark.slow  # ~2 min: two torchrun runs, one compiling each block with inductor on 2 cores
def test_fsdp_with_compiled_blocks_trains_to_the_eager_losses(tiny_bert_dir, tmp_path, monkeypatch):
    """``trainer.compile=true`` under FSDP2 (every block compiled whole, then sharded) gives the eager sharded
    run's losses, gradient norms, evaluations and adapters, to inductor's float reordering. No dropout:
    inductor draws its own masks."""
    common = [
        f"model.name_or_path={tiny_bert_dir}",
        *COMPARED_RUN,
        "method=lorma_plus",
        "method.dropout=0.0",
        "trainer=fsdp",
    ]
    _eager_and_compiled_sharded_runs(tmp_path, monkeypatch, common, timeout=600)
    _assert_same_events(tmp_path / "eager", tmp_path / "compiled", rel=1e-4)
    expected, actual = _adapters(tmp_path / "eager"), _adapters(tmp_path / "compiled")
    assert expected.keys() == actual.keys() and expected
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fsdp_resumes_from_its_sharded_checkpoint_after_a_hard_kill_exactly(
    tiny_bert_with_dropout_dir, tmp_path
):
    """Both ranks die by SIGKILL building step 4's batches (a sharded checkpoint was written at step 3's
    evaluation); ``resume=true`` under torchrun ends with the events and adapters of an uninterrupted run."""
    overrides = [
        f"model.name_or_path={tiny_bert_with_dropout_dir}",
        "data.num_examples=72",
        "data.max_length=32",
        "trainer=fsdp",
        "trainer.batch_size=4",
        "trainer.grad_accum=2",
        "trainer.eval_batch_size=32",
        "trainer.max_steps=6",
        "trainer.eval_strategy=steps",
        "trainer.eval_steps=3",
        "trainer.log_every=1",
        "trainer.lr=2e-3",
        "trainer.progress_bar=false",
    ]
    straight = run_entry(
        *_torchrun("train.py", *overrides, f"run_dir={tmp_path / 'straight'}"), module="torch.distributed.run"
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_dir = tmp_path / "run"
    # per rank: 2 batches a step, 1 evaluation batch at step 3: the 9th batch is step 4's second
    killed = run_entry(
        *_torchrun(str(KILL_DRIVER), "collate", "9", *overrides, f"run_dir={run_dir}"),
        module="torch.distributed.run",
    )
    assert killed.returncode != 0
    checkpoint = run_dir / "checkpoints" / "last"
    assert (checkpoint / "state.pt").is_file() and any((checkpoint / "shards").iterdir())
    resumed = run_entry(
        *_torchrun("train.py", "resume=true", f"run_dir={run_dir}"), module="torch.distributed.run"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = RunFolder(run_dir).read_results()
    assert record["train"]["resumed_from_step"] == 3
    _assert_same_events(tmp_path / "straight", run_dir, rel=1e-6)
    expected, actual = _adapters(tmp_path / "straight"), _adapters(run_dir)
    assert expected.keys() == actual.keys() and expected
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-6, atol=1e-7)
    assert not (run_dir / "checkpoints").exists()


# 7 held-out rows decoded 3 at a time: rank 0 decodes rows 0, 2, 4 and then row 6, rank 1 rows 1, 3, 5
# and then, out of rows, the filler (row 0). Each rank's forward passes gather parameters on both, so a
# rank that stopped stepping with its own sequences would leave the other waiting. The global batch of 8
# is 2 ranks × 4, or 1 process × 4 × 2 accumulated.
GENERATION_RUN = ["data.eval_limit=7", "trainer.eval_batch_size=3", "trainer.batch_size=4"]
LOCKSTEP_CALLS = [([0, 2, 4], [1, 3, 5]), ([6], [0])]


def _one_rank_ends_at_once(hypotheses: list[str]) -> bool:
    """Whether, in some lockstep call, one rank's batch decoded nothing but the end of sequence (empty
    hypotheses) while the other's went on: the premise of the test, that ``synced_gpus`` is needed."""
    return any(
        all(not hypotheses[row] for row in mine) != all(not hypotheses[row] for row in theirs)
        for mine, theirs in LOCKSTEP_CALLS
    )


def _generation_runs(tmp_path, *overrides: str) -> list[str]:
    """A SMOKE generation run on one process and on 2 FSDP ranks decoding in lockstep: the same losses,
    gradient norms, metrics, adapters and saved predictions; returns the hypotheses."""
    _one_process_and_fsdp(tmp_path, *overrides, run=GENERATION_RUN, steps=2)
    _assert_same_events(tmp_path / "single", tmp_path / "fsdp", rel=1e-4)
    _assert_same_tensors(tmp_path, "adapter/adapter_model.safetensors", rtol=1e-4, atol=1e-5)
    predictions = [tmp_path / name / "predictions" for name in ("single", "fsdp")]
    assert sorted(p.name for p in predictions[0].iterdir()) == ["validation.hyp.txt", "validation.jsonl"]
    for name in ("validation.hyp.txt", "validation.jsonl"):
        assert (predictions[1] / name).read_text() == (predictions[0] / name).read_text()
    hypotheses = (predictions[1] / "validation.hyp.txt").read_text().splitlines()
    assert len(hypotheses) == 7
    return hypotheses


@pytest.mark.slow  # 1.5-3 min each on 2 shared cores (a one-process and a 2-rank run of SmolLM2)
def test_fsdp_nlg_smoke_decodes_in_lockstep_what_one_process_decodes(tmp_path):
    """The NLG SMOKE (SmolLM2 on restaurants, greedy, fp32): the same hypotheses, word for word, and the
    same E2E metrics. 42 meaning representations hold 7 out for validation; in the last call rank 1's
    filler ends at once while rank 0's row runs on, and rank 1 keeps stepping with it."""
    hypotheses = _generation_runs(tmp_path, "debug=smoke_nlg", "data.num_examples=42")
    assert _one_rank_ends_at_once(hypotheses)


@pytest.mark.slow
def test_fsdp_beam_search_decodes_in_lockstep_what_one_process_decodes(tmp_path):
    """Beam search (2 beams; Table 3 decodes with more) on the NLG SMOKE, a few tokens each. Every call
    here runs its 8 steps (the search ends when both beams have), so the lockstep here is rank 1's filler
    call; beams ending at different steps on different ranks are test_fsdp_decoding's."""
    _generation_runs(
        tmp_path,
        "debug=smoke_nlg",
        "data.num_examples=42",
        "generation.num_beams=2",
        "generation.max_new_tokens=8",
    )


@pytest.mark.slow
def test_fsdp_maths_smoke_decodes_in_lockstep_what_one_process_decodes(tmp_path):
    """The maths SMOKE (SmolLM2 on GSM8K-style problems, greedy, fp32): the same answers, extracted and
    judged on rank 0, and the same accuracy. Its answers all run to generation.max_new_tokens, so the
    lockstep here is rank 1's filler call; unequal lengths are the NLG tests' (and test_fsdp_decoding's)."""
    _generation_runs(tmp_path, "debug=smoke_maths")


@pytest.mark.slow  # ~5 min on 2 busy cores: two 2-rank SmolLM2 runs, one compiling every block with inductor
def test_fsdp_compiled_causal_lm_trains_and_decodes_what_the_eager_sharded_run_does(tmp_path, monkeypatch):
    """``trainer.compile=true`` on a causal LM under FSDP2: its blocks, compiled whole, would recompile per
    layer's KV cache past torch's limit, so training builds none and decoding runs eagerly. The NLG SMOKE
    (SmolLM2, greedy, fp32, adapter dropout off: inductor draws its own masks) gives the eager sharded
    run's losses, gradient norms and hypotheses."""
    common = [
        *GENERATION_RUN,
        "debug=smoke_nlg",
        "data.num_examples=42",
        "method.dropout=0.0",
        "trainer=fsdp",
    ]
    _eager_and_compiled_sharded_runs(tmp_path, monkeypatch, common, timeout=900)
    _assert_same_events(tmp_path / "eager", tmp_path / "compiled", rel=1e-4)
    hypotheses = [
        (tmp_path / name / "predictions" / "validation.hyp.txt").read_text() for name in ("eager", "compiled")
    ]
    assert hypotheses[0] == hypotheses[1] and hypotheses[0].strip()
