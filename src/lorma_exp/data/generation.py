"""Prompt → text tasks (data-to-text, maths): loss-masked training rows, batched decoding, scoring.

A generation task family supplies examples as ``{"id", "prompt", "target", "references"}`` dicts and a
scoring function; this module turns them into training rows whose loss covers only the target tokens, and
evaluates by decoding every prompt of a split (sharded over ranks) and scoring the hypotheses once.

A sharded (FSDP) model decodes in lockstep: each forward pass gathers the parameters on every rank, so
every rank makes as many ``generate`` calls as rank 0 (which has the most prompts), a rank out of prompts
decodes a filler batch and keeps nothing, and every call steps until the last sequence of every rank is
done (``synced_gpus``: a finished rank keeps running forward passes whose tokens it discards).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from lorma_exp.config import GenerationBackend, GenerationConfig
from lorma_exp.data.base import IGNORE_INDEX, Batch
from lorma_exp.distributed import DistEnv, all_gather_objects, broadcast_object
from lorma_exp.run_folder import prediction_files

Example = Mapping[str, Any]
"""``id`` (str), ``prompt`` (str), ``target`` (the training continuation), ``references`` (list[str])."""

ScoreFn = Callable[[list[str], list[Example]], tuple[dict[str, float], list[dict[str, Any]]]]
"""(hypotheses, examples) -> (split metrics, one record per example to save next to the hypotheses)."""


def encode_training_example(
    prompt: str, target: str, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, list[int]]:
    """Token ids of prompt + target + end-of-sequence, with the prompt masked out of the loss.

    Tokenising the two parts separately keeps the prompt/target boundary exact; the prompt gets the
    tokenizer's own special tokens (a BOS for Llama-style models), as at generation time. Sequences longer
    than ``max_length`` lose the end of the target (prompts are short; a target cut short still teaches).
    """
    prompt_ids = tokenizer(prompt)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + target_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + target_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


class CausalLMCollator:
    """Right-pads training rows; padding is masked from attention and loss."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[Mapping[str, Any]]) -> Batch:
        length = max(len(row["input_ids"]) for row in rows)
        input_ids, attention, labels = [], [], []
        for row in rows:
            padding = length - len(row["input_ids"])
            input_ids.append(list(row["input_ids"]) + [self.pad_token_id] * padding)
            attention.append([1] * len(row["input_ids"]) + [0] * padding)
            labels.append(list(row["labels"]) + [IGNORE_INDEX] * padding)
        return {
            "input_ids": torch.tensor(input_ids),
            "attention_mask": torch.tensor(attention),
            "labels": torch.tensor(labels),
        }


@dataclass(frozen=True)
class Lockstep:
    """How a rank decodes when the model is sharded: ``batches`` generate calls whatever its own number
    of prompts, the calls beyond its prompts on ``filler`` (whose text it discards)."""

    batches: int
    filler: str


def generate_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    generation: GenerationConfig,
    batch_size: int,
    max_prompt_length: int,
    progress: bool,
    lockstep: Lockstep | None = None,
) -> list[str]:
    """Decode every prompt (left-padded batches) and return only the newly generated text.

    With ``lockstep`` (a sharded model) every call is collective: see the module docstring. With
    ``generation.backend=vllm`` vLLM decodes instead (:mod:`lorma_exp.data.vllm`).
    """
    if generation.backend == GenerationBackend.vllm:
        from lorma_exp.data.vllm import generate_with_vllm

        return generate_with_vllm(model, tokenizer, prompts, generation, max_prompt_length)
    device = next(model.parameters()).device
    texts: list[str] = []
    was_training = model.training
    model.eval()
    bar = tqdm(
        total=len(prompts), desc="decode", unit="ex", disable=None if progress else True, dynamic_ncols=True
    )
    calls = lockstep.batches if lockstep is not None else math.ceil(len(prompts) / batch_size)
    for call in range(calls):
        chunk = list(prompts[call * batch_size : (call + 1) * batch_size])
        # only lockstep calls run out of prompts: they decode the filler and keep nothing
        batch = chunk if chunk or lockstep is None else [lockstep.filler]
        encoded = tokenizer(
            batch, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_length
        )
        encoded = {
            key: value.to(device) for key, value in encoded.items() if key in ("input_ids", "attention_mask")
        }
        with torch.no_grad():
            output = model.generate(
                **encoded,
                num_beams=generation.num_beams,
                length_penalty=generation.length_penalty,
                no_repeat_ngram_size=generation.no_repeat_ngram_size,
                max_new_tokens=generation.max_new_tokens,
                do_sample=False,
                early_stopping=generation.num_beams > 1,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                synced_gpus=lockstep is not None,
            )
        if not chunk:
            continue
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        texts.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return texts


class GenerationEvaluator:
    """Decodes a split, scores it once on rank 0, and saves hypotheses and per-example records."""

    def __init__(
        self,
        splits: Mapping[str, Sequence[Example]],
        tokenizer: PreTrainedTokenizerBase,
        generation: GenerationConfig,
        score: ScoreFn,
        main_metric: str,
        greater_is_better: bool,
        max_prompt_length: int,
        env: DistEnv,
    ) -> None:
        self.splits = splits
        self.tokenizer = tokenizer
        self.generation = generation
        self.score = score
        self.main_metric = main_metric
        self.greater_is_better = greater_is_better
        self.max_prompt_length = max_prompt_length
        self.env = env

    def _lockstep(self, model: torch.nn.Module, examples: list[Example], batch_size: int) -> Lockstep | None:
        """A sharded model's decoding plan: rank 0's number of batches (it has the most prompts), with the
        split's first prompt as the filler; None for a model that is not sharded."""
        if not isinstance(model, FSDPModule) or not examples:
            return None
        most_prompts = len(range(0, len(examples), self.env.world_size))
        return Lockstep(math.ceil(most_prompts / batch_size), examples[0]["prompt"])

    def __call__(
        self, model: torch.nn.Module, split: str, *, batch_size: int, output_dir: Path | None = None
    ) -> dict[str, float]:
        examples = list(self.splits[split])
        mine = list(range(self.env.rank, len(examples), self.env.world_size))
        texts = generate_texts(
            model,
            self.tokenizer,
            [examples[i]["prompt"] for i in mine],
            self.generation,
            batch_size,
            self.max_prompt_length,
            progress=self.env.is_main,
            lockstep=self._lockstep(model, examples, batch_size),
        )
        pairs = sorted(
            pair
            for shard in all_gather_objects(list(zip(mine, texts, strict=True)), self.env)
            for pair in shard
        )
        metrics: dict[str, float] | None = None
        if self.env.is_main:
            hypotheses = [text for _, text in pairs]
            metrics, records = self.score(hypotheses, examples)
            if output_dir is not None:
                save_predictions(output_dir, split, examples, hypotheses, records)
        return broadcast_object(metrics, self.env)


def save_predictions(
    output_dir: Path,
    split: str,
    examples: Sequence[Example],
    hypotheses: list[str],
    records: list[dict[str, Any]],
) -> None:
    """``<split>.hyp.txt`` (one hypothesis per line, the scorers' format) and ``<split>.jsonl`` (everything)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    hypotheses_file, rows_file = prediction_files(output_dir, split)
    hypotheses_file.write_text("".join(h.replace("\n", " ") + "\n" for h in hypotheses))
    with rows_file.open("w") as handle:
        for example, hypothesis, record in zip(examples, hypotheses, records, strict=True):
            row = {
                "id": example["id"],
                "prompt": example["prompt"],
                "hypothesis": hypothesis,
                "references": list(example["references"]),
                **record,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
