"""Prompt → text tasks (data-to-text, maths): loss-masked training rows, batched decoding, scoring.

A generation task family supplies examples as ``{"id", "prompt", "target", "references"}`` dicts and a
scoring function; this module turns them into training rows whose loss covers only the target tokens, and
evaluates by decoding every prompt of a split (sharded over ranks) and scoring the hypotheses once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
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


def generate_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    generation: GenerationConfig,
    batch_size: int,
    max_prompt_length: int,
    progress: bool,
) -> list[str]:
    """Decode every prompt (left-padded batches) and return only the newly generated text.

    With ``generation.backend=vllm`` vLLM decodes instead (:mod:`lorma_exp.data.vllm`).
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
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        encoded = tokenizer(
            chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_length
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
            )
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
