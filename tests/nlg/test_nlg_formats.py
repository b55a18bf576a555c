"""E2E, WebNLG and DART read from their original release files and from hub-shaped rows.

The expected pairs and groups are read off the hand-written fixtures in tests/nlg/fixtures (each file
is short enough to check by eye) and the rows built in each test.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from lorma_exp.config import ConfigError
from lorma_exp.data import nlg
from lorma_exp.data.hub import DataLoadError

FIXTURES = Path(__file__).resolve().parent / "fixtures"

ALL_SPLITS = ["train", "validation", "test"]


def _groups(fmt: str, split: str, folder=None) -> list[tuple[str, list[str]]]:
    pairs = nlg.load_pairs(nlg.FORMATS[fmt], str(folder or FIXTURES / fmt), None, ALL_SPLITS)
    return [(group.source, group.references) for group in nlg.group_references(pairs[split])]


def test_e2e_rows_become_one_pair_each_and_group_by_mr_in_order_of_first_appearance() -> None:
    pairs = nlg.load_pairs(nlg.FORMATS["e2e"], str(FIXTURES / "e2e"), None, ALL_SPLITS)
    assert len(pairs["train"]) == 6  # trainset.csv has six data rows
    assert _groups("e2e", "train") == [
        (
            "name[Blue Heron], eatType[pub], area[riverside]",
            [
                "Blue Heron is a pub by the riverside.",
                "By the riverside you will find a pub called Blue Heron.",
                "There is a pub, Blue Heron, on the riverside.",
            ],
        ),
        (
            "name[Green Fig], food[Italian], priceRange[cheap]",
            ["Green Fig serves cheap Italian food.", "For cheap Italian food, try Green Fig."],
        ),
        (
            "name[Marigold], eatType[coffee shop], familyFriendly[yes]",
            ["Marigold is a family friendly coffee shop."],
        ),
    ]


def test_e2e_csv_quoting_keeps_commas_and_quotes_inside_a_reference() -> None:
    lantern = dict(_groups("e2e", "test"))["name[The Lantern], eatType[pub], priceRange[£20-25]"]
    assert lantern[-1] == 'The Lantern, a pub, has prices of £20-25, "fair" for the area.'
    assert len(lantern) == 3


def test_webnlg_xml_linearises_modified_triples_and_drops_texts_marked_bad() -> None:
    assert _groups("webnlg", "train") == [
        (
            "Littleton_Field : runwayLength : 1200.0",
            [
                "The runway at Littleton Field is 1200.0 metres long.",
                "Littleton Field has a runway length of 1200.0.",
            ],
        ),
        (
            "Ada_Wren : birthPlace : Harrow_Vale | Ada_Wren : occupation : Test_pilot",
            ["Ada Wren, born in Harrow Vale, worked as a test pilot."],
        ),
    ]
    assert _groups("webnlg", "validation") == [
        ("Port_Ellis : country : Norland", ["Port Ellis is in Norland.", "Port Ellis is a city of Norland."])
    ]


def test_webnlg_test_split_is_testdata_with_lex_alone() -> None:
    # The unseen-category file repeats Night_Train; the no-lex file repeats Barley_cake without texts.
    assert _groups("webnlg", "test") == [
        (
            "Barley_cake : mainIngredient : Barley",
            [
                "Barley cake is made mainly from barley.",
                "The main ingredient of barley cake is barley.",
                "Barley is what barley cake is mostly made of.",
            ],
        ),
        (
            "Night_Train : director : Ilse_Moor | Night_Train : releaseYear : 1961",
            ["Night Train, released in 1961, was directed by Ilse Moor."],
        ),
    ]


def test_dart_json_lowercases_properties_and_merges_entries_with_the_same_triples() -> None:
    assert _groups("dart", "train") == [
        (
            "Harrow Vale : population : 12,000 | Harrow Vale : county : Westmere",
            [
                "Harrow Vale, in Westmere county, has 12,000 people.",
                "12,000 people live in Harrow Vale, Westmere.",
            ],
        ),
        ("Blue Heron : eattype : pub", ["Blue Heron is a pub."]),
    ]
    assert _groups("dart", "test") == [
        ("Night Train : year : 1961", ["Night Train came out in 1961.", "Night Train is a 1961 film."]),
        (
            "Port Ellis : mayor : Ada Wren",
            ["Ada Wren is mayor of Port Ellis.", "Port Ellis has Ada Wren as mayor."],
        ),
    ]


WEBNLG_HUB_FEATURES = datasets.Features(
    {
        "modified_triple_sets": datasets.Sequence(
            {"mtriple_set": datasets.Sequence(datasets.Value("string"))}
        ),
        "lex": datasets.Sequence(
            {
                "comment": datasets.Value("string"),
                "lid": datasets.Value("string"),
                "text": datasets.Value("string"),
                "lang": datasets.Value("string"),
            }
        ),
        "test_category": datasets.Value("string"),
    }
)


def _webnlg_row(
    triples: list[str], texts: list[str], category: str, comments: list[str] | None = None
) -> dict:
    """A webnlg_challenge_2017 row as ``datasets`` gives it for the hub's features (``lex`` as a dict of lists)."""
    comments = comments or [""] * len(texts)
    return {
        "modified_triple_sets": [{"mtriple_set": triples}],
        "lex": {
            "comment": comments,
            "lid": [f"Id{i}" for i in range(len(texts))],
            "text": texts,
            "lang": [""] * len(texts),
        },
        "test_category": category,
    }


