"""A route's data plane: bytes in the source layout -> files in the target layout.

No I/O happens here: :meth:`Pipeline.convert` is a pure function of the input bytes,
the source name and the clock, which is what ``xchange convert`` and the tests use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from xchange.codecs import Codec, codec_for
from xchange.config import RouteConfig
from xchange.errors import ConfigError, MappingError, ValidationFailed
from xchange.layout import FieldValueError, Layout, load_layout
from xchange.mapping import (
    Document,
    Mapping,
    Record,
    apply_mapping,
    check_mapping,
    load_mapping,
)
from xchange.names import render_name
from xchange.report import Report


@dataclass(frozen=True, slots=True)
class Output:
    """One file to deliver."""

    name: str
    data: bytes
    documents: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class Pipeline:
    """Layouts, mapping and codecs of one route, loaded and cross-checked once."""

    def __init__(self, route: RouteConfig, formats: Path) -> None:
        self.route = route
        problems: list[str] = []
        loaded: dict[str, Layout | Mapping] = {}
        for key, loader, name in (
            ("source_layout", load_layout, route.source_layout),
            ("mapping", load_mapping, route.mapping),
            ("target_layout", load_layout, route.target_layout),
        ):
            try:
                loaded[key] = loader(formats, name)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        self.source: Layout = loaded["source_layout"]  # type: ignore[assignment]
        self.mapping: Mapping = loaded["mapping"]  # type: ignore[assignment]
        self.target: Layout = loaded["target_layout"]  # type: ignore[assignment]
        problems = check_mapping(self.mapping, self.source, self.target)
        if problems:
            raise ConfigError(problems)
        self._reader: Codec = codec_for(self.source)
        self._writer: Codec = codec_for(self.target)

    @property
    def versions(self) -> tuple[str, str]:
        """(layout versions, mapping version) recorded in the journal with each file."""
        layouts = (
            f"{self.source.name}@{self.source.version}->{self.target.name}@{self.target.version}"
        )
        return layouts, f"{self.mapping.name}@{self.mapping.version}"

    def convert(self, data: bytes, source_name: str, now: datetime) -> list[Output]:
        """Parse, validate, map and encode one source file.

        Raises:
            DecodeError: the bytes are not a readable document in the source layout.
            ValidationFailed: rules were broken; ``.report`` lists every problem.
            MappingError: the documents cannot be written in the target layout.
        """
        report = Report(source_name, cap=self.source.max_problems)
        records = self._reader.read(data, self.source, source_name, report)
        check_unique(self.source, records, report)
        if report:
            raise ValidationFailed(report.summary(), report=report)
        if not records:
            return []
        docs = apply_mapping(self.mapping, self.target, records, report)
        if report:
            raise ValidationFailed(report.summary(), report=report)
        groups = [docs] if self.mapping.output == "batch" else [[doc] for doc in docs]
        outputs: list[Output] = []
        for group in groups:
            name = render_name(
                self.route.target.name, self._name_values(group[0], source_name, now)
            )
            outputs.append(Output(name, self._writer.write(group, self.target, name), len(group)))
        names = [o.name for o in outputs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise MappingError(
                f"{source_name}: the file-name template {self.route.target.name!r} gives the "
                f"same name to several documents: {', '.join(dupes)}"
            )
        return outputs

    def _name_values(self, doc: Document, source_name: str, now: datetime) -> dict[str, object]:
        values: dict[str, object] = {}
        for spec in self.target.fields:
            try:
                values[spec.name] = spec.render(doc.header.get(spec.name))
            except FieldValueError:
                values[spec.name] = ""
        source = PurePosixPath(source_name)
        values.update(source_name=source.name, source_stem=source.stem, date=now)
        return values


def check_unique(layout: Layout, records: list[Record], report: Report) -> None:
    """The ``unique`` rule: a value may appear once per file (header fields and line fields)."""
    for specs, rows in (
        (layout.fields, records),
        (layout.line_fields, [line for rec in records for line in rec.lines]),
    ):
        for spec in specs:
            if not spec.unique:
                continue
            first: dict[object, str] = {}
            for row in rows:
                value = row.values.get(spec.name)
                if value is None:
                    continue
                if value in first:
                    report.add(
                        row.location,
                        spec.key,
                        "unique",
                        value,
                        f"the same value is already at {first[value]}",
                    )
                else:
                    first[value] = row.location
