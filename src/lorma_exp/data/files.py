"""The user's data files (CSV, TSV, JSON, JSON Lines) read row by row, every fault reported in one line.

Reading the files here rather than through ``datasets.load_dataset`` lets each error name the config
field, the file, the line (or byte) and the column, before any model is loaded: a file that is not
UTF-8, empty, only a header, a malformed JSON Lines line, a missing column (the message lists those the
file has), a blank cell. Only the columns a task uses are kept, so other columns may differ between files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorma_exp.config import ConfigError
from lorma_exp.data.hub import DataLoadError

DELIMITERS = {".csv": ",", ".tsv": "\t"}
JSON_SUFFIXES = (".json", ".jsonl")


@dataclass(frozen=True)
class Row:
    """One record of a file and where it is, for error messages."""

    values: dict[str, Any]
    line: int
    """The line the record ends on (a JSON file's records: their 1-based position in its list)."""


@dataclass(frozen=True)
class DataFile:
    """A file's records, as read by :func:`read_rows`."""

    path: Path
    field: str
    """The config field that named the file (``data.train_file``), for error messages."""
    columns: tuple[str, ...]
    rows: list[Row]

    def where(self, row: Row, column: str | None = None) -> str:
        """``data.train_file: train.csv line 7, column 'label'``."""
        place = f"record {row.line}" if self.path.suffix.lower() == ".json" else f"line {row.line}"
        return f"{self.field}: {self.path} {place}" + (f", column {column!r}" if column else "")

    def require_columns(self, used: Sequence[tuple[str, str]]) -> None:
        """Fails naming the config field and the file's columns when a used column is missing.

        ``used`` pairs a column with the config field that names it (``("text", "data.text_fields")``).
        """
        for column, column_field in used:
            if column not in self.columns:
                raise ConfigError(
                    f"{column_field}: column {column!r} is not in {self.field}={self.path} (its columns: "
                    f"{list(self.columns)}). Set {column_field} to one of those, or fix the file."
                )

    def column(self, name: str, names_field: str | None = None) -> list[Any]:
        """The values of a column, row by row; a blank or missing value fails naming its line.

        ``names_field`` is the config field that names the column, if one does, for the message.
        """
        values = []
        for row in self.rows:
            value = row.values.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                named = f" ({names_field} names this column)" if names_field else ""
                raise DataLoadError(
                    f"{self.where(row, name)} is blank or missing. Fill it in or remove the row{named}."
                )
            values.append(value)
        return values


def read_text(path: Path, field: str) -> str:
    """The file as text; non-UTF-8 bytes fail naming the byte offset."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataLoadError(
            f"{field}: {path} is not UTF-8: byte 0x{raw[error.start]:02x} at offset {error.start} (line {line}) "
            "cannot be decoded. Save the file as UTF-8."
        ) from None
    if not text.strip():
        raise DataLoadError(f"{field}: {path} is empty. Give a file with a header and at least one row.")
    return text


def _delimited_rows(text: str, path: Path, field: str, delimiter: str) -> tuple[tuple[str, ...], list[Row]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader)
    columns = tuple(name.strip() for name in header)
    rows = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if len(cells) != len(columns):
            raise DataLoadError(
                f"{field}: {path} line {reader.line_num} has {len(cells)} cells but the header has "
                f"{len(columns)} columns {list(columns)}. Quote cells that contain the delimiter."
            )
        rows.append(Row(dict(zip(columns, cells, strict=True)), reader.line_num))
    return columns, rows


def _json_lines_rows(text: str, path: Path, field: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataLoadError(
                f"{field}: {path} line {number} is not valid JSON ({error.msg} at column {error.colno}). "
                "Each line of a JSON Lines file must be one JSON object."
            ) from None
        if not isinstance(record, dict):
            raise DataLoadError(
                f"{field}: {path} line {number} is a JSON {type(record).__name__}, not an object. "
                'Each line must be one object, e.g. {"text": "...", "label": 1}.'
            )
        rows.append(Row(record, number))
    return rows


def _json_rows(text: str, path: Path, field: str) -> list[Row]:
    """A ``.json`` file: a list of objects, or JSON Lines under a .json name (as ``datasets`` accepts)."""
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError:
        return _json_lines_rows(text, path, field)
    records = loaded if isinstance(loaded, list) else [loaded]
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise DataLoadError(
                f"{field}: {path} record {number} is a JSON {type(record).__name__}, not an object. "
                "Give a list of objects, or one object per line (JSON Lines)."
            )
    return [Row(record, number) for number, record in enumerate(records, start=1)]


def read_rows(path_name: str, field: str) -> DataFile:
    """Every record of a CSV / TSV / JSON / JSON Lines file named by config field ``field``."""
    path = Path(path_name)
    suffix = path.suffix.lower()
    if suffix not in (*DELIMITERS, *JSON_SUFFIXES):
        raise DataLoadError(
            f"{field}: {path_name!r} is not a .csv, .tsv, .json or .jsonl file. Convert it to one of these."
        )
    if not path.is_file():
        raise DataLoadError(f"{field}: {path_name!r} does not exist. Give the path of an existing file.")
    text = read_text(path, field)
    if suffix in DELIMITERS:
        columns, rows = _delimited_rows(text, path, field, DELIMITERS[suffix])
    else:
        rows = _json_rows(text, path, field) if suffix == ".json" else _json_lines_rows(text, path, field)
        columns = tuple(dict.fromkeys(name for row in rows for name in row.values))
    if not rows:
        what = "a header but no rows" if suffix in DELIMITERS else "no records"
        raise DataLoadError(f"{field}: {path} has {what}. Add at least one row.")
    return DataFile(path, field, columns, rows)