def _as_list_of_dicts(row: dict) -> dict:
    lex = row["lex"]
    return {
        "modified_triple_sets": row["modified_triple_sets"],
        "lex": [dict(zip(lex, values, strict=True)) for values in zip(*lex.values(), strict=True)],
        "test_category": row["test_category"],
    }


def test_webnlg_hub_rows_keep_the_full_test_set_and_good_texts() -> None:
    rows = [
        _webnlg_row(
            ["Port_Ellis | country | Norland"], ["Port Ellis is in Norland.", "Bad one."], "", ["good", "bad"]
        ),
        _webnlg_row(
            ["Night_Train | releaseYear | 1961"], ["Night Train came out in 1961."], "testdata_with_lex"
        ),
        _webnlg_row(
            ["Night_Train | releaseYear | 1961"],
            ["Night Train came out in 1961."],
            "testdata_unseen_with_lex",
        ),
        _webnlg_row(["Night_Train | releaseYear | 1961"], [], "testdata_no_lex"),
    ]
    expected = [
        ("Port_Ellis : country : Norland", "Port Ellis is in Norland."),
        ("Night_Train : releaseYear : 1961", "Night Train came out in 1961."),
    ]
    # datasets stores a sequence of dicts as a dict of lists; a plain list of dicts must read the same.
    as_features = datasets.Dataset.from_list(rows, features=WEBNLG_HUB_FEATURES)
    assert isinstance(as_features[0]["lex"], dict)
    assert nlg.webnlg_hub_pairs(as_features, "hub") == expected
    as_lists = datasets.Dataset.from_list([_as_list_of_dicts(row) for row in rows])
    assert isinstance(as_lists[0]["lex"], list)
    assert nlg.webnlg_hub_pairs(as_lists, "hub") == expected


def test_e2e_and_dart_hub_rows_match_their_release_files() -> None:
    e2e_rows = datasets.Dataset.from_dict(
        {
            "meaning_representation": ["name[The Old Mill], eatType[restaurant], near[Marigold]"] * 2,
            "human_reference": [
                "The Old Mill is a restaurant near Marigold.",
                "Near Marigold there is a restaurant, The Old Mill.",
            ],
        }
    )
    e2e_local = nlg.load_pairs(nlg.FORMATS["e2e"], str(FIXTURES / "e2e"), None, ["validation"])["validation"]
    assert nlg.e2e_hub_pairs(e2e_rows, "hub") == e2e_local[:2]

    dart_rows = datasets.Dataset.from_list(
        [
            {
                "tripleset": [["Ilse Moor", "Nationality", "Norland"]],
                "subtree_was_extended": False,
                "annotations": [{"source": "WikiSQL_decl_sents", "text": "Ilse Moor is from Norland."}],
            }
        ]
    )
    dart_local = nlg.load_pairs(nlg.FORMATS["dart"], str(FIXTURES / "dart"), None, ["validation"])[
        "validation"
    ]
    assert nlg.dart_hub_pairs(dart_rows, "hub") == dart_local


def test_a_script_only_hub_repository_is_read_from_its_parquet_export(monkeypatch) -> None:
    calls = []
    export = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"x": [1]}),
            "dev": datasets.Dataset.from_dict({"x": [2]}),
        }
    )

    def fake_load_dataset(name, subset=None, **kwargs):
        calls.append((name, subset, kwargs))
        if len(calls) == 1:
            raise RuntimeError("Dataset scripts are no longer supported, but found web_nlg.py")
        return export

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = nlg.load_hub_splits("webnlg-challenge/web_nlg", "webnlg_challenge_2017")
    assert calls == [
        ("webnlg-challenge/web_nlg", "webnlg_challenge_2017", {}),
        (
            "webnlg-challenge/web_nlg",
            None,
            {"revision": "refs/convert/parquet", "data_dir": "webnlg_challenge_2017"},
        ),
    ]
    assert sorted(loaded) == ["train", "validation"]  # the release's "dev" under the framework's name


