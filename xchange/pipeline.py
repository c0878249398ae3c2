"""A route's data plane: bytes in the source layout -> files in the target layout.

No I/O happens here: :meth:`Pipeline.convert` is a pure function of the input bytes,
the source name and the clock, which is what ``xchange convert`` and the tests use.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from xchange.codecs import Codec, Columns, FastColumns, OneDocument, StartOver, codec_for
from xchange.codecs.json_codec import JsonCodec, RouteFunction, compile_route
from xchange.config import RouteConfig
from xchange.errors import ConfigError, MappingError, RepeatedDocuments, ValidationFailed
from xchange.layout import FieldSpec, FieldValueError, Layout, load_layout
from xchange.manifest import problems as manifest_problems
from xchange.mapping import (
    Document,
    Mapping,
    Record,
    RecordMapper,
    Step,
    apply_mapping,
    apply_steps,
    check_mapping,
    compile_mapping,
    load_mapping,
)
from xchange.mapping import superseded as mapping_superseded
from xchange.names import render_name, template_fields, template_problems
from xchange.report import Report
from xchange.sink import Output, Sink
from xchange.totals import LeftOut, Tally, agree, as_stated
from xchange.totals import written as written_totals


@dataclass(frozen=True, slots=True)
class Conversion:
    """What converting one source file produced."""

    outputs: list[Output]
    #: The encoding the source was read with (declared, or detected for ``auto``).
    encoding: str | None
    #: Business keys of the documents written, and of those skipped as already delivered.
    keys: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: What may be wrong but did not stop the file (mojibake, an encoding guessed).
    warnings: list[str] = field(default_factory=list)
    #: Records and lines the mapping's filters left out, by kind.
    filtered: dict[str, int] = field(default_factory=dict)
    #: The control totals the source and its outputs agreed on, by name (everything read,
    #: the repeats left out included).
    totals: dict[str, Decimal] = field(default_factory=dict)
    #: Records read from the source (None: a copy reads none).
    records: int | None = None
    #: The part of ``totals`` that is the repeats left out (not delivered by this file).
    left_out: dict[str, Decimal] = field(default_factory=dict)

    @property
    def delivered_totals(self) -> dict[str, Decimal]:
        """The totals of what this file delivered: ``totals`` less the repeats left out."""
        return {k: v - self.left_out.get(k, Decimal(0)) for k, v in self.totals.items()}

    def filtered_note(self) -> str:
        """``3 documents, 12 lines skipped by filter`` (empty when nothing was)."""
        parts = [f"{n} {kind}" for kind, n in sorted(self.filtered.items()) if n]
        return f"{', '.join(parts)} skipped by filter" if parts else ""


class _Converter:
    """What both kinds of route data plane share."""

    #: Whether documents are checked for business keys delivered before (``skip``).
    dedupes = False

    def convert(self, data: bytes, source_name: str, now: datetime) -> list[Output]:
        """Convert bytes in memory (``xchange convert`` and tests); see ``convert_stream``."""
        return self.convert_stream(io.BytesIO(data), source_name, now, Sink()).outputs

    def convert_stream(
        self,
        stream: BinaryIO,
        source_name: str,
        now: datetime,
        sink: Sink,
        *,
        skip: Callable[[str], bool] | None = None,
        digest: tuple[int, str] | None = None,
    ) -> Conversion:
        raise NotImplementedError


class Pipeline(_Converter):
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
            if name is None:
                problems.append(f'route {route.name}: {key}: required (or set mapping = "copy")')
                continue
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
        problems.extend(f"{self.target.source_file}: {p}" for p in self.target.write_collisions())
        if self.target.codec == "xlsx":  # (its template, checked against the layout)
            from xchange.codecs.xlsx_codec import template_problems as xlsx_template_problems

            problems.extend(xlsx_template_problems(self.target))
        self.compiled, _ = compile_mapping(self.mapping, self.source, self.target)
        #: The mapping's steps, loaded and checked (empty: the mapping maps by itself).
        self.steps: list[Step] = []
        if self.mapping.steps:
            self.steps, step_problems = _load_steps(self.mapping, self.source, self.target, formats)
            problems.extend(step_problems)
        problems.extend(
            f"route {route.name}: target.name: {problem}"
            for problem in template_problems(
                route.target.name, frozenset(f.name for f in self.target.fields)
            )
        )
        problems.extend(manifest_problems(route, self.mapping.totals))
        if problems:
            raise ConfigError(problems)
        used = template_fields(route.target.name)
        self._name_fields = [f for f in self.target.fields if f.name in used]
        self._key_field = None
        business_key = route.dedupe_key or self.target.business_key
        if business_key is not None and route.repeats != "deliver":
            self._key_field = next((f for f in self.target.fields if f.name == business_key), None)
            if self._key_field is None:
                raise ConfigError(
                    [
                        f"route {route.name}: dedupe_key: target layout {self.target.source_file} "
                        f"has no header field {business_key!r}"
                    ]
                )

        #: The route's own delivery settings that can judge a file (its target name and
        #: if_exists policy): a change to them re-checks its quarantined files too.
        self._route_hash = _settings_hash(route)
        self._reader: Codec = codec_for(self.source)
        self._writer: Codec = codec_for(self.target)
        #: The writer's bytes of a file of one document, where it can give them at once.
        self._one = self._writer.document if isinstance(self._writer, OneDocument) else None
        self._plan = None
        self.dedupes = self._key_field is not None
        if self._key_field is None and isinstance(self._reader, Columns):
            from xchange.codecs.columnar import ColumnarPlan

            self._plan = ColumnarPlan.build(self.source, self.mapping, self.target, self.compiled)
        #: The columnar plan on Arrow columns, for routes within its subset.
        self._arrow: Any = None
        if self._plan is not None and isinstance(self._reader, FastColumns):
            from xchange.codecs.arrow import ArrowPlan

            self._arrow = ArrowPlan.build(self._plan)
        #: Whether to read the fast way (:meth:`FastColumns.fast_chunks`): for the Arrow
        #: plan (the columnar plan alone is quicker on pandas' reading: its values are
        #: Python strings there from the start).
        self._fast = self._arrow is not None
        #: The route compiled into one function per record, where it can be.
        self._compiled_route = self._compile_route()

    def superseded(self) -> list[str]:
        """What the route's layouts and mappings write in a superseded form, and how to
        write it now (``check`` says so; the files still work)."""
        notes = [*self.source.superseded(), *self.target.superseded()]
        chain = self.steps or [Step(self.mapping, self.source, self.target, self.compiled)]
        for step in chain:
            notes += mapping_superseded(step.mapping, step.source)
        return list(dict.fromkeys(notes))

    @property
    def versions(self) -> tuple[str, str]:
        """(layout versions, mapping version) recorded in the journal with each file: the
        names and versions, with a hash of the files' contents (and of the lookups' master
        data), so that a quarantined file knows whether what judged it has changed."""
        layouts = (
            f"{self.source.name}@{self.source.version}->{self.target.name}@{self.target.version}"
            f"#{_content_hash(self.source.source_bytes, self.target.source_bytes)}"
        )
        lookups = "+".join(
            v
            for v in (
                self.compiled.lookups.versions(),
                *(s.compiled.lookups.versions() for s in self.steps),
            )
            if v
        )
        steps = [b for s in self.steps for b in (s.mapping.source_bytes, s.target.source_bytes)]
        mapping = (
            f"{self.mapping.name}@{self.mapping.version}"
            f"#{_content_hash(self.mapping.source_bytes, *steps)}{self._route_hash}"
        )
        return layouts, f"{mapping}+{lookups}" if lookups else mapping

    def convert_stream(
        self,
        stream: BinaryIO,
        source_name: str,
        now: datetime,
        sink: Sink,
        *,
        skip: Callable[[str], bool] | None = None,
        digest: tuple[int, str] | None = None,
    ) -> Conversion:
        """Parse, validate, map and encode one source file, record by record.

        The stream must be seekable (some codecs read twice). Outputs go to ``sink``;
        if anything is wrong with the file, none are kept.

        Raises:
            DecodeError: the bytes are not a readable document in the source layout.
            ValidationFailed: rules were broken; ``.report`` lists every problem.
            MappingError: the documents cannot be written in the target layout.
        """
        if self._plan is not None:
            return self._convert_columnar(stream, source_name, now, sink)
        if self._compiled_route is not None:
            return self._convert_compiled(stream, source_name, now, sink)
        report = Report(source_name, cap=self.source.max_problems)
        records: Iterable[Record] = _marked(
            _unique_checked(
                self.source,
                self._reader.records(stream, self.source, source_name, report),
                report,
            ),
            report,
        )
        counted = [0]
        records = _counted(records, counted)
        read = (
            Tally(self.mapping.totals, self.source, "source", self.mapping.tables)
            if self.mapping.totals
            else None
        )
        if read is not None:
            records = read.tap(records)
        docs = (
            apply_steps(self.steps, records, report)
            if self.steps
            else apply_mapping(self.mapping, self.target, records, report, compiled=self.compiled)
        )
        keys: list[str] = []
        skipped: list[str] = []
        # Repeats left out still count in the totals: read back as if written.
        left_out = (
            LeftOut(self.mapping.totals, self.target)
            if read is not None and self._key_field is not None
            else None
        )
        if self._key_field is not None:
            docs = self._deduplicated(docs, skip, keys, skipped, left_out, source_name, report)
        try:
            if self.mapping.output == "batch":
                self._write_batch(docs, source_name, now, sink, report)
            else:
                for doc in docs:
                    if report:
                        continue  # read on to report every problem, but write nothing more
                    name = render_name(
                        self.route.target.name, self._name_values(doc, source_name, now)
                    )
                    if self._one is not None:
                        sink.put(name, self._one(doc, self.target, name), 1)
                        continue
                    buf = io.BytesIO()  # one small file: written whole
                    self._writer.write([doc], self.target, name, buf)
                    sink.put(name, buf.getvalue(), 1)
        except FieldValueError as exc:  # a value the writer cannot put in the target layout
            sink.discard()
            raise MappingError(f"{source_name}: {exc.rule}: {exc.message}") from None
        except BaseException:
            sink.discard()
            raise
        if report:
            sink.discard()
            raise ValidationFailed(report.summary(), report=report)
        if skipped and self.route.repeats == "quarantine":
            sink.discard()
            raise RepeatedDocuments(
                f"{source_name}: {len(skipped)} document(s) delivered before: "
                f"{', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''} "
                '(the route quarantines repeats: repeats = "quarantine"); nothing was delivered',
                skipped,
            )
        agreed: dict[str, Decimal] = {}
        if read is not None:
            try:
                as_stated(read, source_name)  # (the source's own figures first)
                written = written_totals(
                    self.mapping.totals, self.target, list(sink.outputs), left_out
                )
                agreed = agree(read, written, source_name)
            except BaseException:
                sink.discard()
                raise
        return Conversion(
            list(sink.outputs),
            report.encoding,
            keys,
            skipped,
            report.warnings,
            report.skipped,
            agreed,
            counted[0],
            left_out=dict(left_out.tally.values) if left_out is not None and skipped else {},
        )

    def _compile_route(self) -> RouteFunction | None:
        """The route as one function per record (``compile_route``), where it takes it: a
        JSON source read by the JSON codec, one JSON document per record, nothing that
        reads several records (dedupe, totals, steps, grouping, a filter)."""
        if not (
            isinstance(self._reader, JsonCodec)
            and isinstance(self._writer, JsonCodec)
            and self.mapping.output == "per-document"
            and not self.steps
            and not self.mapping.totals
            and self._key_field is None
            and RecordMapper.fits(self.mapping, self.compiled)
        ):
            return None
        mapper = RecordMapper(self.mapping, self.target, Report(""), self.compiled)
        header = mapper.quick_rules("header")
        if header is None:
            return None
        return compile_route(
            self.source,
            self.target,
            header,
            mapper.quick_rules("lines"),
            [spec.name for spec in self._name_fields],
        )

    def _convert_compiled(
        self, stream: BinaryIO, source_name: str, now: datetime, sink: Sink
    ) -> Conversion:
        """``convert_stream`` with the route compiled (:meth:`_compile_route`): each record
        the compiled function vouches for (every key one the layout reads, every value
        good) is written from it, any other (and every one once a problem is found) read,
        checked, mapped and written the general way, one record at a time, in the order
        and with the report of the general way."""
        route = self._compiled_route
        assert route is not None and isinstance(self._reader, JsonCodec)
        reader, layout = self._reader, self.source
        report = Report(source_name, cap=layout.max_problems)
        mapper = RecordMapper(self.mapping, self.target, report, self.compiled)
        first: dict[tuple[str, str, object], str] = {}
        unique = _unique_checker(layout, report, first)
        template, name_fields = self.route.target.name, self._name_fields
        names = _source_values(source_name)
        put = sink.put
        count = 0
        try:
            nodes = reader.nodes(stream, layout, source_name, report, check_keys=False)
            while True:
                before = report.total - report.unread
                found = next(nodes, None)
                if found is None:
                    break
                where, node, _ = found
                made = route(node, where, first) if not report else None
                if made is not None:
                    data, shown = made
                    values: dict[str, object] = {}
                    for spec, value in zip(name_fields, shown, strict=True):
                        try:
                            values[spec.name] = spec.render(value)
                        except FieldValueError:
                            values[spec.name] = ""
                    values.update(names, date=now)
                    put(render_name(template, values), data, 1)
                    count += 1
                    continue
                # The general way: read, checked, marked, counted, mapped and written as
                # convert_stream does (see _unique_checked, _marked, _counted).
                reader.check_keys(node, where, layout, report)
                rec = reader.record(node, where, layout, report)
                unique(rec)
                if (
                    report.total - report.unread != before
                    and not rec.failed
                    and not any(ln.failed for ln in rec.lines)
                ):
                    rec.failed.add("*")
                for doc in mapper.documents(rec, count):
                    if report:
                        continue
                    name = render_name(template, self._name_values(doc, source_name, now))
                    assert self._one is not None
                    put(name, self._one(doc, self.target, name), 1)
                count += 1
        except FieldValueError as exc:  # a value the writer cannot put in the target layout
            sink.discard()
            raise MappingError(f"{source_name}: {exc.rule}: {exc.message}") from None
        except BaseException:
            sink.discard()
            raise
        if report:
            sink.discard()
            raise ValidationFailed(report.summary(), report=report)
        return Conversion(
            list(sink.outputs),
            report.encoding,
            [],
            [],
            report.warnings,
            report.skipped,
            {},
            count,
        )

    def _convert_columnar(
        self, stream: BinaryIO, source_name: str, now: datetime, sink: Sink
    ) -> Conversion:
        """Flat records to CSV, chunk by chunk as columns: read the fast way when the
        reader can vouch for the file, else (or when a rule is broken: the report is the
        standard reading's) from the start the standard way."""
        if self._fast:
            start = stream.tell()
            try:
                return self._columnar(stream, source_name, now, sink, fast=True)
            except StartOver:
                sink.discard()
                stream.seek(start)
        return self._columnar(stream, source_name, now, sink, fast=False)

    def _columnar(
        self, stream: BinaryIO, source_name: str, now: datetime, sink: Sink, *, fast: bool
    ) -> Conversion:
        """One reading of :meth:`_convert_columnar`: a chunk the Arrow plan (if any) gives
        up on goes to the columnar plan, a chunk it gives up on through the row path,
        which also makes the report if rules are broken."""
        from xchange.codecs.csv_codec import CsvWriter

        assert self._plan is not None and isinstance(self._reader, Columns)
        report = Report(source_name, cap=self.source.max_problems)
        self.compiled.lookups.refresh()
        writer: CsvWriter | None = None
        counter = [0]
        read = 0
        rows_path = False  # once a rule is broken, read on with the row path to report all
        chunks = (
            self._reader.fast_chunks(stream, self.source, source_name, report)
            if fast and isinstance(self._reader, FastColumns)
            else self._reader.chunks(stream, self.source, source_name, report)
        )
        try:
            with contextlib.ExitStack() as stack:
                for chunk in chunks:
                    read += chunk.size
                    native = (
                        self._arrow.convert(*chunk.native, chunk.offset)
                        if self._arrow is not None and chunk.native is not None
                        else None
                    )
                    out = None if rows_path or native is not None else self._plan.convert(chunk)
                    first: dict[str, object] | None
                    rendered: Any
                    if native is not None:
                        if native.skipped:
                            skipped = report.skipped.get("documents", 0) + native.skipped
                            report.skipped["documents"] = skipped
                        rendered = native
                        first = native.first()
                    elif out is not None:
                        if self._plan.skipped:
                            skipped = report.skipped.get("documents", 0) + self._plan.skipped
                            report.skipped["documents"] = skipped
                        rendered = out
                        first = (
                            {s.name: out.iloc[0][s.key] for s in self.target.fields}
                            if len(out)
                            else None
                        )
                    else:
                        docs = list(
                            apply_mapping(
                                self.mapping,
                                self.target,
                                _marked(chunk.rows(report), report),
                                report,
                                chunk.offset,
                                compiled=self.compiled,
                            )
                        )
                        if report:
                            if fast:
                                raise StartOver  # the standard reading makes the report
                            rows_path = True
                            continue
                        rendered = [
                            [s.render(d.header.get(s.name)) for s in self.target.fields]
                            for d in docs
                        ]
                        first = (
                            dict(
                                zip([s.name for s in self.target.fields], rendered[0], strict=True)
                            )
                            if rendered
                            else None
                        )
                    if writer is None and first is not None:
                        source = PurePosixPath(source_name)
                        name = render_name(
                            self.route.target.name,
                            {
                                **first,
                                "source_name": source.name,
                                "source_stem": source.stem,
                                "date": now,
                            },
                        )
                        fh = stack.enter_context(sink.create(name, counter))
                        writer = CsvWriter(self.target, name, fh)
                    if writer is not None and native is not None:
                        writer.rendered(native)
                    elif writer is not None:
                        writer.rows(rendered)
                if report:
                    raise ValidationFailed(report.summary(), report=report)
                if writer is not None:
                    counter[0] = writer.close()
        except FieldValueError as exc:
            sink.discard()
            raise MappingError(f"{source_name}: {exc.rule}: {exc.message}") from None
        except BaseException:
            sink.discard()
            raise
        return Conversion(
            list(sink.outputs),
            report.encoding,
            warnings=report.warnings,
            filtered=report.skipped,
            records=read,
        )

    def _deduplicated(
        self,
        docs: Iterator[Document],
        skip: Callable[[str], bool] | None,
        keys: list[str],
        skipped: list[str],
        left_out: LeftOut | None = None,
        source_name: str = "",
        report: Report | None = None,
    ) -> Iterator[Document]:
        """Drop documents whose business key ``skip`` says was delivered already (still
        counted in the control totals, through ``left_out``)."""
        spec = self._key_field
        assert spec is not None
        for doc in docs:
            try:
                key = spec.render(doc.header.get(spec.name))
            except FieldValueError:
                key = ""
            if key and skip is not None and skip(key):
                skipped.append(key)
                if left_out is not None and not report:  # (a file that fails is not tallied)
                    left_out.add(doc, source_name)
                continue
            if key:
                keys.append(key)
            yield doc

    def _write_batch(
        self,
        docs: Iterator[Document],
        source_name: str,
        now: datetime,
        sink: Sink,
        report: Report,
    ) -> None:
        first = next(docs, None)
        if first is None:
            return
        if report:
            for _ in docs:
                pass
            return
        name = render_name(self.route.target.name, self._name_values(first, source_name, now))
        count = [0]
        with sink.create(name, count) as out:
            count[0] = self._writer.write(itertools.chain([first], docs), self.target, name, out)

    def _name_values(self, doc: Document, source_name: str, now: datetime) -> dict[str, object]:
        """The values a target name template may use (rendered: only the fields it uses)."""
        values: dict[str, object] = {}
        for spec in self._name_fields:
            try:
                values[spec.name] = spec.render(doc.header.get(spec.name))
            except FieldValueError:
                values[spec.name] = ""
        values.update(_source_values(source_name), date=now)
        return values


def _load_steps(
    mapping: Mapping, source: Layout, target: Layout, formats: Path
) -> tuple[list[Step], list[str]]:
    """A mapping's steps with their layouts, each checked, and the chain checked: the
    first reads ``source``, each writes what the next reads, the last writes ``target``."""
    where = f"{mapping.source_file}: steps"
    steps: list[Step] = []
    problems: list[str] = []
    reads = source
    for i, name in enumerate(mapping.steps):
        try:
            step = load_mapping(formats, name)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return steps, problems
        if step.steps:
            problems.append(f"{where}[{i}]: {name} has steps of its own: name them here")
            return steps, problems
        last = i == len(mapping.steps) - 1
        if step.source != reads.name:
            problems.append(
                f"{where}[{i}]: {name} reads {step.source!r}, but "
                + ("the route's source is" if i == 0 else "the step before writes")
                + f" {reads.name!r}"
            )
            return steps, problems
        if last and step.target != target.name:
            problems.append(
                f"{where}[{i}]: {name} writes {step.target!r}, but the route's target is "
                f"{target.name!r}"
            )
            return steps, problems
        try:
            writes = target if last else load_layout(formats, step.target)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return steps, problems
        problems.extend(check_mapping(step, reads, writes))
        compiled, _ = compile_mapping(step, reads, writes)
        steps.append(Step(step, reads, writes, compiled))
        reads = writes
    return steps, problems


@functools.lru_cache(maxsize=64)
def _source_values(source_name: str) -> dict[str, str]:
    """``source_name`` and ``source_stem`` of a file-name template."""
    source = PurePosixPath(source_name)
    return {"source_name": source.name, "source_stem": source.stem}


def _unique_checked(layout: Layout, records: Iterable[Record], report: Report) -> Iterator[Record]:
    """The ``unique`` rule, checked as records stream by (header, line and group fields:
    a serial number given twice in a file, in one line's items or two)."""
    checked = _unique_checker(layout, report, {})
    for rec in records:
        checked(rec)
        yield rec


def _unique_checker(
    layout: Layout, report: Report, first: dict[tuple[str, str, object], str]
) -> Callable[[Record], None]:
    """The ``unique`` rule for one record after another (``first``: where each value
    was first seen, by (level, field, value))."""
    head = [f for f in layout.fields if f.unique]
    line = [f for f in layout.line_fields if f.unique]
    groups = {g.name: [f for f in g.fields if f.unique] for g in layout.groups}
    groups = {name: specs for name, specs in groups.items() if specs}

    def check(spec: FieldSpec, row: Record, level: str = "") -> None:
        value = row.values.get(spec.name)
        if value is None:
            return
        key = (level, spec.name, value)
        if key in first:
            report.add(
                row.location,
                spec.shown,
                "unique",
                value,
                f"the same value is already at {first[key]}",
            )
            row.failed.add(spec.name)
        else:
            first[key] = row.location

    def items(row: Record) -> None:
        for name, held in row.groups.items():
            for item in held:
                for spec in groups.get(name, ()):
                    check(spec, item, name)
                if item.groups:
                    items(item)

    def checked(rec: Record) -> None:
        for spec in head:
            check(spec, rec)
        for ln in rec.lines:
            for spec in line:
                check(spec, ln)
            if groups and ln.groups:
                items(ln)
        if groups and rec.groups:
            items(rec)

    return checked


def _counted(records: Iterable[Record], count: list[int]) -> Iterator[Record]:
    """The records, counted into ``count[0]`` as they go by."""
    for record in records:
        count[0] += 1
        yield record


def _marked(records: Iterable[Record], report: Report) -> Iterator[Record]:
    """Mark a record that broke a rule while it was read without naming the field (see
    ``Record.failed``): the record as a whole is then not mapped. Input the layout does
    not read (an unknown element beside the fields) leaves the fields' values whole."""
    source = iter(records)
    while True:
        # (problems the consumer found mapping the last one are in)
        before = report.total - report.unread
        rec = next(source, None)
        if rec is None:
            return
        found = report.total - report.unread != before
        if found and not rec.failed and not any(ln.failed for ln in rec.lines):
            rec.failed.add("*")
        yield rec


def _content_hash(*contents: bytes) -> str:
    """The first 8 hex digits of the sha256 of the files' bytes as they were loaded (a
    test layout built in memory has none): an edit on disk not loaded yet changes
    nothing, so a file re-checked before a reload is recorded under what judged it."""
    sha = hashlib.sha256()
    for content in contents:
        sha.update(content)
    return sha.hexdigest()[:8]


def _settings_hash(route: RouteConfig) -> str:
    """``/`` and 6 hex digits of the route's target name template and policy (and its
    archive settings, where it has any)."""
    text = f"{route.target.name}|{route.target.if_exists}"
    # Archive settings count only where they are set (other routes keep their hash).
    if route.source.unpack is not None:
        text += f"|unpack {route.source.unpack.model_dump_json()}"
    if route.target.archive is not None:
        text += f"|zip {route.target.archive.model_dump_json()}"
    return "/" + hashlib.sha256(text.encode()).hexdigest()[:6]


class CopyPipeline(_Converter):
    """``mapping = "copy"``: deliver the file byte for byte, under the route's name template
    (``{source_name}``, ``{source_stem}``, ``{date}``). No layout, no validation."""

    def __init__(self, route: RouteConfig) -> None:
        self.route = route
        self.versions = ("copy", f"copy{_settings_hash(route)}")
        problems = [
            f"route {route.name}: target.name: {p}"
            for p in template_problems(route.target.name, frozenset())
        ]
        problems.extend(manifest_problems(route, None))
        if problems:
            raise ConfigError(problems)

    def convert_stream(
        self,
        stream: BinaryIO,
        source_name: str,
        now: datetime,
        sink: Sink,
        *,
        skip: Callable[[str], bool] | None = None,
        digest: tuple[int, str] | None = None,
    ) -> Conversion:
        """The file itself as the one output; ``digest`` (size, sha256), when the caller
        has it already, spares reading the file again."""
        source = PurePosixPath(source_name)
        name = render_name(
            self.route.target.name,
            {"source_name": source.name, "source_stem": source.stem, "date": now},
        )
        if digest is not None and isinstance(stream, io.BytesIO):
            # Small files read into memory (batches): delivered from there.
            content = stream.getvalue()
            return Conversion([Output(name, digest[0], digest[1], 1, content=content)], None)
        path = getattr(stream, "name", None)
        if isinstance(path, str) and Path(path).is_file():
            # A file on disk is delivered from where it is: no copy into staging.
            if digest is not None:
                return Conversion([Output(name, digest[0], digest[1], 1, Path(path))], None)
            sha, size = hashlib.sha256(), 0
            while chunk := stream.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
            return Conversion([Output(name, size, sha.hexdigest(), 1, Path(path))], None)
        with sink.create(name, [1]) as out:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
        return Conversion(list(sink.outputs), None)


def make_pipeline(route: RouteConfig, formats: Path) -> Pipeline | CopyPipeline:
    """The route's data plane: layouts and a mapping, or a plain copy.

    Raises:
        ConfigError: a layout or mapping file is wrong, or they do not fit together.
    """
    if route.mapping == "copy":
        return CopyPipeline(route)
    return Pipeline(route, formats)
