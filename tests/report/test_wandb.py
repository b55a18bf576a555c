"""wandb conventions and I/O against a stand-in ``wandb`` module (no network, no wandb login)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from lorma_exp import tracking
from lorma_exp.analysis import wandb_io
from lorma_exp.analysis.render import RenderedTable
from lorma_exp.analysis.tables import table_from_runs
from lorma_exp.paper import TABLE2
from lorma_exp.report import main

from .run_folders import results_json


def cola_results(seed: int, value: float, **fields: Any) -> dict[str, Any]:
    fields = {"table": "table2", "model": "roberta_base", "method": "lorma_plus", "alpha": 4.0, **fields}
    return results_json(task="cola", seed=seed, metrics={"matthews": value}, **fields)


def test_group_is_the_reproduction_and_tags_name_the_run():
    group, tags = tracking.wandb_group_and_tags(cola_results(1, 0.6))
    assert group == "table2"
    assert tags == [
        "task:cola",
        "model:roberta_base",
        "method:lorma_plus",
        "r:8",
        "alpha:4",
        "mode:pre",
        "seed:1",
    ]


def test_smoke_runs_get_their_own_group_and_a_tag():
    group, tags = tracking.wandb_group_and_tags(cola_results(1, 0.6, smoke=True))
    assert group == "table2-smoke"
    assert tags[-1] == "smoke"


def test_runs_outside_a_reproduction_have_no_group_and_unset_fields_no_tag():
    fields = {"task": "cola", "model": "roberta_base", "method": "lora", "r": 8, "mode": None, "seed": 3}
    assert tracking.wandb_group_and_tags(fields) == (
        None,
        ["task:cola", "model:roberta_base", "method:lora", "r:8", "seed:3"],
    )


@dataclass
class StandInRun:
    """The parts of ``wandb.apis.public.Run`` (reading) and ``wandb.Run`` (writing) the module uses."""

    id: str = "run0"
    state: str = "finished"
    summary_metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    logged: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False

    def log(self, data: dict[str, Any]) -> None:
        self.logged.append(data)

    def finish(self) -> None:
        self.finished = True


class StandInApi:
    def __init__(self, runs: list[StandInRun]) -> None:
        self._runs = runs
        self.paths: list[str] = []

    def runs(self, path: str) -> list[StandInRun]:
        self.paths.append(path)
        return self._runs


@dataclass
class StandInTable:
    columns: list[str]
    data: list[list[Any]]


def project_runs() -> list[StandInRun]:
    return [
        StandInRun("a", "finished", {"results": cola_results(1, 0.63)}),
        StandInRun("b", "finished", {"results": cola_results(2, 0.65)}),
        StandInRun("c", "running", {}, {"paper_cell": {"table": "table2"}}),
        StandInRun("d", "finished", {"loss": 0.1}),
    ]


def test_finished_wandb_runs_carry_results_json_in_their_summary():
    api = StandInApi(project_runs())
    collection = wandb_io.collect_wandb_runs("team/lorma", api=api)
    assert api.paths == ["team/lorma"]
    assert [run.source for run in collection.finished] == ["wandb:team/lorma/a", "wandb:team/lorma/b"]
    assert [(item.source, item.reason, item.table) for item in collection.unfinished] == [
        ("wandb:team/lorma/c", "wandb state is 'running'", "table2"),
        ("wandb:team/lorma/d", "no 'results' in the run summary", None),
    ]
    # 63 and 65 -> mean 64 over n = 2, the same as from run folders.
    cell = table_from_runs(TABLE2, collection.finished).cells[("roberta_base/lorma_plus", "cola")]
    assert (cell.n, cell.mean) == (2, pytest.approx(64.0))


def test_a_project_path_without_entity_is_refused():
    with pytest.raises(ValueError, match="ENTITY/PROJECT"):
        wandb_io.collect_wandb_runs("lorma", api=StandInApi([]))


def test_publish_results_stores_the_results_object_under_the_summary_key():
    run = StandInRun()
    results = cola_results(1, 0.6)
    tracking.publish_results(run, results)
    assert run.summary == {"results": results}


@pytest.fixture
def stand_in_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.run = None
    module.Table = StandInTable
    module.api_runs = project_runs()
    module.Api = lambda: StandInApi(module.api_runs)
    module.init_calls = []

    def init(**options: Any) -> StandInRun:
        module.init_calls.append(options)
        module.opened = StandInRun()
        return module.opened

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def small_table() -> RenderedTable:
    records = [
        {"row": "lora", "column": "cola", "mean": 64.0, "seeds": [1, 2]},
        {"row": "lora", "paper": 63.6},
    ]
    return RenderedTable("table2", "Table 2", ["Method"], [["LoRA"]], records)


def test_log_table_sends_the_csv_records_as_a_wandb_table(stand_in_wandb):
    run = StandInRun()
    wandb_io.log_table(small_table(), run)
    logged = run.logged[0]["table2"]
    assert logged.columns == ["row", "column", "mean", "seeds", "paper"]
    assert logged.data == [["lora", "cola", 64.0, "1;2", None], ["lora", None, None, None, 63.6]]


def test_log_table_without_an_active_run_says_how_to_get_one(stand_in_wandb):
    with pytest.raises(RuntimeError, match=r"wandb\.init\(\)"):
        wandb_io.log_table(small_table())


def test_cli_reads_wandb_and_logs_the_table_to_a_report_run(stand_in_wandb, tmp_path, capsys):
    code = main(
        ["table", "table2", "--wandb", "team/lorma", "--out", str(tmp_path), "--wandb-log", "team/reports"]
    )
    assert code == 0
    assert "64.0 ± 1.4 (n=2) vs 64.2 [-0.2]" in capsys.readouterr().out  # 63, 65: std sqrt(2)
    assert stand_in_wandb.init_calls == [
        {
            "entity": "team",
            "project": "reports",
            "group": "table2",
            "job_type": "report",
            "name": "report-table2",
        }
    ]
    assert "table2" in stand_in_wandb.opened.logged[0]
    assert stand_in_wandb.opened.finished
