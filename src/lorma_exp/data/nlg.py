"""Data-to-text generation (the paper's Tables 3 and 13): E2E, WebNLG 2017 and DART.

Each dataset comes from the Hugging Face hub or from a local folder of its originally released files, and
becomes, per split, a list of (input, reference) pairs. The input is the meaning representation as text:
E2E's MR string exactly as released (``name[The Eagle], eatType[coffee shop], ...``); WebNLG and DART
triples linearised as ``subject : property : object | subject : property : object``, the layout of the
LoRA reference implementation the paper builds on (which also lower-cases DART's properties).

Training uses one row per pair. Evaluation decodes every distinct input once and scores the hypothesis
against all references of that input (grouped in order of first appearance), with the E2E challenge's
metric suite for E2E and the WebNLG challenge's for WebNLG and DART (:mod:`lorma_exp.metrics.nlg`; the
latter keeps the first 6 references of an input, as the paper's pipeline does).

The token layout is the LoRA reference implementation's: input, end-of-sequence token as a separator,
then a space, the text and end-of-sequence; the loss covers only the text and the final end-of-sequence.
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from lorma_exp.config import ConfigError, TrainConfig
from lorma_exp.data import metric_suite
from lorma_exp.data.base import TaskData
from lorma_exp.data.files import read_rows, read_text
from lorma_exp.data.generation import (
    CausalLMCollator,
    Example,
    GenerationEvaluator,
    ScoreFn,
    encode_training_example,
)
from lorma_exp.data.hub import DataLoadError, load_dataset_dict
from lorma_exp.distributed import DistEnv
from lorma_exp.metrics.nlg import score_generations
from lorma_exp.metrics.suites import MetricSuite

Pair = tuple[str, str]
"""(input, reference): one training row."""

SPLIT_ALIASES = {"dev": "validation"}
TARGET_PREFIX = " "


@dataclass(frozen=True)
class ReferenceGroup:
    """One distinct input and every reference text written for it."""

    source: str
    references: list[str]


def group_references(pairs: Iterable[Pair]) -> list[ReferenceGroup]:
    """Collect the references of each distinct input, inputs in order of first appearance."""
    grouped: dict[str, list[str]] = {}
    for source, reference in pairs:
        grouped.setdefault(source, []).append(reference)
    return [ReferenceGroup(source, references) for source, references in grouped.items()]


def linearise_triples(triples: Iterable[Sequence[str]], lowercase_property: bool = False) -> str:
    """``s : p : o | s : p : o`` from (subject, property, object) triples."""
    parts = []
    for triple in triples:
        if len(triple) != 3:
            raise DataLoadError(
                f"a triple must have a subject, a property and an object, got {list(triple)}."
            )
        subject, prop, obj = (value.strip() for value in triple)
        parts.append(f"{subject} : {prop.lower() if lowercase_property else prop} : {obj}")
    return " | ".join(parts)


def split_webnlg_triple(text: str) -> tuple[str, str, str]:
    """WebNLG writes a triple as ``subject | property | object``."""
    parts = [part.strip() for part in text.split("|", 2)]
    if len(parts) != 3:
        raise DataLoadError(f"a WebNLG triple must read 'subject | property | object', got {text!r}.")
    return parts[0], parts[1], parts[2]


def _records(value: Any) -> list[dict[str, Any]]:
    """A nested hub column as a list of dicts, whether stored as a list of dicts or a dict of lists."""
    if isinstance(value, Mapping):
        keys = list(value)
        return [dict(zip(keys, row, strict=True)) for row in zip(*(value[k] for k in keys), strict=True)]
    return [dict(item) for item in value]


def _check_columns(dataset: datasets.Dataset, columns: Sequence[str], where: str) -> None:
    missing = [name for name in columns if name not in dataset.column_names]
    if missing:
        raise DataLoadError(
            f"data.dataset: {where} lacks the column(s) {missing} (it has {dataset.column_names}). "
            "Point data.dataset at the dataset this task names in conf/task/, or at a folder of its "
            "original files."
        )


# ---- E2E NLG Challenge -------------------------------------------------------------------------------
E2E_FILES = {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"}


def e2e_local_files(folder: Path) -> dict[str, list[Path]]:
    """The challenge's release: ``trainset.csv``, ``devset.csv``, ``testset_w_refs.csv``."""
    return {split: [folder / name] for split, name in E2E_FILES.items() if (folder / name).is_file()}


