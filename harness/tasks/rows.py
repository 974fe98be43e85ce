"""The rows of one local data file: JSON lines, a JSON list, parquet or CSV, with errors that name the file and line."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from harness.core.errors import UserError


def read_rows(path: Path) -> list[dict]:
    """The rows of one local file: JSON lines (.jsonl), a JSON list (.json), parquet (.parquet) or CSV (.csv, every
    value as text)."""
    path = Path(path)
    if path.suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                return list(csv.DictReader(f))
        except (UnicodeDecodeError, csv.Error) as e:
            raise UserError(f"{path} is not a readable UTF-8 CSV file ({e})") from None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a file that is not parquet
            raise UserError(f"{path} is not a readable parquet file ({e})") from None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON ({e.msg})") from None
        if not isinstance(rows, list):
            raise UserError(f"{path} must hold a JSON list of rows")
        return rows
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n} is not valid JSON ({e.msg}); fix or delete that line") from None
    return rows
