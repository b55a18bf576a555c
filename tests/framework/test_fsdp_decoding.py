"""Decoding a sharded (FSDP2) model in lockstep: 2 gloo processes decode what one process decodes, with
ranks that hold different numbers of prompts and whose sequences end at different steps.

The model is a tiny Llama whose greedy continuation is known in advance: its embeddings are one-hot and
its output layer maps word ``wi`` to ``wi+1`` (the last word to end-of-sequence) with a margin its small
random blocks cannot overturn, so a prompt ending in ``wi`` continues ``wi+1 … w15`` and stops. The blocks
still run, with their KV cache, and are sharded, so every forward pass gathers parameters on both ranks.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lorma_exp.config import GenerationConfig
from lorma_exp.data.generation import GenerationEvaluator
from lorma_exp.distributed import DistEnv
from lorma_exp.sharding import ShardedModel

WORDS = [f"w{i}" for i in range(16)]
VOCAB = ["<pad>", "</s>", *WORDS]
PAD_ID, EOS_ID = 0, 1
SPLIT = "validation"
BATCH_SIZE = 2
WORLD = 2
# A collective that one rank never joins fails after this long instead of hanging the suite.
COLLECTIVE_TIMEOUT = timedelta(seconds=60)

# Rank 0 decodes rows 0, 2, 4 (two calls), rank 1 rows 1, 3 (one call, then a filler call on row 0's
# prompt). Generated words: call 1, rank 0 {1, 6} against rank 1 {12, 3}; call 2, rank 0 {14} against
# rank 1's filler {1}: in both calls one rank's sequences end long before the other's.
PROMPTS = ["w0 w14", "w2 w3", "w1 w2 w3 w9", "w12", "w5 w1"]


def continuation(prompt: str) -> str:
    """The literal greedy continuation of the successor model: every word after the prompt's last one."""
    last = WORDS.index(prompt.split()[-1])
    return " ".join(WORDS[last + 1 :])


def successor_tokenizer() -> PreTrainedTokenizerFast:
    """One token per word; left padding, as the pipeline sets up a generation task's tokenizer."""
    words = Tokenizer(models.WordLevel({token: i for i, token in enumerate(VOCAB)}, unk_token="<pad>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>")
    tokenizer.padding_side = "left"
    return tokenizer


def successor_model() -> LlamaForCausalLM:
    """A 2-block Llama whose greedy next token after ``wi`` is ``wi+1`` (see the module docstring)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    successor = {VOCAB.index(word): VOCAB.index(word) + 1 for word in WORDS[:-1]}
    successor.update({VOCAB.index(WORDS[-1]): EOS_ID, PAD_ID: EOS_ID, EOS_ID: EOS_ID})
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for token, following in successor.items():
            model.model.embed_tokens.weight[token, token] = 1.0
            model.lm_head.weight[following, token] = 10.0
    return model.eval()


def examples() -> list[dict]:
    return [
        {"id": str(i), "prompt": p, "target": "", "references": [continuation(p)]}
        for i, p in enumerate(PROMPTS)
    ]


def exact_match(hypotheses: list[str], rows: list[dict]) -> tuple[dict[str, float], list[dict]]:
    matches = [hypothesis == row["references"][0] for hypothesis, row in zip(hypotheses, rows, strict=True)]
    return {"exact": sum(matches) / len(matches)}, [{"exact": match} for match in matches]


def evaluator(env: DistEnv, num_beams: int) -> GenerationEvaluator:
    generation = GenerationConfig(num_beams=num_beams, max_new_tokens=len(WORDS) + 2)
    return GenerationEvaluator(
        {SPLIT: examples()}, successor_tokenizer(), generation, exact_match, "exact", True, 16, env
    )


def decode_on_rank(rank: int, store: Path, out: Path, num_beams: int) -> None:
    """One rank: shard the model as ``trainer=fsdp`` does, evaluate, record metrics and forward passes."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # talk to itself over loopback, whatever the host's network
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD, timeout=COLLECTIVE_TIMEOUT
    )
    try:
        env = DistEnv(rank=rank, world_size=WORLD, local_rank=rank, device=torch.device("cpu"))
        sharded = ShardedModel(successor_model(), env, param_dtype=None)
        forwards = []
        sharded.module.register_forward_hook(lambda *_: forwards.append(1))
        metrics = evaluator(env, num_beams)(
            sharded.module,
            SPLIT,
            batch_size=BATCH_SIZE,
            output_dir=out / "predictions" if rank == 0 else None,
        )
        (out / f"rank{rank}.json").write_text(json.dumps({"metrics": metrics, "forwards": len(forwards)}))
    finally:
        dist.destroy_process_group()


SINGLE_PROCESS = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_the_successor_model_decodes_unequal_lengths_on_each_rank():
    """The premise of the lockstep test: the ranks' prompts continue for different numbers of words in
    both of their calls, and one process decodes the literal continuations greedily."""
    lengths = [len(continuation(p).split()) for p in PROMPTS]
    assert lengths == [1, 12, 6, 3, 14]
    assert evaluator(SINGLE_PROCESS, num_beams=1)(successor_model(), SPLIT, batch_size=BATCH_SIZE) == {
        "exact": 1.0
    }


@pytest.mark.parametrize(
    "num_beams",
    [1, pytest.param(2, marks=pytest.mark.slow)],
    ids=["greedy", "beam2"],  # beam2: make test-slow
)
def test_a_sharded_model_decodes_in_lockstep_what_one_process_decodes(tmp_path, num_beams):
    """Rank 1 runs out of prompts (a filler call), and in each call one rank's sequences end while the
    other's go on (rank 0's in the first, rank 1's in the second) and it keeps stepping (``synced_gpus``):
    both ranks run every call's longest decoding, and the hypotheses saved are one process's, in the
    split's order, with the metrics broadcast to both ranks.

    (Beam search stops at the first two finished beams, ``early_stopping=True``; on this model, whose
    every other token is equally unlikely, that cuts the last prompt's continuation short, in one process
    as in two.)"""
    expected = evaluator(SINGLE_PROCESS, num_beams)(
        successor_model(), SPLIT, batch_size=BATCH_SIZE, output_dir=tmp_path / "single"
    )
    mp.spawn(decode_on_rank, args=(tmp_path / "store", tmp_path, num_beams), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    assert [rank["metrics"] for rank in ranks] == [expected] * WORLD
    assert ranks[0]["forwards"] == ranks[1]["forwards"]
    if num_beams == 1:
        # a forward pass per token, the end of sequence included: calls 1 and 2 step until their longest
        # sequence (prompts 1 and 4) ends, where alone rank 0 would stop after 7 + 15 and rank 1 after 13 + 2
        assert ranks[0]["forwards"] == (12 + 1) + (14 + 1)
    saved = [(tmp_path / folder / f"{SPLIT}.hyp.txt").read_text() for folder in ("single", "predictions")]
    assert saved[1] == saved[0]
    if num_beams == 1:
        assert saved[1].splitlines() == [continuation(p) for p in PROMPTS]