def read_e2e_csv(paths: Sequence[Path]) -> list[Pair]:
    """One (MR, reference) pair per row of the challenge's CSV files (columns ``mr``, ``ref``)."""
    pairs: list[Pair] = []
    for path in paths:
        file = read_rows(str(path), "data.dataset")
        if not {"mr", "ref"} <= set(file.columns):
            raise DataLoadError(
                f"data.dataset: {path} has columns {list(file.columns)}, not the E2E release's mr,ref. "
                "Use the challenge's trainset.csv / devset.csv / testset_w_refs.csv."
            )
        pairs.extend(
            (mr.strip(), ref.strip()) for mr, ref in zip(file.column("mr"), file.column("ref"), strict=True)
        )
    return pairs


def e2e_hub_pairs(dataset: datasets.Dataset, where: str) -> list[Pair]:
    """``tuetschek/e2e_nlg``: one row per (meaning_representation, human_reference)."""
    _check_columns(dataset, ["meaning_representation", "human_reference"], where)
    return [
        (mr.strip(), ref.strip())
        for mr, ref in zip(dataset["meaning_representation"], dataset["human_reference"], strict=True)
    ]


# ---- WebNLG 2017 challenge ---------------------------------------------------------------------------
WEBNLG_SPLIT_DIRS = {"train": "train", "validation": "dev", "test": "test"}
WEBNLG_TEST_FILE = "testdata_with_lex.xml"
KEPT_LEX_COMMENTS = ("", "good")
"""Lexicalisations the release marks otherwise (e.g. ``bad``) are left out, as in LoRA's preparation."""
KEPT_TEST_CATEGORIES = ("", WEBNLG_TEST_FILE.removesuffix(".xml"))


def webnlg_local_files(folder: Path) -> dict[str, list[Path]]:
    """The release's ``train/<n>triples/*.xml``, ``dev/<n>triples/*.xml`` and ``test/testdata_with_lex.xml``.

    The test folder's other files are the unseen-category subset and a copy without texts, so when
    ``testdata_with_lex.xml`` is there it alone is the test split.
    """
    files: dict[str, list[Path]] = {}
    for split, name in WEBNLG_SPLIT_DIRS.items():
        directory = folder / name
        if not directory.is_dir():
            continue
        full_test = directory / WEBNLG_TEST_FILE
        found = [full_test] if full_test.is_file() else sorted(directory.rglob("*.xml"))
        if found:
            files[split] = found
    return files


def _lex_text(lex: ElementTree.Element) -> str:
    """The text of a ``<lex>``: its own text (2017 release) or its ``<text>`` child (later releases)."""
    child = lex.find("text")
    text = child.text if child is not None else lex.text
    return (text or "").strip()


def read_webnlg_xml(paths: Sequence[Path]) -> list[Pair]:
    """(linearised modified triples, lexicalisation) for every kept ``<lex>`` of every ``<entry>``."""
    pairs: list[Pair] = []
    for path in paths:
        try:
            root = ElementTree.parse(path).getroot()
        except ElementTree.ParseError as error:
            raise DataLoadError(f"data.dataset: {path} is not valid WebNLG XML ({error}).") from error
        for entry in root.iter("entry"):
            triples = [split_webnlg_triple(t.text or "") for t in entry.iter("mtriple")]
            source = linearise_triples(triples)
            for lex in entry.iter("lex"):
                text = _lex_text(lex)
                if text and lex.get("comment", "") in KEPT_LEX_COMMENTS:
                    pairs.append((source, text))
    return pairs


def webnlg_hub_pairs(dataset: datasets.Dataset, where: str) -> list[Pair]:
    """``webnlg-challenge/web_nlg`` (``webnlg_challenge_2017``): the full test set only, kept texts only."""
    _check_columns(dataset, ["modified_triple_sets", "lex"], where)
    pairs: list[Pair] = []
    for row in dataset:
        if row.get("test_category", "") not in KEPT_TEST_CATEGORIES:
            continue
        triple_sets = _records(row["modified_triple_sets"])
        source = linearise_triples(split_webnlg_triple(t) for t in triple_sets[0]["mtriple_set"])
        for lex in _records(row["lex"]):
            text = (lex.get("text") or "").strip()
            if text and (lex.get("comment") or "") in KEPT_LEX_COMMENTS:
                pairs.append((source, text))
    return pairs


# ---- DART --------------------------------------------------------------------------------------------
DART_SPLIT_SUFFIXES = {"train": "train", "validation": "dev", "test": "test"}


