"""Split files: which item of which client is in which split, stored so a drawn split is reused.

One format for every dataset, a CSV file with a header::

    <item column>,client,split[,extra columns]

The item is what a dataset splits: an image (``image_id``, the dermoscopy layouts; extra
columns ``label``, ``lesion_id``) or a case (``case_id``, ``prostate_saml``).  An item is
identified by ``(client, item)``: case ids repeat across sites.  The legacy JSON split of
``prostate_saml`` (``{site: {split: [case, ...]}}``) is read too, converted on read.

:func:`read_split_file` parses a file, :func:`assign_splits` checks it against the items on
disk (every one listed, in its client, nothing else), :func:`write_split_file` writes one
atomically.  Also here: :func:`read_csv_rows`, the CSV reader of every layout.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, NamedTuple, Sequence, Tuple, Union

from fedml_prr.data.federation import SPLITS
from fedml_prr.files import atomic_write_text

PathLike = Union[str, Path]

#: How to get rid of a split file that does not fit the data.
REDRAW_HINT = "it was written for other data - delete it to draw a new split"


class SplitRow(NamedTuple):
    """One line of a split file: ``item`` of ``client`` is in ``split``."""

    item: str
    client: str
    split: str


def read_csv_rows(path: Path, required: Sequence[str], *, what: str = "") -> List[Dict[str, str]]:
    """Rows of a CSV file with a header, as dicts; clear errors for a missing file or column.

    Parameters
    ----------
    required:
        Columns that must be in the header (others are kept and may be ignored).
    what:
        Words naming what the file should be, appended to the missing-file error.
    """
    if not path.is_file():
        raise FileNotFoundError(f"missing CSV file {path}{'; ' + what if what else ''}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; the header has {header}")
        reader.fieldnames = header
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def _legacy_json_rows(path: Path) -> List[Tuple[int, SplitRow]]:
    """``{client: {split: [item, ...]}}`` (the old prostate_saml split) as numbered rows."""
    try:
        saved = json.loads(path.read_text())
        rows = [SplitRow(str(item), str(client), str(split)) for client, splits in saved.items()
                for split, items in splits.items() for item in items]
    except (json.JSONDecodeError, AttributeError, TypeError) as error:
        raise ValueError(f"split file {path} is not a split of the form {{client: {{split: [items]}}}} ({error}); "
                         "delete it to draw a new split") from error
    return list(enumerate(rows, start=1))


def read_split_file(path: PathLike, *, item_column: str = "image_id") -> List[SplitRow]:
    """The rows of a split file, in file order.

    Parameters
    ----------
    path:
        A CSV split file, or a legacy ``.json`` one (``{client: {split: [items]}}``).
    item_column:
        The CSV column naming the item (``image_id``, ``case_id``).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        A missing column, an unknown split, an item listed twice in one client, a JSON file
        of another shape.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"missing split file {path}")
        numbered = _legacy_json_rows(path)
        where = "entry"
    else:
        rows = read_csv_rows(path, (item_column, "client", "split"),
                             what=f"a split file has columns {item_column},client,split")
        numbered = [(line, SplitRow(r[item_column], r["client"], r["split"])) for line, r in enumerate(rows, start=2)]
        where = "line"
    seen = set()
    for number, row in numbered:
        if row.split not in SPLITS:
            raise ValueError(f"{path} {where} {number}: unknown split {row.split!r}; expected one of {SPLITS}")
        if (row.client, row.item) in seen:
            raise ValueError(f"{path} {where} {number}: {row.item!r} of client {row.client!r} is listed twice")
        seen.add((row.client, row.item))
    return [row for _, row in numbered]


def assign_splits(rows: Iterable[SplitRow], expected: Iterable[Tuple[str, str]], path: PathLike, *,
                  noun: str = "image") -> Dict[Tuple[str, str], str]:
    """The split of every expected ``(client, item)``, from the rows of the split file ``path``.

    Raises
    ------
    ValueError
        An expected item the file does not list, or lists in another client; an item the file
        lists that is not expected.  Each message says to delete the file to draw a new split.
    """
    listed = {(r.client, r.item): r.split for r in rows}
    clients_of: Dict[str, List[str]] = {}
    for client, item in listed:
        clients_of.setdefault(item, []).append(client)
    out = {}
    for client, item in expected:
        if (client, item) not in listed:
            elsewhere = clients_of.get(item)
            if elsewhere:
                raise ValueError(f"split file {path} puts {noun} {item!r} in client {elsewhere[0]!r}, the data in "
                                 f"{client!r}; {REDRAW_HINT}")
            raise ValueError(f"split file {path} does not list {noun} {item!r} of client {client!r}; {REDRAW_HINT}")
        out[(client, item)] = listed.pop((client, item))
    if listed:
        raise ValueError(f"split file {path} lists {len(listed)} {noun}(s) not in the data (e.g. "
                         f"{next(iter(listed))[1]!r}); {REDRAW_HINT}")
    return out


def format_split_file(rows: Iterable[Sequence[object]], *, item_column: str = "image_id",
                      extra_columns: Sequence[str] = ()) -> str:
    """The CSV text of a split file: header ``item_column,client,split,*extra_columns``, then ``rows``."""
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow([item_column, "client", "split", *extra_columns])
    writer.writerows(rows)
    return handle.getvalue()


def write_split_file(path: PathLike, rows: Iterable[Sequence[object]], *, item_column: str = "image_id",
                     extra_columns: Sequence[str] = ()) -> Path:
    """Write a split file atomically (creating its folder); rows are ``(item, client, split, *extra)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, format_split_file(rows, item_column=item_column, extra_columns=extra_columns))


def rows_of_assignment(assignment: Mapping[str, Mapping[str, Sequence[str]]]) -> List[SplitRow]:
    """``{client: {split: [items]}}`` as rows: client by client, split by split, items in order."""
    return [SplitRow(item, client, split) for client, splits in assignment.items() for split in SPLITS
            for item in splits.get(split, [])]
