"""Writing a finished table as markdown, CSV and LaTeX.

Every report and analysis produces a :class:`RenderedTable`: display strings for the markdown and LaTeX
layouts, plus ``records`` (one dict per value, raw numbers) for the CSV, which is what a script reads back.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SMOKE_TITLE = "SMOKE — embedded model, few steps: not comparable to the paper"

# One colour per method in every plot.
METHOD_COLOURS: dict[str, str] = {"lora": "tab:blue", "lorma_plus": "tab:orange", "lorma_pi": "tab:green"}


@dataclass
class RenderedTable:
    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.header):
                raise ValueError(f"{self.name}: a row has {len(row)} cells for {len(self.header)} columns")


def display(value: Any) -> str:
    """A raw value as a table cell: floats to 4 significant digits, missing as "—", lists comma-joined."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def records_table(
    name: str, title: str, records: list[dict[str, Any]], columns: Sequence[str], notes: Sequence[str] = ()
) -> RenderedTable:
    """A per-item listing: the ``columns`` keys of each record, headed by the keys themselves."""
    rows = [[display(record[column]) for column in columns] for record in records]
    return RenderedTable(name, title, list(columns), rows, records, list(notes))


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(table: RenderedTable) -> str:
    lines = [f"## {table.title}", ""]
    lines.append("| " + " | ".join(_markdown_cell(cell) for cell in table.header) + " |")
    lines.append("|" + "---|" * len(table.header))
    lines.extend("| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in table.rows)
    if table.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
    return "\n".join(lines) + "\n"


# Longest tokens first, so "_π" wins over "_" and "π".
_LATEX_REPLACEMENTS: dict[str, str] = {
    "^R_d": "$^{R}_{d}$",
    "^H": "$^{H}$",
    "^P": "$^{P}$",
    "_π": "$_{\\pi}$",
    "₊": "$_{+}$",
    "∗": "$^{*}$",
    "±": "$\\pm$",
    "×": "$\\times$",
    "—": "---",
    "–": "--",
    "−": "$-$",
    "Δ": "$\\Delta$",
    "π": "$\\pi$",
    "α": "$\\alpha$",
    "≈": "$\\approx$",
    "φ": "$\\phi$",
    "&": "\\&",
    "%": "\\%",
    "$": "\\$",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "\\": "\\textbackslash{}",
}
_LATEX_PATTERN = re.compile(
    "|".join(re.escape(token) for token in sorted(_LATEX_REPLACEMENTS, key=len, reverse=True))
)


def latex_escape(text: str) -> str:
    """``text`` as LaTeX source: special characters escaped, the paper's symbols as math."""
    return _LATEX_PATTERN.sub(lambda found: _LATEX_REPLACEMENTS[found.group(0)], text)


def to_latex(table: RenderedTable) -> str:
    lines = [
        f"% {latex_escape(table.title)}",
        "\\begin{tabular}{l" + "c" * (len(table.header) - 1) + "}",
        "\\toprule",
        " & ".join(latex_escape(cell) for cell in table.header) + " \\\\",
        "\\midrule",
    ]
    lines.extend(" & ".join(latex_escape(cell) for cell in row) + " \\\\" for row in table.rows)
    lines.extend(["\\bottomrule", "\\end{tabular}"])
    lines.extend(f"% {latex_escape(note)}" for note in table.notes)
    return "\n".join(lines) + "\n"


def write_csv(table: RenderedTable, path: Path) -> None:
    """The records, one per line; columns are the union of the records' keys in first-seen order."""
    columns: list[str] = []
    for record in table.records:
        columns.extend(key for key in record if key not in columns)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in table.records:
            writer.writerow({key: _csv_value(value) for key, value in record.items()})


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ";".join(str(item) for item in value)
    return value


def write_outputs(table: RenderedTable, out_dir: Path) -> list[Path]:
    """Write ``<name>.md``, ``<name>.csv`` and ``<name>.tex`` into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, csv_path, latex = (out_dir / f"{table.name}{suffix}" for suffix in (".md", ".csv", ".tex"))
    markdown.write_text(to_markdown(table))
    write_csv(table, csv_path)
    latex.write_text(to_latex(table))
    return [markdown, csv_path, latex]


def agg_figure(width: float, height: float) -> Figure:
    """A matplotlib figure drawn by the Agg backend (no display, no pyplot global state)."""
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure
