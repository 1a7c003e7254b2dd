"""Read a labels CSV (one row per image: file name, label) and map label names to class indices.

Row problems (too few columns, empty cells, duplicates, unknown labels) are returned, not raised, so the dataset can
report them together with the file problems.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

from .errors import DataError

__all__ = ["LabelTable", "read_label_csv", "index_labels"]

_FILE_COLUMNS = ("filename", "file", "path", "image", "name", "fname")
_LABEL_COLUMNS = ("label", "class", "target", "diagnosis", "category", "y")


@dataclass
class LabelTable:
    rows: dict[str, tuple[str, str]] = field(default_factory=dict)  # normalized file key -> (label, "csv:line")
    problems: list[tuple[str, str]] = field(default_factory=list)


def file_key(name: str) -> str:
    """Normalized relative path used to match CSV rows to files: forward slashes, no ``./``."""
    return os.path.normpath(name.strip()).replace(os.sep, "/")


def _find(lowered: list[str], given: str | None, candidates: tuple[str, ...]) -> int | None:
    names = (given,) if given is not None else candidates
    return next((lowered.index(c.strip().lower()) for c in names if c.strip().lower() in lowered), None)


def _columns(header: list[str], filename_column, label_column, path: str) -> tuple[int, int, bool]:
    """(file column, label column, has header) from the first row; a column the user names must be in it."""
    lowered = [h.strip().lower() for h in header]
    file_col = _find(lowered, filename_column, _FILE_COLUMNS)
    label_col = _find(lowered, label_column, _LABEL_COLUMNS)
    for given, found in ((filename_column, file_col), (label_column, label_col)):
        if given is not None and found is None:
            raise DataError(f"{path}: header {header} has no column {given!r}")
    if file_col is not None and label_col is not None:
        return file_col, label_col, True
    if file_col is not None or label_col is not None:
        raise DataError(f"{path}: header {header} names only one of the two columns; expected a file column "
                        f"(one of {list(_FILE_COLUMNS)}) and a label column (one of {list(_LABEL_COLUMNS)}), or "
                        f"filename_column=/label_column=")
    return 0, 1, False  # no header: first column file, second label


def read_label_csv(path, filename_column: str | None = None, label_column: str | None = None) -> LabelTable:
    """Parse the CSV; a header is recognized by its column names, else the first two columns are file, label."""
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the labels CSV {path}: {type(exc).__name__}: {exc}") from None
    numbered = [(i + 1, r) for i, r in enumerate(rows) if any(cell.strip() for cell in r)]
    if not numbered:
        raise DataError(f"the labels CSV {path} is empty; expected rows of (filename, label)")
    file_col, label_col, has_header = _columns(numbered[0][1], filename_column, label_column, path)
    table = LabelTable()
    for line, row in numbered[1:] if has_header else numbered:
        where = f"{path}:{line}"
        if len(row) <= max(file_col, label_col):
            table.problems.append((where, f"row {row} has {len(row)} column(s); expected at least "
                                          f"{max(file_col, label_col) + 1}"))
            continue
        name, label = row[file_col].strip(), row[label_col].strip()
        if not name or not label:
            table.problems.append((where, f"row {row} has an empty {'file name' if not name else 'label'}"))
            continue
        key = file_key(name)
        if key in table.rows:
            table.problems.append((where, f"{name!r} is listed again (first at {table.rows[key][1]})"))
            continue
        table.rows[key] = (label, where)
    return table


def index_labels(table: LabelTable, classes=None):
    """(key -> class index, class names, name -> index, problems).

    ``classes`` fixes the order; otherwise integer labels keep their values (names are the integers as text) and
    text labels are numbered in sorted order, as torchvision's ImageFolder numbers its folders.
    """
    labels = {key: label for key, (label, _) in table.rows.items()}
    problems = []
    if classes is not None:
        names = tuple(str(c) for c in classes)
        if len(set(names)) != len(names):
            raise ValueError(f"classes must be distinct, got {list(names)}")
        mapping = {name: i for i, name in enumerate(names)}
    elif labels and all(v.lstrip("-").isdigit() for v in labels.values()):
        values = sorted({int(v) for v in labels.values()})
        mapping = {str(v): v for v in values if v >= 0}
        names = tuple(str(v) for v in values if v >= 0)
        labels = {k: str(int(v)) for k, v in labels.items()}
    else:
        names = tuple(sorted(set(labels.values())))
        mapping = {name: i for i, name in enumerate(names)}
    indices = {}
    for key, label in labels.items():
        if label in mapping:
            indices[key] = mapping[label]
        else:
            expected = f"one of {list(names)}" if classes is not None else "a class index >= 0"
            problems.append((table.rows[key][1], f"label {label!r} for {key!r} is not {expected}"))
    return indices, names, mapping, problems
