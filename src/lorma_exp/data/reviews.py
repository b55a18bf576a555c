"""The reviews task (the embedded default): product reviews generated from our own templates and word lists.

It ships with the project (no download, no licence question) and is deterministic for a given
``data.sample_seed``. Sentiment follows the words, except that negation flips it ("not bad" is positive)
and in a contrast ("..., but ...") the second clause decides: a model must read more than one word.
"""

from __future__ import annotations

import random

import datasets
from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, TrainConfig
from lorma_exp.data.base import TaskData
from lorma_exp.data.classification import build_classification_task
from lorma_exp.distributed import DistEnv

LABELS = ("negative", "positive")
VALIDATION_FRACTION = 1 / 6

SUBJECTS = (
    "this blender",
    "the headphones",
    "my new kettle",
    "the delivery",
    "customer service",
    "the battery life",
    "the screen",
    "this jacket",
    "the app",
    "the instructions",
    "the coffee maker",
    "this backpack",
    "the keyboard",
    "the mattress",
    "the vacuum cleaner",
    "the camera",
    "this desk lamp",
    "the charger",
    "the running shoes",
    "the packaging",
    "the sound quality",
    "the hotel room",
    "the tent",
    "this novel",
)
POSITIVE = (
    "great",
    "excellent",
    "reliable",
    "sturdy",
    "comfortable",
    "fantastic",
    "solid",
    "impressive",
    "smooth",
    "delightful",
    "superb",
    "well made",
    "a pleasure to use",
    "worth the money",
    "wonderful",
    "brilliant",
)
NEGATIVE = (
    "awful",
    "flimsy",
    "disappointing",
    "unreliable",
    "noisy",
    "useless",
    "terrible",
    "poorly made",
    "frustrating",
    "a waste of money",
    "broken",
    "horrible",
    "cheap and fragile",
    "annoying",
    "mediocre",
    "a letdown",
)
INTENSIFIERS = ("", "", "really ", "very ", "extremely ", "quite ", "truly ")
NEGATIONS = ("is not", "was not", "is never", "isn't", "wasn't")
AFFIRMATIONS = ("is", "was", "seems", "turned out to be", "feels")
FILLERS = (
    "",
    "",
    "",
    "I bought it last month. ",
    "Ordered it on a Tuesday. ",
    "Got this as a gift. ",
    "Second one I have owned. ",
    "Used it every day for a week. ",
)


def _clause(rng: random.Random) -> tuple[str, int]:
    """One statement about a product and its sentiment (1 positive, 0 negative)."""
    polarity = rng.randrange(2)
    adjective = rng.choice(POSITIVE if polarity else NEGATIVE)
    subject = rng.choice(SUBJECTS)
    if rng.random() < 0.3:
        return f"{subject} {rng.choice(NEGATIONS)} {adjective}", 1 - polarity
    return f"{subject} {rng.choice(AFFIRMATIONS)} {rng.choice(INTENSIFIERS)}{adjective}", polarity


def generate_reviews(num_examples: int, seed: int) -> list[dict[str, str | int]]:
    """``num_examples`` distinct reviews with labels, the same list for the same seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict[str, str | int]] = []
    attempts = 0
    while len(rows) < num_examples:
        attempts += 1
        if attempts > 50 * num_examples:
            raise ConfigError(
                f"data.num_examples: cannot generate {num_examples} distinct reviews. Use fewer."
            )
        first, label = _clause(rng)
        if rng.random() < 0.35:
            second, label = _clause(rng)
            sentence = f"{first}, but {second}."
        else:
            sentence = f"{first}."
        text = rng.choice(FILLERS) + sentence[0].upper() + sentence[1:]
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return rows


def build(settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    data = settings.data
    if data.num_examples < 12:
        raise ConfigError(
            f"data.num_examples: need at least 12 reviews, got {data.num_examples}. Use e.g. 2400."
        )
    rows = generate_reviews(data.num_examples, data.sample_seed)
    held_out = max(1, int(len(rows) * VALIDATION_FRACTION))
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(LABELS))}
    )
    splits = {
        "train": datasets.Dataset.from_list(rows[held_out:], features=features),
        "validation": datasets.Dataset.from_list(rows[:held_out], features=features),
    }
    unknown = set(data.eval_splits) - {"validation"}
    if unknown:
        raise ConfigError(
            f"data.eval_splits: the reviews task has only a validation split, not {sorted(unknown)}."
        )
    task_data = build_classification_task(splits, tokenizer, settings.task, data, env)
    task_data.info["labels"] = list(LABELS)
    return task_data