def dart_local_files(folder: Path) -> dict[str, list[Path]]:
    """The release's JSON files, ``dart-v1.1.1-full-{train,dev,test}.json`` (any ``*-<split>.json``)."""
    files: dict[str, list[Path]] = {}
    for split, suffix in DART_SPLIT_SUFFIXES.items():
        found = sorted(folder.glob(f"*-{suffix}.json"))
        if len(found) > 1:
            raise DataLoadError(
                f"data.dataset: {folder} holds several DART {suffix} files {[p.name for p in found]}. "
                "Keep one release per folder."
            )
        if found:
            files[split] = found
    return files


def _dart_pairs(entries: Iterable[Mapping[str, Any]]) -> list[Pair]:
    pairs: list[Pair] = []
    for entry in entries:
        source = linearise_triples(entry["tripleset"], lowercase_property=True)
        for annotation in _records(entry["annotations"]):
            text = (annotation.get("text") or "").strip()
            if text:
                pairs.append((source, text))
    return pairs


def read_dart_json(paths: Sequence[Path]) -> list[Pair]:
    """(linearised triple set, annotation text) for every annotation of every entry."""
    entries: list[Mapping[str, Any]] = []
    for path in paths:
        try:
            loaded = json.loads(read_text(path, "data.dataset"))
        except json.JSONDecodeError as error:
            raise DataLoadError(f"data.dataset: {path} is not valid JSON ({error}).") from error
        if not isinstance(loaded, list) or any(
            "tripleset" not in e or "annotations" not in e for e in loaded
        ):
            raise DataLoadError(
                f"data.dataset: {path} is not a DART release file (a list of {{tripleset, annotations}})."
            )
        entries.extend(loaded)
    return _dart_pairs(entries)


def dart_hub_pairs(dataset: datasets.Dataset, where: str) -> list[Pair]:
    """``Yale-LILY/dart``: one row per triple set with its annotations."""
    _check_columns(dataset, ["tripleset", "annotations"], where)
    return _dart_pairs(dataset)


# ---- loading -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetFormat:
    """How one dataset is read from the hub and from its original files."""

    name: str
    local_files: Callable[[Path], dict[str, list[Path]]]
    read_local: Callable[[Sequence[Path]], list[Pair]]
    hub_pairs: Callable[[datasets.Dataset, str], list[Pair]]
    release: str
    """What a local folder must hold, for error messages."""


FORMATS = {
    "e2e": DatasetFormat(
        name="e2e",
        local_files=e2e_local_files,
        read_local=read_e2e_csv,
        hub_pairs=e2e_hub_pairs,
        release="trainset.csv, devset.csv, testset_w_refs.csv",
    ),
    "webnlg": DatasetFormat(
        name="webnlg",
        local_files=webnlg_local_files,
        read_local=read_webnlg_xml,
        hub_pairs=webnlg_hub_pairs,
        release="train/ and dev/ folders of XML files and test/testdata_with_lex.xml",
    ),
    "dart": DatasetFormat(
        name="dart",
        local_files=dart_local_files,
        read_local=read_dart_json,
        hub_pairs=dart_hub_pairs,
        release="dart-v1.1.1-full-train.json, -dev.json, -test.json",
    ),
}


def load_hub_splits(name_or_path: str, subset: str | None) -> datasets.DatasetDict:
    """A hub dataset, or a folder written by ``save_to_disk``; split names normalised (``dev`` -> ``validation``)."""
    loaded = load_dataset_dict(name_or_path, subset, "a folder of the dataset's original files")
    return datasets.DatasetDict({SPLIT_ALIASES.get(split, split): part for split, part in loaded.items()})


def load_pairs(
    fmt: DatasetFormat, name_or_path: str, subset: str | None, splits: Sequence[str]
) -> dict[str, list[Pair]]:
    """(input, reference) pairs of each wanted split, from original files or the hub."""
    folder = Path(name_or_path)
    if folder.is_dir() and not (folder / "dataset_dict.json").exists():
        files = fmt.local_files(folder)
        missing = [split for split in splits if split not in files]
        if missing:
            raise ConfigError(
                f"data.dataset: {folder} has no {missing} split(s) of the {fmt.name} release (found "
                f"{sorted(files) or 'none'}). It should hold {fmt.release}; or change data.eval_splits."
            )
        pairs = {split: fmt.read_local(files[split]) for split in splits}
    else:
        loaded = load_hub_splits(name_or_path, subset)
        missing = [split for split in splits if split not in loaded]
        if missing:
            raise ConfigError(
                f"data.eval_splits / data.train_split: {missing} not in {name_or_path} (splits: {sorted(loaded)})."
                " Pick from the available splits."
            )
        pairs = {split: fmt.hub_pairs(loaded[split], f"{name_or_path}[{split}]") for split in splits}
    empty = [split for split, rows in pairs.items() if not rows]
    if empty:
        raise DataLoadError(f"data.dataset: {name_or_path} gave no (input, text) pairs for split(s) {empty}.")
    return pairs


