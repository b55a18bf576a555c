"""From pairs to the trainer's TaskData: loss-masked rows, grouped evaluation, decoding options, scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lorma_exp.config import ConfigError
from lorma_exp.data import build_task_data, nlg
from lorma_exp.data.base import IGNORE_INDEX
from lorma_exp.metrics import nlg as nlg_metrics
from lorma_exp.metrics.suites import E2E

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def e2e_settings(compose_settings, tiny_gpt2_dir):
    def _settings(*overrides: str):
        return compose_settings(
            "task=e2e",
            "model=gpt2",
            f"model.name_or_path={tiny_gpt2_dir}",
            f"data.dataset={FIXTURES / 'e2e'}",
            *overrides,
        )

    return _settings


def test_every_pair_is_a_row_whose_loss_covers_only_the_text_and_end_of_sequence(
    single_process, e2e_settings, gpt2_tokenizer
):
    task = build_task_data(e2e_settings(), gpt2_tokenizer, single_process)
    pairs = nlg.load_pairs(nlg.FORMATS["e2e"], str(FIXTURES / "e2e"), None, ["train"])["train"]
    assert task.problem == "causal_lm"
    assert len(task.train) == len(pairs) == 6
    for row, (mr, reference) in zip(task.train, pairs, strict=True):
        learned = [
            token
            for token, label in zip(row["input_ids"], row["labels"], strict=True)
            if label != IGNORE_INDEX
        ]
        masked = [
            token
            for token, label in zip(row["input_ids"], row["labels"], strict=True)
            if label == IGNORE_INDEX
        ]
        # The LoRA layout: MR, <|endoftext|> | space, text, <|endoftext|>; only the second half is learned.
        assert gpt2_tokenizer.decode(masked) == mr + "<|endoftext|>"
        assert gpt2_tokenizer.decode(learned) == " " + reference + "<|endoftext|>"
        assert row["labels"][: len(masked)] == [IGNORE_INDEX] * len(masked)


def test_evaluation_has_one_example_per_mr_with_all_its_references(
    single_process, e2e_settings, gpt2_tokenizer
):
    task = build_task_data(e2e_settings(), gpt2_tokenizer, single_process)
    assert list(task.eval_splits) == ["validation", "test"]  # conf/task/e2e.yaml: validation first
    validation = task.eval_splits["validation"]
    assert [example["input"] for example in validation] == [
        "name[The Old Mill], eatType[restaurant], near[Marigold]",
        "name[Saffron Court], food[Indian], customer rating[high]",
    ]
    assert validation[0]["references"] == [
        "The Old Mill is a restaurant near Marigold.",
        "Near Marigold there is a restaurant, The Old Mill.",
    ]
    assert validation[0]["prompt"] == validation[0]["input"] + "<|endoftext|>"
    assert task.info == {
        "train_rows": 6,
        "validation_rows": 2,
        "test_rows": 2,
        "sample_predictions": "validation",
    }


def test_limits_pick_a_reproducible_subset(single_process, e2e_settings, gpt2_tokenizer):
    full = build_task_data(e2e_settings(), gpt2_tokenizer, single_process)
    small = build_task_data(e2e_settings("data.limit=4", "data.eval_limit=1"), gpt2_tokenizer, single_process)
    again = build_task_data(e2e_settings("data.limit=4", "data.eval_limit=1"), gpt2_tokenizer, single_process)
    assert len(small.train) == 4 and all(row in full.train for row in small.train)
    assert small.train == again.train
    assert len(small.eval_splits["test"]) == 1 and small.eval_splits["test"][0] in full.eval_splits["test"]


def test_metrics_the_suite_does_not_report_fail_before_loading(single_process, e2e_settings, gpt2_tokenizer):
    with pytest.raises(
        ConfigError, match=r"^task.metrics: \['TER'\] are not reported by the e2e metric suite"
    ):
        build_task_data(e2e_settings("task.metrics=[BLEU,TER]"), gpt2_tokenizer, single_process)


def test_a_task_without_a_dataset_says_what_to_set(single_process, e2e_settings, gpt2_tokenizer):
    with pytest.raises(ConfigError, match=r"^data.dataset: not set for the e2e task"):
        build_task_data(e2e_settings("data.dataset=null"), gpt2_tokenizer, single_process)


@pytest.mark.parametrize(("task", "suite"), [("e2e", "e2e"), ("webnlg", "webnlg"), ("dart", "webnlg")])
def test_each_task_is_scored_by_its_challenges_suite_on_grouped_references(
    single_process, task, suite, compose_settings, tiny_gpt2_dir, gpt2_tokenizer, monkeypatch, tmp_path
):
    settings = compose_settings(
        f"task={task}",
        "model=gpt2",
        f"model.name_or_path={tiny_gpt2_dir}",
        f"data.dataset={FIXTURES / task}",
        "generation.num_beams=1",
        "generation.max_new_tokens=3",
    )
    data = build_task_data(settings, gpt2_tokenizer, single_process)
    seen = {}

    def fake_scores(suite_name, hypotheses, references, metric_names):
        seen.update(suite=suite_name, hypotheses=hypotheses, references=references)
        return dict.fromkeys(metric_names, 0.5)

    monkeypatch.setattr(nlg, "score_generations", fake_scores)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    metrics = data.evaluator(model, "test", batch_size=2, output_dir=tmp_path)
    groups = nlg.group_references(
        nlg.load_pairs(nlg.FORMATS[task], str(FIXTURES / task), None, ["test"])["test"]
    )
    assert seen["suite"] == suite
    assert seen["references"] == [group.references for group in groups]
    assert metrics == dict.fromkeys(settings.task.metrics, 0.5)
    hypotheses = (tmp_path / "test.hyp.txt").read_text().splitlines()
    assert hypotheses == seen["hypotheses"]
    saved = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert [row["input"] for row in saved] == [group.source for group in groups]


def test_the_configured_beam_search_reaches_generate(
    single_process, e2e_settings, gpt2_tokenizer, tiny_gpt2_dir, monkeypatch
):
    settings = e2e_settings(
        "generation.num_beams=3",
        "generation.length_penalty=0.7",
        "generation.no_repeat_ngram_size=2",
        "generation.max_new_tokens=5",
    )
    data = build_task_data(settings, gpt2_tokenizer, single_process)
    monkeypatch.setattr(nlg, "score_generations", lambda suite, hyps, refs, names: dict.fromkeys(names, 0.0))
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    original = model.generate
    calls = []

    def spy(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    data.evaluator(model, "validation", batch_size=2)
    assert len(calls) == 1  # both validation MRs in one batch
    options = {
        key: calls[0][key]
        for key in ("num_beams", "length_penalty", "no_repeat_ngram_size", "max_new_tokens")
    }
    assert options == {"num_beams": 3, "length_penalty": 0.7, "no_repeat_ngram_size": 2, "max_new_tokens": 5}
    assert calls[0]["do_sample"] is False
    prompts = gpt2_tokenizer.batch_decode(calls[0]["input_ids"], skip_special_tokens=False)
    assert [p.replace("<|endoftext|>", "") for p in prompts] == [
        e["input"] for e in data.eval_splits["validation"]
    ]
    assert torch.equal(calls[0]["input_ids"][:, -1], torch.full((2,), gpt2_tokenizer.eos_token_id))


def test_a_hypothesis_with_line_breaks_is_scored_as_one_line(monkeypatch):
    seen = {}

    def fake_e2e_scores(hypotheses, references):
        seen.update(hypotheses=hypotheses, references=references)
        return dict.fromkeys(E2E.metrics, 1.0)

    monkeypatch.setitem(nlg_metrics.SCORERS, "e2e", fake_e2e_scores)
    score = nlg.make_scorer(E2E, ["BLEU"])
    examples = [
        {"input": "name[A]", "references": ["A is a pub."]},
        {"input": "name[B]", "references": ["B."]},
    ]
    metrics, records = score(["assistant\nA is  a pub.", "B."], examples)
    assert seen == {"hypotheses": ["assistant A is a pub.", "B."], "references": [["A is a pub."], ["B."]]}
    assert metrics == {"BLEU": 1.0}
    assert records == [{"input": "name[A]"}, {"input": "name[B]"}]
