"""The embedded generation task: E2E-style restaurant meaning representations -> descriptions.

Meaning representations use the E2E challenge's attributes and notation (``name[Blue Heron],
eatType[pub], food[Italian], area[riverside], near[The Old Mill]``); every one has several reference
texts written by our own templates (main clause and extra sentences varied in wording and order), so
the task ships with the project, is deterministic for a given ``data.sample_seed``, and is scored by the
E2E metric suite against multiple references just like E2E itself. Held-out meaning representations are
combinations never seen in training.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, TrainConfig
from lorma_exp.data.base import TaskData
from lorma_exp.data.nlg import ReferenceGroup, build_data_to_text_task
from lorma_exp.distributed import DistEnv

VALIDATION_FRACTION = 1 / 6
REFERENCES_PER_MR = 3
MIN_ATTRIBUTES, MAX_ATTRIBUTES = 2, 5
"""How many attributes besides the name a meaning representation has."""

NAMES = (
    "Blue Heron",
    "The Copper Kettle",
    "The Old Mill",
    "Saffron Court",
    "The Lantern",
    "Green Fig",
    "The Wandering Goose",
    "Marigold",
    "The Brass Anchor",
    "Olive Grove",
    "The Quiet Fox",
    "Juniper House",
    "The Red Door",
    "Silver Birch",
    "The Salt Cellar",
    "Little Acorn",
    "The Harbour Light",
    "Cinnamon Tree",
    "The Velvet Spoon",
    "Wild Thyme",
)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "eatType": ("restaurant", "pub", "coffee shop"),
    "food": ("French", "Italian", "Japanese", "Indian", "Chinese", "English", "Fast food"),
    "priceRange": ("cheap", "moderate", "high", "less than £20", "£20-25", "more than £30"),
    "customer rating": ("low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5"),
    "area": ("riverside", "city centre"),
    "familyFriendly": ("yes", "no"),
    "near": NAMES,
}
ORDER = ("name", *ATTRIBUTES)
"""The E2E data's attribute order."""

AREA_AFTER = {
    "riverside": (" by the riverside", " on the riverside"),
    "city centre": (" in the city centre",),
}
AREA_FRONT = {"riverside": ("By the riverside", "On the riverside"), "city centre": ("In the city centre",)}
PRICE_WORDS = {"cheap": "cheap", "moderate": "moderately priced", "high": "expensive"}
PRICE_LEVELS = {"cheap": "low", "moderate": "moderate", "high": "high"}
FAMILY = {
    "yes": ("It is family friendly.", "It is kid friendly.", "Children are welcome."),
    "no": ("It is not family friendly.", "It is not kid friendly.", "Children are not welcome."),
}

MeaningRepresentation = dict[str, str]


def format_mr(mr: MeaningRepresentation) -> str:
    """The E2E notation: ``name[...], eatType[...], ...`` in the data's attribute order."""
    return ", ".join(f"{key}[{mr[key]}]" for key in ORDER if key in mr)


def sample_mr(rng: random.Random) -> MeaningRepresentation:
    """A name plus 2-5 other attributes with random values (``near`` never names the place itself)."""
    mr = {"name": rng.choice(NAMES)}
    for key in rng.sample(list(ATTRIBUTES), rng.randint(MIN_ATTRIBUTES, MAX_ATTRIBUTES)):
        choices = [value for value in ATTRIBUTES[key] if value != mr["name"]]
        mr[key] = rng.choice(choices)
    return mr


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _main_clause(mr: MeaningRepresentation, rng: random.Random) -> str:
    """Name, type of place, food and area in one sentence, in one of several shapes."""
    name, kind = mr["name"], mr.get("eatType", "place")
    food = mr.get("food", "")
    food_before = f"{food.lower() if food == 'Fast food' else food} " if food else ""
    area = rng.choice(AREA_AFTER[mr["area"]]) if "area" in mr else ""
    shapes: list[Callable[[], str]] = [
        lambda: f"{name} is {_with_article(food_before + kind)}{area}.",
        lambda: f"There is {_with_article(food_before + kind)} called {name}{area}.",
    ]
    if food:
        serving = "fast food" if food == "Fast food" else f"{food} food"
        shapes.append(lambda: f"{name} is {_with_article(kind)} serving {serving}{area}.")
    if "area" in mr:
        front = rng.choice(AREA_FRONT[mr["area"]])
        shapes.append(lambda: f"{front}, {name} is {_with_article(food_before + kind)}.")
    return rng.choice(shapes)()


def _price(value: str, rng: random.Random) -> str:
    if value in PRICE_WORDS:
        return rng.choice(
            (
                f"It is {PRICE_WORDS[value]}.",
                f"Prices are {PRICE_LEVELS[value]}.",
                f"It has {_with_article(PRICE_LEVELS[value])} price range.",
            )
        )
    return rng.choice((f"Meals cost {value}.", f"It has a price range of {value}."))


def _rating(value: str, rng: random.Random) -> str:
    if "out of" in value:
        return rng.choice((f"It has a customer rating of {value}.", f"Customers rate it {value}."))
    return rng.choice((f"It has {_with_article(value)} customer rating.", f"Customers rate it as {value}."))


def _near(value: str, rng: random.Random) -> str:
    return rng.choice(
        (f"It is near {value}.", f"It is located near {value}.", f"You can find it close to {value}.")
    )


def realise(mr: MeaningRepresentation, rng: random.Random) -> str:
    """One reference text: the main clause, then the other attributes' sentences in random order."""
    extras = []
    if "priceRange" in mr:
        extras.append(_price(mr["priceRange"], rng))
    if "customer rating" in mr:
        extras.append(_rating(mr["customer rating"], rng))
    if "familyFriendly" in mr:
        extras.append(rng.choice(FAMILY[mr["familyFriendly"]]))
    if "near" in mr:
        extras.append(_near(mr["near"], rng))
    rng.shuffle(extras)
    return " ".join([_main_clause(mr, rng), *extras])


def generate_restaurants(num_mrs: int, seed: int) -> list[ReferenceGroup]:
    """``num_mrs`` distinct meaning representations, each with up to 3 distinct references; same seed, same list."""
    rng = random.Random(seed)
    seen: set[str] = set()
    groups: list[ReferenceGroup] = []
    attempts = 0
    while len(groups) < num_mrs:
        attempts += 1
        if attempts > 50 * num_mrs:
            raise ConfigError(
                f"data.num_examples: cannot generate {num_mrs} distinct meaning representations. Use fewer."
            )
        mr = sample_mr(rng)
        source = format_mr(mr)
        if source in seen:
            continue
        seen.add(source)
        references = list(dict.fromkeys(realise(mr, rng) for _ in range(REFERENCES_PER_MR)))
        groups.append(ReferenceGroup(source, references))
    return groups


def build(settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    data = settings.data
    if data.num_examples < 12:
        raise ConfigError(
            f"data.num_examples: need at least 12 meaning representations, got {data.num_examples}. Use e.g. 300."
        )
    unknown = set(data.eval_splits) - {"validation"}
    if unknown:
        raise ConfigError(
            f"data.eval_splits: the restaurants task has only a validation split, not {sorted(unknown)}."
        )
    groups = generate_restaurants(data.num_examples, data.sample_seed)
    held_out = max(1, int(len(groups) * VALIDATION_FRACTION))
    train_pairs = [(group.source, reference) for group in groups[held_out:] for reference in group.references]
    return build_data_to_text_task(train_pairs, {"validation": groups[:held_out]}, settings, tokenizer, env)