def test_other_load_failures_are_reported_without_a_retry(monkeypatch) -> None:
    calls = []

    def failing(name, subset=None, **kwargs):
        calls.append(name)
        raise RuntimeError("disk full")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(DataLoadError, match=r"data.dataset='tuetschek/e2e_nlg'.*disk full.*original files"):
        nlg.load_hub_splits("tuetschek/e2e_nlg", None)
    assert calls == ["tuetschek/e2e_nlg"]


def test_an_unreachable_hub_name_fails_naming_the_dataset_and_the_local_alternative() -> None:
    with pytest.raises(DataLoadError, match=r"data.dataset='tuetschek/e2e_nlg'.*HF_DATASETS_OFFLINE"):
        nlg.load_pairs(nlg.FORMATS["e2e"], "tuetschek/e2e_nlg", None, ["train"])


def test_a_save_to_disk_copy_of_the_hub_data_is_read_like_the_hub(tmp_path) -> None:
    rows = {
        "meaning_representation": ["name[Marigold], eatType[pub]"],
        "human_reference": ["Marigold is a pub."],
    }
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}
    ).save_to_disk(str(tmp_path / "copy"))
    pairs = nlg.load_pairs(nlg.FORMATS["e2e"], str(tmp_path / "copy"), None, ["train", "validation"])
    assert pairs["validation"] == [("name[Marigold], eatType[pub]", "Marigold is a pub.")]


def test_a_folder_without_a_wanted_split_names_the_release_files(tmp_path) -> None:
    (tmp_path / "trainset.csv").write_text((FIXTURES / "e2e" / "trainset.csv").read_text())
    with pytest.raises(ConfigError, match=r"data.dataset: .*no \['validation'\] split.*devset.csv"):
        nlg.load_pairs(nlg.FORMATS["e2e"], str(tmp_path), None, ["train", "validation"])


def test_files_in_another_layout_fail_clearly(tmp_path) -> None:
    (tmp_path / "trainset.csv").write_text("meaning,text\nname[A],A.\n")
    with pytest.raises(DataLoadError, match=r"not the E2E release's mr,ref"):
        nlg.load_pairs(nlg.FORMATS["e2e"], str(tmp_path), None, ["train"])
    (tmp_path / "dart-v1.1.1-full-train.json").write_text('{"entries": []}')
    with pytest.raises(DataLoadError, match=r"not a DART release file"):
        nlg.load_pairs(nlg.FORMATS["dart"], str(tmp_path), None, ["train"])
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "broken.xml").write_text("<benchmark><entries>")
    with pytest.raises(DataLoadError, match=r"not valid WebNLG XML"):
        nlg.load_pairs(nlg.FORMATS["webnlg"], str(tmp_path), None, ["train"])


def test_release_files_with_bad_bytes_or_blank_cells_are_named(tmp_path) -> None:
    trainset = tmp_path / "trainset.csv"
    trainset.write_bytes(b"mr,ref\nname[Caf\xe9],A caf\xe9.\n")
    with pytest.raises(
        DataLoadError, match=rf"^data.dataset: {trainset} is not UTF-8: byte 0xe9 at offset 15 \(line 2\)"
    ):
        nlg.load_pairs(nlg.FORMATS["e2e"], str(tmp_path), None, ["train"])
    trainset.write_text('mr,ref\nname[A],A.\n" ",B.\n')
    with pytest.raises(
        DataLoadError, match=rf"^data.dataset: {trainset} line 3, column 'mr' is blank or missing"
    ):
        nlg.load_pairs(nlg.FORMATS["e2e"], str(tmp_path), None, ["train"])
    dart = tmp_path / "dart-v1.1.1-full-train.json"
    dart.write_bytes(b'[{"tripleset": [["Caf\xe9", "a", "b"]], "annotations": []}]')
    with pytest.raises(DataLoadError, match=rf"^data.dataset: {dart} is not UTF-8: byte 0xe9 at offset 21"):
        nlg.load_pairs(nlg.FORMATS["dart"], str(tmp_path), None, ["train"])


@pytest.mark.parametrize(
    ("triple", "message"),
    [
        ("Aarhus | leaderName", "subject \\| property \\| object"),
        ("only one", "subject \\| property \\| object"),
    ],
)
def test_a_malformed_webnlg_triple_is_named(triple, message) -> None:
    with pytest.raises(DataLoadError, match=message):
        nlg.split_webnlg_triple(triple)


def test_a_dart_triple_without_three_parts_is_named(tmp_path) -> None:
    entry = {"tripleset": [["Port Ellis", "MAYOR"]], "annotations": [{"source": "x", "text": "Port Ellis."}]}
    (tmp_path / "dart-v1.1.1-full-train.json").write_text(json.dumps([entry]))
    with pytest.raises(
        DataLoadError, match=r"a subject, a property and an object, got \['Port Ellis', 'MAYOR'\]"
    ):
        nlg.load_pairs(nlg.FORMATS["dart"], str(tmp_path), None, ["train"])