# ---- task data ---------------------------------------------------------------------------------------
def format_prompt(source: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The input followed by the end-of-sequence token, which separates input and text."""
    return f"{source}{tokenizer.eos_token}"


def make_scorer(suite: MetricSuite, metric_names: Sequence[str]) -> ScoreFn:
    """A ScoreFn reporting ``metric_names`` of ``suite`` (:mod:`lorma_exp.metrics.nlg`), and each example's
    input next to its hypothesis."""
    names = list(metric_names)

    def score(
        hypotheses: list[str], examples: list[Example]
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        references = [list(example["references"]) for example in examples]
        metrics = score_generations(suite.name, hypotheses, references, names)
        return metrics, [{"input": example["input"]} for example in examples]

    return score


def _subsample(items: list[Any], limit: int | None, seed: int) -> list[Any]:
    """A reproducible random subset of ``limit`` items, in their original order (all when no limit)."""
    if limit is None or limit >= len(items):
        return items
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[index] for index in chosen]


def build_data_to_text_task(
    train_pairs: list[Pair],
    eval_groups: Mapping[str, list[ReferenceGroup]],
    settings: TrainConfig,
    tokenizer: PreTrainedTokenizerBase,
    env: DistEnv,
) -> TaskData:
    """Loss-masked training rows, one per pair; evaluation examples, one per distinct input."""
    data, task = settings.data, settings.task
    train = [
        encode_training_example(
            format_prompt(source, tokenizer), TARGET_PREFIX + reference, tokenizer, data.max_length
        )
        for source, reference in _subsample(train_pairs, data.limit, data.sample_seed)
    ]
    eval_splits: dict[str, list[dict[str, Any]]] = {}
    for split, groups in eval_groups.items():
        examples = [
            {
                "id": f"{split}-{index}",
                "prompt": format_prompt(group.source, tokenizer),
                "target": TARGET_PREFIX + group.references[0],
                "references": group.references,
                "input": group.source,
            }
            for index, group in enumerate(groups)
        ]
        eval_splits[split] = _subsample(examples, data.eval_limit, data.sample_seed)
    evaluator = GenerationEvaluator(
        eval_splits,
        tokenizer,
        settings.generation,
        make_scorer(metric_suite(task), task.metrics),
        task.main_metric,
        task.greater_is_better,
        data.max_length,
        env,
    )
    return TaskData(
        problem=task.problem,
        train=train,
        eval_splits=eval_splits,
        collate=CausalLMCollator(tokenizer.pad_token_id),
        evaluator=evaluator,
        info={
            "train_rows": len(train),
            **{f"{split}_rows": len(examples) for split, examples in eval_splits.items()},
            "sample_predictions": data.eval_splits[0],
        },
    )


def build(fmt_name: str, settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    """The TaskData of E2E, WebNLG or DART as configured by ``data.*``."""
    fmt, data = FORMATS[fmt_name], settings.data
    if not data.dataset:
        raise ConfigError(
            f"data.dataset: not set for the {fmt_name} task. Use the hub id in conf/task/{fmt_name}.yaml or "
            f"a folder holding {fmt.release}."
        )
    wanted = list(dict.fromkeys([data.train_split, *data.eval_splits]))
    pairs = load_pairs(fmt, data.dataset, data.subset, wanted)
    groups = {split: group_references(pairs[split]) for split in data.eval_splits}
    return build_data_to_text_task(pairs[data.train_split], groups, settings, tokenizer, env)


def build_e2e(settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    return build("e2e", settings, tokenizer, env)


def build_webnlg(settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    return build("webnlg", settings, tokenizer, env)


def build_dart(settings: TrainConfig, tokenizer: PreTrainedTokenizerBase, env: DistEnv) -> TaskData:
    return build("dart", settings, tokenizer, env)
