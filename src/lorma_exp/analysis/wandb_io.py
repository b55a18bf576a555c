"""Reading reproduction runs back from wandb, and logging finished tables to it.

The conventions runs are logged with live in :mod:`lorma_exp.tracking`:

- group: the reproduction the run belongs to, ``paper_cell.table`` (``table2``, ``figure5`` ...), with
  ``-smoke`` appended for smoke runs so they never mix with real ones; no group outside reproductions.
- tags: ``task:<task>``, ``model:<model>``, ``method:<method>``, ``r:<r>``, ``alpha:<alpha>`` (``%g``:
  ``alpha:4``), ``mode:<mode>``, ``seed:<seed>`` from the run's own fields (those that are set), plus
  ``smoke`` for smoke runs.
- results: when a run finishes, the trainer stores its ``results.json`` object, unchanged, under the run
  summary key ``results`` (:func:`publish_results`); a wandb run without it, or not in state
  ``finished``, is unfinished. The run config is the resolved Hydra config, as in ``config.yaml``.
  Loss curves and adapters are not read from wandb: the analyses need the run folders.

wandb is imported only when a function needs it, so reports work without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lorma_exp.analysis.render import RenderedTable
from lorma_exp.analysis.runs import Run, RunCollection, UnfinishedRun, launched_for, validate_results
from lorma_exp.tracking import RESULTS_SUMMARY_KEY


def collect_wandb_runs(project_path: str, api: Any = None) -> RunCollection:
    """Runs of the wandb project ``entity/project`` (``api``: a ``wandb.Api``, made when not given)."""
    if project_path.count("/") != 1:
        raise ValueError(f"--wandb {project_path!r}: expected ENTITY/PROJECT")
    if api is None:
        import wandb

        api = wandb.Api()
    collection = RunCollection()
    for wandb_run in api.runs(project_path):
        source = f"wandb:{project_path}/{wandb_run.id}"
        results = wandb_run.summary_metrics.get(RESULTS_SUMMARY_KEY)
        table = launched_for(wandb_run.config)
        if wandb_run.state != "finished":
            collection.unfinished.append(UnfinishedRun(source, f"wandb state is {wandb_run.state!r}", table))
        elif not isinstance(results, Mapping):
            reason = f"no '{RESULTS_SUMMARY_KEY}' in the run summary"
            collection.unfinished.append(UnfinishedRun(source, reason, table))
        else:
            validate_results(results, source)
            if results["status"] != "finished":
                collection.unfinished.append(UnfinishedRun(source, f"status is {results['status']!r}", table))
            else:
                collection.finished.append(Run(source=source, results=dict(results)))
    return collection


def _table_value(value: Any) -> Any:
    return ";".join(str(item) for item in value) if isinstance(value, list | tuple) else value


def log_table(table: RenderedTable, run: Any = None) -> None:
    """Log ``table``'s records (the CSV's rows) as a wandb Table named after it, to ``run`` or the
    active run."""
    import wandb

    run = run if run is not None else wandb.run
    if run is None:
        raise RuntimeError("no active wandb run: call wandb.init() first, or pass --wandb-log ENTITY/PROJECT")
    columns: list[str] = []
    for record in table.records:
        columns.extend(key for key in record if key not in columns)
    data = [[_table_value(record.get(column)) for column in columns] for record in table.records]
    run.log({table.name: wandb.Table(columns=columns, data=data)})


def log_tables_to_project(tables: list[RenderedTable], project_path: str, group: str | None) -> None:
    """Open a ``report`` run in ``entity/project`` (in ``group``), log every table, and finish it."""
    if project_path.count("/") != 1:
        raise ValueError(f"--wandb-log {project_path!r}: expected ENTITY/PROJECT")
    import wandb

    entity, project = project_path.split("/")
    run = wandb.init(
        entity=entity, project=project, group=group, job_type="report", name=f"report-{tables[0].name}"
    )
    try:
        for table in tables:
            log_table(table, run)
    finally:
        run.finish()
