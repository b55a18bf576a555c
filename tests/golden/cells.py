"""The golden file of composed reproduction cells: how a cell is named, read and written.

A cell is named by what identifies it in its table, never by ``run_name`` (run folder names may change
without any setting changing): ``<grid>[/smoke]/<model>/<task>/<method>/r<r>/<mode>/<targets>/seed<seed>``,
with model, task and method those of the paper cell (a SMOKE run's stand-ins are not its identity).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GOLDEN_FILE = Path(__file__).resolve().parent / "composed_cells.jsonl"


def cell_key(grid: str, smoke: bool, config: Mapping[str, Any]) -> str:
    """The name of one composed cell of ``grid`` (its resolved config as a plain dict)."""
    cell = config["paper_cell"]
    method = config["method"]
    return "/".join(
        (
            grid + ("/smoke" if smoke else ""),
            cell["model"],
            cell["task"],
            cell["method"],
            f"r{config['r']}",
            str(config["mode"]),
            "-".join(method["targets"]),
            f"seed{config['seed']}",
        )
    )


def read_golden(path: Path = GOLDEN_FILE) -> dict[str, dict[str, Any]]:
    """Cell name -> resolved config, as the golden file holds them."""
    cells = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        cells[record["cell"]] = record["config"]
    return cells


def write_golden(cells: Mapping[str, Mapping[str, Any]], path: Path = GOLDEN_FILE) -> None:
    """One JSON object per line, sorted by cell name, so that a changed setting shows as changed lines."""
    lines = [
        json.dumps({"cell": name, "config": cells[name]}, sort_keys=True, separators=(",", ":"))
        for name in sorted(cells)
    ]
    path.write_text("\n".join(lines) + "\n")
