"""The trainer's text outputs: strict JSON (``null`` for NaN / inf) and the CSV training log."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

from asr_hf.utils.io import atomic_output


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by ``None`` (JSON ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def json_line(row: dict[str, Any]) -> str:
    """One strict-JSON line (``null`` for NaN / inf, which ``json`` would write as ``NaN``)."""
    return json.dumps(finite_or_none(row), allow_nan=False)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` as a CSV table, atomically; the columns are every key in first-seen order.

    A non-finite number is an empty cell (the CSV form of JSON's ``null``), never ``nan``/``inf``,
    which spreadsheet and pandas readers would take for numbers.
    """
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(finite_or_none(dict(r)) for r in rows)


__all__ = ["finite_or_none", "json_line", "write_csv"]
