"""Master-data files as tables for mapping rules: ``lookup("materials", sku)``.

A mapping declares each file once::

    [lookups.materials]
    file = "master/materials.csv"      # CSV with a header, or a JSON list of objects
    key = "sku"                        # or ["warehouse", "sku"]: a key "WH1|SKU-1"
    value = "material_code"            # the column a lookup gives unless it names another

The file is read once and kept (100,000 rows cost one dictionary look-up per value), read
again when it changes (size or time), and its content hash goes into the mapping's version
in the journal, so a record says which master data judged it. A key given twice in the
file is an error, never a silent choice of one row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from pathlib import Path
from typing import Any

from xchange.errors import ConfigError


class Lookup:
    """One master-data file, loaded on first use and whenever it changes."""

    def __init__(
        self,
        name: str,
        file: Path,
        key: list[str],
        value: str,
        encoding: str,
        delimiter: str,
        shown: str,
    ) -> None:
        self.name = name
        self.file = file
        self.key = key
        self.value = value
        self.encoding = encoding
        self.delimiter = delimiter
        self.shown = shown
        self._rows: dict[str, dict[str, Any]] = {}
        self._stamp: tuple[int, int] | None = None
        self.digest = ""
        self._lock = threading.Lock()
        self._columns: dict[str, tuple[str, dict[str, Any]]] = {}

    def refresh(self) -> None:
        """Read the file again if it changed since it was read.

        Raises:
            ConfigError: the file is missing, unreadable, or a key is in it twice.
        """
        try:
            st = self.file.stat()
        except OSError as exc:
            raise ConfigError(
                [f"{self.shown}: file: cannot read {self.file}: {exc.strerror}"]
            ) from None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp == self._stamp:
                return
            data = self.file.read_bytes()
            self._rows = self._parse(data)
            self.digest = hashlib.sha256(data).hexdigest()
            self._stamp = stamp

    def _parse(self, data: bytes) -> dict[str, dict[str, Any]]:
        try:
            text = data.decode(self.encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ConfigError(
                [f"{self.shown}: {self.file} is not {self.encoding}: {exc}"]
            ) from None
        text = text.removeprefix("\ufeff")
        if self.file.suffix.lower() == ".json":
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError([f"{self.shown}: {self.file}: not JSON: {exc}"]) from None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ConfigError([f"{self.shown}: {self.file}: expected a list of objects"])
            rows = [(n + 1, {str(k): v for k, v in i.items()}) for n, i in enumerate(items)]
        else:
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=self.delimiter)
            rows = [(reader.line_num, dict(r)) for r in reader]
            missing = [c for c in [*self.key, self.value] if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(
                    [f"{self.shown}: {self.file} has no column(s) {', '.join(missing)}"]
                )
        table: dict[str, dict[str, Any]] = {}
        where: dict[str, int] = {}
        for line, row in rows:
            key = "|".join(str(row.get(k, "")).strip() for k in self.key)
            if key in table:
                raise ConfigError(
                    [
                        f"{self.shown}: {self.file}: key {key!r} is at rows {where[key]} and "
                        f"{line}: which one to use is unclear"
                    ]
                )
            table[key] = row
            where[key] = line
        return table

    def get(self, key: str, column: str | None = None) -> Any:
        """The value at ``key`` (``column``, else the declared value column).

        Raises:
            KeyError: no such key (or column).
        """
        row = self._rows[key]
        return row[column or self.value]

    def column(self, name: str | None = None) -> dict[str, Any]:
        """Key -> the value column (or ``name``), for whole columns at once."""
        column = name or self.value
        cached = self._columns.get(column)
        if cached is None or cached[0] != self.digest:
            cached = (self.digest, {k: row.get(column) for k, row in self._rows.items()})
            self._columns[column] = cached
        return cached[1]

    def has(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)


class Lookups:
    """A mapping's lookups by name."""

    def __init__(self, lookups: dict[str, Lookup]) -> None:
        self.lookups = lookups

    def refresh(self) -> None:
        for lookup in self.lookups.values():
            lookup.refresh()

    def versions(self) -> str:
        """``materials:1a2b3c4d,...``: what master data a conversion used."""
        return ",".join(f"{n}:{lk.digest[:8]}" for n, lk in sorted(self.lookups.items()))

    def __contains__(self, name: object) -> bool:
        return name in self.lookups

    def __getitem__(self, name: str) -> Lookup:
        return self.lookups[name]
