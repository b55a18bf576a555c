"""The embedded restaurants task: deterministic, E2E notation, references that realise every attribute."""

from __future__ import annotations

import random
import re

import pytest

from lorma_exp.config import ConfigError
from lorma_exp.data import build_task_data, restaurants

# E2E's notation: name first, then ``key[value]`` items separated by ", ".
MR_PATTERN = re.compile(r"^name\[[^\]]+\](, [A-Za-z ]+\[[^\]]+\])*$")
# What each value must make a reference say (words a reader would look for, not the templates' wording).
PRICE_WORDS = {"cheap": ("cheap", "low"), "moderate": ("moderate",), "high": ("expensive", "high")}


ITEM = re.compile(r"(?:^|, )([A-Za-z ]+)\[([^\]]+)\]")


def _parse(source: str) -> dict[str, str]:
    return dict(ITEM.findall(source))


def _mentions(mr: dict[str, str], text: str) -> bool:
    lower = text.lower()
    checks = [mr["name"] in text]
    checks += [mr[key] in text for key in ("near",) if key in mr]
    checks += [
        mr[key].lower() in lower for key in ("eatType", "food", "area", "customer rating") if key in mr
    ]
    if "priceRange" in mr:
        checks.append(any(word in lower for word in PRICE_WORDS.get(mr["priceRange"], (mr["priceRange"],))))
    if "familyFriendly" in mr:
        negated = " not " in f" {lower} "
        checks.append(negated == (mr["familyFriendly"] == "no"))
    return all(checks)


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data() -> None:
    first = restaurants.generate_restaurants(60, seed=3)
    assert first == restaurants.generate_restaurants(60, seed=3)
    assert first != restaurants.generate_restaurants(60, seed=4)


def test_meaning_representations_are_distinct_and_in_e2e_notation_and_order() -> None:
    groups = restaurants.generate_restaurants(200, seed=0)
    sources = [group.source for group in groups]
    assert len(set(sources)) == 200
    for source in sources:
        assert MR_PATTERN.match(source), source
        keys = [key for key, _ in ITEM.findall(source)]
        assert keys == sorted(keys, key=restaurants.ORDER.index)  # the E2E data's attribute order
        assert 3 <= len(keys) <= 6  # the name and 2-5 more


def test_every_reference_realises_every_attribute_of_its_mr() -> None:
    for group in restaurants.generate_restaurants(200, seed=1):
        mr = _parse(group.source)
        assert 1 <= len(group.references) <= restaurants.REFERENCES_PER_MR
        assert len(set(group.references)) == len(group.references)
        for reference in group.references:
            assert _mentions(mr, reference), (group.source, reference)


def test_references_vary_in_wording() -> None:
    groups = restaurants.generate_restaurants(100, seed=2)
    assert sum(len(group.references) > 1 for group in groups) > 80


def test_held_out_mrs_are_never_trained_on_and_decoding_uses_a_few(
    single_process, compose_settings, tiny_gpt2_dir, gpt2_tokenizer
):
    settings = compose_settings(
        "task=restaurants", f"model.name_or_path={tiny_gpt2_dir}", "data.num_examples=60"
    )
    task = build_task_data(settings, gpt2_tokenizer, single_process)
    groups = restaurants.generate_restaurants(60, settings.data.sample_seed)
    held_out = {group.source for group in groups[:10]}  # 1/6 of 60
    trained = {gpt2_tokenizer.decode(row["input_ids"]).split("<|endoftext|>")[0] for row in task.train}
    assert trained == {group.source for group in groups[10:]}
    assert not trained & held_out
    validation = task.eval_splits["validation"]
    assert len(validation) == min(settings.data.eval_limit, 10)
    assert {example["input"] for example in validation} <= held_out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.num_examples=5", r"^data.num_examples: need at least 12"),
        ("data.eval_splits=[test]", r"^data.eval_splits: the restaurants task has only a validation split"),
    ],
)
def test_bad_settings_are_named(single_process, compose_settings, gpt2_tokenizer, override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_task_data(compose_settings("task=restaurants", override), gpt2_tokenizer, single_process)


def test_an_impossible_number_of_distinct_mrs_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(restaurants, "sample_mr", lambda rng: {"name": "Blue Heron", "eatType": "pub"})
    with pytest.raises(ConfigError, match=r"^data.num_examples: cannot generate 2 distinct"):
        restaurants.generate_restaurants(2, seed=0)


def test_articles_agree_with_the_next_word() -> None:
    texts = [text for group in restaurants.generate_restaurants(200, seed=5) for text in group.references]
    assert not any(re.search(r"\ba [AEIOUaeiou]|\ban [^AEIOUaeiou]", text) for text in texts)
    rng = random.Random(0)
    indian_pub = {"name": "Marigold", "eatType": "pub", "food": "Indian"}
    assert any("an Indian pub" in restaurants.realise(indian_pub, rng) for _ in range(20))
