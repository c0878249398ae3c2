"""Archives: zip, gzip and tar.gz taken in entry by entry, and outputs zipped on the way out.

On the way in (``[routes.source.unpack]``) an archive is unpacked whole into a private
folder before any of its entries is delivered, so that whatever is wrong with it (a
truncated or corrupt file, a bad CRC, an encrypted entry, a name that would leave its
folder, a link, too many entries, too many bytes, a bomb, a zip whose local headers and
central directory disagree or whose entries overlap, names that are one file on Windows or
macOS) refuses the archive as a whole (:class:`~xchange.errors.ArchiveRefused`) with
nothing of it sent. Limits are counted on the bytes as they come out of the decompressor:
the sizes an archive declares can lie. A gzip (a tar.gz too) is read to its end, so that
its CRC is checked.

Names are decoded first and split afterwards: a GBK name whose second byte is 0x5C (the
byte of ``\\``) is one character, not a folder. After decoding, a backslash, a drive
letter, an absolute path, ``.`` or ``..`` refuses the archive.

Each entry taken is then a source file of its own, journalled under
``<archive>!/<entry>`` (:func:`entry_path`) with its own content hash.

On the way out (``[routes.target.archive]``) the outputs of one source are written into
one zip with deterministic bytes (entries sorted by name, the time of the source's first
claim as every entry's time, fixed modes), so that a file converted again after a crash
gives the same archive.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gzip
import hashlib
import io
import stat
import struct
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, Protocol

from xchange.config import ArchiveSpec, UnpackSpec
from xchange.errors import ArchiveRefused, MappingError
from xchange.names import render_name
from xchange.private import private_folder
from xchange.sink import Output, Sink

if TYPE_CHECKING:
    from xchange.config import RouteConfig
    from xchange.pipeline import Conversion, CopyPipeline, Pipeline

#: Between an archive's name and an entry's path in the name a record is journalled under.
SEPARATOR = "!/"

#: Unpacked bytes below which the ratio is not judged (small files compress well).
RATIO_FLOOR = 1 << 20

_CHUNK = 1 << 20
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Member:
    """One entry unpacked: its path inside the archive, where its bytes are now, and
    their size and sha256 (counted as they came out)."""

    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Unpacked:
    """An archive unpacked: the entries to take (sorted by name) and those left out by
    ``ignore``."""

    members: list[Member]
    ignored: list[str]


def entry_path(archive: str, entry: str) -> str:
    """The name an entry is journalled under: ``shop_1207.zip!/orders_1.csv``."""
    return f"{archive}{SEPARATOR}{entry}"


def is_entry(path: str) -> bool:
    """Whether a journalled name is an archive's entry (not a file of a drop folder)."""
    return SEPARATOR in path


def kind_of(head: bytes, spec: UnpackSpec) -> str:
    """The kind of an archive from its first bytes (``spec.kind`` unless "auto").

    Raises:
        ArchiveRefused: the bytes are not an archive of the kind asked for.
    """
    if head[:4] in _ZIP_MAGIC:
        found = "zip"
    elif head[:2] == _GZIP_MAGIC:
        found = "gzip"
    else:
        raise ArchiveRefused("not a zip or gzip archive (its first bytes are neither)")
    wanted = spec.kind
    if wanted == "auto":
        return found
    if (wanted == "zip") != (found == "zip"):
        raise ArchiveRefused(f'not a {wanted} archive as the route says (kind = "{wanted}")')
    return wanted


def unpack(
    stream: BinaryIO, archive: str, spec: UnpackSpec, into: Path, *, workbooks: bool = False
) -> Unpacked:
    """Unpack the archive read from ``stream`` (named ``archive``) into the private folder
    ``into``, checking every entry's name and kind and the limits as bytes come out.
    ``workbooks``: the route reads each entry as an xlsx workbook, a zip of its own, so a
    zip entry is taken as it is (never unpacked again) rather than refused as nested.

    Raises:
        ArchiveRefused: the archive is corrupt, truncated, encrypted, hostile or over a
            limit; the message says which entry and why.
    """
    private_folder(into)
    stream.seek(0, io.SEEK_END)
    packed = max(stream.tell(), 1)
    stream.seek(0)
    head = stream.read(4)
    stream.seek(0)
    kind = kind_of(head, spec)
    counter = _Counter(spec, packed, workbooks)
    try:
        if kind == "zip":
            found = _zip(stream, spec, into, counter)
        elif kind == "tar.gz" or (kind == "gzip" and spec.kind == "auto" and _is_tar(stream)):
            found = _tar(stream, spec, into, counter)
        else:
            name = PurePosixPath(archive).name
            stem = name[: -len(".gz")] if name.lower().endswith(".gz") else f"{name}.out"
            with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
                found = [_take(stem, unzipped, into, counter)]
    except ArchiveRefused:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile) as exc:
        raise ArchiveRefused(f"corrupt or truncated archive: {exc}") from None
    except EOFError:
        raise ArchiveRefused("truncated archive: it ends before its last entry does") from None
    except zlib.error as exc:
        raise ArchiveRefused(f"corrupt archive: compressed data is damaged ({exc})") from None
    except UnicodeDecodeError:
        raise ArchiveRefused(
            f'an entry name is not {spec.names} (set unpack.names = "gbk" for zips made on '
            "Chinese Windows)"
        ) from None
    except (NotImplementedError, RuntimeError, ValueError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # this machine's fault (a full disk, an I/O error): the archive waits
        raise ArchiveRefused(f"cannot be unpacked: {exc}") from None
    members: list[Member] = []
    ignored: list[str] = []
    for member in found:
        # (ignore first: entries = "*.csv" with ignore = ["__MACOSX/*"] leaves out a Mac's
        # __MACOSX/._a.csv, whose "*" matches across the "/")
        if _matches(member.name, spec.ignore):
            member.path.unlink(missing_ok=True)
            ignored.append(member.name)
        elif _matches(member.name, spec.patterns):
            members.append(member)
        else:
            raise ArchiveRefused(
                f"entry {member.name!r} matches neither unpack.entries nor unpack.ignore"
            )
    if not members:
        raise ArchiveRefused("holds no entry to take (unpack.entries)")
    members.sort(key=lambda m: m.name)
    return Unpacked(members, sorted(ignored))


class _Counter:
    """Entries and bytes unpacked so far, against the route's limits."""

    def __init__(self, spec: UnpackSpec, packed: int, workbooks: bool = False) -> None:
        self.spec = spec
        self.packed = packed
        #: Zip entries are workbooks the route reads (not nested archives).
        self.workbooks = workbooks
        self.entries = 0
        self.total = 0
        self.names: set[str] = set()
        #: Each name as a case-insensitive, normalising file system sees it.
        self.folded: dict[str, str] = {}

    def entry(self, name: str) -> None:
        self.entries += 1
        if self.entries > self.spec.max_entries:
            raise ArchiveRefused(f"more than {self.spec.max_entries} entries (unpack.max_entries)")
        if name in self.names:
            raise ArchiveRefused(f"entry {name!r} is in the archive twice")
        self.names.add(name)
        folded = _folded(name)
        other = self.folded.setdefault(folded, name)
        if other != name:
            raise ArchiveRefused(
                f"entries {other!r} and {name!r} differ only by case, Unicode normalisation "
                "or trailing dots and spaces: on Windows or macOS they are one file"
            )

    def out(self, name: str, size: int) -> None:
        self.total += size
        if self.total > self.spec.max_total:
            raise ArchiveRefused(
                f"unpacks to more than {int(self.spec.max_total)} bytes (unpack.max_total), "
                f"at entry {name!r}"
            )
        if self.total > RATIO_FLOOR and self.total > self.spec.max_ratio * self.packed:
            raise ArchiveRefused(
                f"unpacks to more than {self.spec.max_ratio:g} times its {self.packed} bytes "
                f"(unpack.max_ratio), at entry {name!r}: a compression bomb?"
            )


def _folded(name: str) -> str:
    """A name as Windows or macOS would store it: case folded, NFC, each part without
    trailing dots and spaces (``A.csv``, ``a.csv.`` and ``a.csv`` are one file there)."""
    return "/".join(
        unicodedata.normalize("NFC", part).casefold().rstrip(". ") for part in name.split("/")
    )


def checked_name(name: str) -> str:
    """An entry's decoded path, refused if it could leave its folder.

    Raises:
        ArchiveRefused: absolute, ``..``, a drive letter, a backslash, a control character.
    """
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or ":" in name  # (a drive letter too)
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise ArchiveRefused(f"entry {name!r} would leave its folder (unsafe name)")
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ArchiveRefused(f"entry {name!r} would leave its folder (unsafe name)")
    return name


def reads_workbooks(pipeline: Pipeline | CopyPipeline) -> bool:
    """Whether a route reads its entries as xlsx workbooks (zips themselves, taken as
    they are: see :func:`unpack`)."""
    layout = getattr(pipeline, "source", None)
    return layout is not None and layout.codec == "xlsx"


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _take(name: str, source: _Readable, into: Path, counter: _Counter) -> Member:
    """Copy one entry's bytes out, counting and hashing them as they come."""
    counter.entry(name)
    path = into / f"{counter.entries:06d}"
    sha = hashlib.sha256()
    size = 0
    first = b""
    with open(path, "wb") as out:
        while chunk := source.read(_CHUNK):
            if not size:
                first = chunk[:4]
            size += len(chunk)
            counter.out(name, len(chunk))
            sha.update(chunk)
            out.write(chunk)
    if (first[:4] in _ZIP_MAGIC and not counter.workbooks) or first[:2] == _GZIP_MAGIC:
        raise ArchiveRefused(f"entry {name!r} is an archive itself: nested archives are refused")
    return Member(name, path, size, sha.hexdigest())


def _zip(stream: BinaryIO, spec: UnpackSpec, into: Path, counter: _Counter) -> list[Member]:
    found = []
    with zipfile.ZipFile(stream, metadata_encoding=spec.names) as archive:
        infos = archive.infolist()
        _check_layout(stream, archive)
        files = [i for i in infos if not i.is_dir()]
        if len(files) > spec.max_entries:
            raise ArchiveRefused(
                f"{len(files)} entries, more than {spec.max_entries} (unpack.max_entries)"
            )
        declared = sum(i.file_size for i in files)
        if declared > spec.max_total:
            raise ArchiveRefused(
                f"declares {declared} bytes unpacked, more than {int(spec.max_total)} "
                "(unpack.max_total)"
            )
        for info in infos:
            name = checked_name(info.filename)
            # (Unix file type bits; none at all, as Python's zipfile and some Java tools
            # write, is a plain file)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if info.create_system == 3 and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveRefused(f"entry {name!r} is a link or a device, not a file")
            if info.flag_bits & 0x1:
                raise ArchiveRefused(f"entry {name!r} is encrypted: it cannot be read")
            if info.is_dir():
                continue
            with archive.open(info) as entry:
                member = _take(name, entry, into, counter)
            if member.size != info.file_size:
                raise ArchiveRefused(
                    f"entry {name!r} declares {info.file_size} bytes but holds {member.size}"
                )
            found.append(member)
    return found


def _check_layout(stream: BinaryIO, archive: zipfile.ZipFile) -> None:
    """Each entry's local header agrees with the central directory (method, CRC, sizes;
    zipfile compares the names), and the entries' data lie one after another before the
    directory, none inside another: a zip that reads differently from one tool to the
    next (local headers are what streaming unzippers believe), or whose entries share
    their compressed data (an overlapping bomb), is refused."""
    infos = sorted(archive.infolist(), key=lambda i: i.header_offset)
    if infos and infos[0].header_offset != 0:
        raise ArchiveRefused(
            f"{infos[0].header_offset} bytes before the first entry: data the central "
            "directory does not list (a hidden entry, or a self-extracting program)"
        )
    for i, info in enumerate(infos):
        name = info.filename
        stream.seek(info.header_offset)
        head = stream.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise ArchiveRefused(
                f"entry {name!r}: no local header where the central directory says"
            )
        _, _, flags, method, _, _, crc, packed, size, name_len, extra_len = struct.unpack(
            "<IHHHHHIIIHH", head
        )
        start = info.header_offset + 30 + name_len + extra_len
        limit = infos[i + 1].header_offset if i + 1 < len(infos) else archive.start_dir
        if start + info.compress_size > limit:
            raise ArchiveRefused(
                f"entry {name!r} runs into the next entry or the central directory (its "
                "sizes lie, or entries share their data: an overlapping zip bomb?)"
            )
        # Between one entry's data and the next header: its data descriptor, nothing else
        # (a local entry the central directory does not list is read by streaming tools).
        gap = limit - (start + info.compress_size)
        if gap not in ((0, 12, 16, 20, 24) if flags & 0x08 else (0,)):
            raise ArchiveRefused(
                f"entry {name!r} is followed by {gap} bytes the central directory does not "
                "list (a hidden entry?): tools would read different files"
            )
        # (the UTF-8 flag too: a name's bytes read in another encoding are another name)
        local: tuple[int, ...] = (flags & 0x800, method, crc, packed, size)
        central: tuple[int, ...] = (
            info.flag_bits & 0x800,
            info.compress_type,
            info.CRC,
            info.compress_size,
            info.file_size,
        )
        if flags & 0x08 or 0xFFFFFFFF in (packed, size):
            # (CRC and sizes in a data descriptor after the data, or in a ZIP64 extra)
            local, central = local[:2], central[:2]
        if local != central:
            raise ArchiveRefused(
                f"entry {name!r}: its local header (UTF-8 flag, method, CRC, sizes: {local}) "
                f"disagrees with the central directory {central}: tools would read "
                "different files"
            )


def _is_tar(stream: BinaryIO) -> bool:
    """Whether a gzip stream holds a tar (``ustar`` at offset 257 of what it unpacks to)."""
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            head = unzipped.read(512)
    except (OSError, EOFError, zlib.error):
        return False  # judged when it is read for good
    finally:
        stream.seek(0)
    return head[257:262] == b"ustar"


def _tar(stream: BinaryIO, spec: UnpackSpec, into: Path, counter: _Counter) -> list[Member]:
    found = []
    with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
        # Read as a stream ("r|"): each member once, in order, nothing seeked or extracted
        # by tarfile itself.
        with tarfile.open(
            fileobj=unzipped, mode="r|", encoding=spec.names, errors="strict"
        ) as archive:
            for info in _members(archive):
                name = checked_name(info.name)
                if info.isdir():
                    continue
                if not info.isreg():
                    raise ArchiveRefused(f"entry {name!r} is a link or a device, not a file")
                entry = archive.extractfile(info)
                if entry is None:  # pragma: no cover - a regular member always has a reader
                    raise ArchiveRefused(f"entry {name!r} cannot be read")
                found.append(_take(name, entry, into, counter))
        # tarfile stops at the tar's end-of-archive block: the rest of the gzip is read
        # here to its end, so that its CRC and length are checked (tar data has no check
        # of its own: a damaged byte would otherwise be delivered), and what follows the
        # tar's end must be its zero padding, not entries some tools would see.
        while chunk := unzipped.read(_CHUNK):
            counter.out("(after the end of the tar)", len(chunk))
            if chunk.strip(b"\0"):
                raise ArchiveRefused(
                    "data after the end of the tar archive (hidden entries, or two tars "
                    "run together): refused"
                )
    return found


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (info := archive.next()) is not None:
        yield info


# ---------------------------------------------------------------------- zip out


def zipped(
    outputs: list[Output], spec: ArchiveSpec, name: str, when: datetime, folder: Path
) -> Output:
    """The outputs of one source as one zip named ``name`` in ``folder``: entries sorted
    by name, each stamped ``when`` (the source's first claim), deflated at a fixed level,
    names in ``spec.names`` (UTF-8 with the zip's UTF-8 flag).

    Raises:
        MappingError: an output's name cannot be written in ``spec.names``, or an output
            or the zip would need ZIP64 (4 GiB or more).
    """
    if any(o.name == name for o in outputs):
        raise MappingError(f"target.archive.name: {name!r} is also the name of an output")
    private_folder(folder)
    path = folder / name
    dos_time, dos_date = _dos_stamp(when)
    central = bytearray()
    count = 0
    with open(path, "w+b") as out:
        for output in sorted(outputs, key=lambda o: o.name):
            encoded, flags = _entry_name(output.name, spec.names)
            offset = out.tell()
            # The local header first with room for the CRC and sizes, filled in after.
            out.write(
                struct.pack(
                    "<IHHHHHIIIHH",
                    0x04034B50,
                    20,
                    flags,
                    8,
                    dos_time,
                    dos_date,
                    0,
                    0,
                    0,
                    len(encoded),
                    0,
                )
                + encoded
            )
            crc, size, packed = 0, 0, 0
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            with output.open() as data:
                while chunk := data.read(_CHUNK):
                    crc = zlib.crc32(chunk, crc)
                    size += len(chunk)
                    packed += out.write(compressor.compress(chunk))
            packed += out.write(compressor.flush())
            if max(size, packed, offset) >= 0xFFFFFFFF:
                raise MappingError(f"{output.name}: 4 GiB or more cannot be zipped without ZIP64")
            end = out.tell()
            out.seek(offset + 14)
            out.write(struct.pack("<III", crc, packed, size))
            out.seek(end)
            central += (
                struct.pack(
                    "<IHHHHHHIIIHHHHHII",
                    0x02014B50,
                    (3 << 8) | 20,
                    20,
                    flags,
                    8,
                    dos_time,
                    dos_date,
                    crc,
                    packed,
                    size,
                    len(encoded),
                    0,
                    0,
                    0,
                    0,
                    (stat.S_IFREG | 0o644) << 16,
                    offset,
                )
                + encoded
            )
            count += 1
        start = out.tell()
        if start >= 0xFFFFFFFF or count > 0xFFFF:
            raise MappingError(
                f"{count} outputs, {start:,} bytes zipped: more than a zip holds without ZIP64"
            )
        out.write(bytes(central))
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), start, 0))
        out.seek(0)
        sha, total = hashlib.sha256(), 0
        while chunk := out.read(_CHUNK):
            sha.update(chunk)
            total += len(chunk)
    return Output(name, total, sha.hexdigest(), sum(o.documents for o in outputs), path)


def _entry_name(name: str, encoding: str) -> tuple[bytes, int]:
    """An entry's name as bytes, and the flag bits it needs (0x800: UTF-8)."""
    if encoding == "utf-8":
        encoded = name.encode("utf-8")
        return encoded, 0 if name.isascii() else 0x800
    try:
        return name.encode(encoding), 0
    except UnicodeEncodeError:
        raise MappingError(
            f"target.archive.names: {name!r} cannot be written in {encoding}"
        ) from None


def _dos_stamp(when: datetime) -> tuple[int, int]:
    """``when`` (local wall time, whole seconds halved) as a zip entry's time and date."""
    year = min(max(when.year, 1980), 2107)
    return (
        (when.hour << 11) | (when.minute << 5) | (when.second // 2),
        ((year - 1980) << 9) | (when.month << 5) | when.day,
    )


def bundled(
    conversion: Conversion, spec: ArchiveSpec, source_name: str, when: datetime, folder: Path
) -> Conversion:
    """A conversion whose outputs are delivered as one zip (named by ``spec.name`` from
    the source's name and ``when``), written in ``folder``; one with no outputs stays so.

    Raises:
        UnsafeName: the name template does not make a safe name for this source.
        MappingError: see :func:`zipped`.
    """
    if not conversion.outputs:
        return conversion
    source = PurePosixPath(source_name)
    name = render_name(
        spec.name, {"source_name": source.name, "source_stem": source.stem, "date": when}
    )
    zip_output = zipped(conversion.outputs, spec, name, when, folder)
    return dataclasses.replace(conversion, outputs=[zip_output])


def convert_file(
    pipeline: Pipeline | CopyPipeline,
    route: RouteConfig,
    stream: BinaryIO,
    name: str,
    now: datetime,
    sink: Sink,
) -> Conversion:
    """Convert a file as the route takes it, without delivering it (``xchange convert``,
    the dry run): an archive's entries one after the other, in name order, each into a
    sink of its own in ``sink``'s folder; each source's outputs zipped where the route's
    target asks for it.

    Raises:
        ArchiveRefused: the archive is refused (see :func:`unpack`).
        FormatError: an entry is not a good file in the route's layouts.
    """
    spec = route.source.unpack
    if spec is None:
        return _as_delivered(
            route, pipeline.convert_stream(stream, name, now, sink), name, now, sink
        )
    with tempfile.TemporaryDirectory(prefix="xchange-unpack-") as scratch:
        unpacked = unpack(
            stream, name, spec, Path(scratch) / "entries", workbooks=reads_workbooks(pipeline)
        )
        conversions = []
        outputs: dict[str, Output] = {}
        for member in unpacked.members:
            source = entry_path(name, member.name)
            with open(member.path, "rb") as reading:
                # A sink of its own for each entry (its totals are read back from it).
                entry_sink = Sink(sink.folder)
                done = pipeline.convert_stream(reading, source, now, entry_sink)
            done = _as_delivered(route, done, source, now, entry_sink)
            for output in done.outputs:
                if output.name in outputs:
                    raise MappingError(f"{member.name}: {output.name} is made by two entries")
                outputs[output.name] = output
            conversions.append(done)
    return dataclasses.replace(
        conversions[0],
        outputs=list(outputs.values()),
        encoding=next((c.encoding for c in conversions if c.encoding), None),
        warnings=[w for c in conversions for w in c.warnings],
    )


def _as_delivered(
    route: RouteConfig, conversion: Conversion, source: str, now: datetime, sink: Sink
) -> Conversion:
    """A conversion's outputs as the route delivers them: zipped into ``sink``'s folder
    (or memory) when its target asks for it, the single outputs then removed."""
    spec = route.target.archive
    if spec is None or not conversion.outputs:
        return conversion
    with tempfile.TemporaryDirectory(prefix="xchange-zip-") as scratch:
        made = bundled(conversion, spec, source, now, Path(scratch))
        (zip_output,) = made.outputs
        data = zip_output.data
    for output in conversion.outputs:
        if (
            output.path is not None
            and sink.folder is not None
            and output.path.parent == sink.folder
        ):
            output.path.unlink(missing_ok=True)
    if sink.folder is None:
        return dataclasses.replace(
            made, outputs=[dataclasses.replace(zip_output, where=None, content=data)]
        )
    (sink.folder / zip_output.name).write_bytes(data)
    return dataclasses.replace(
        made, outputs=[dataclasses.replace(zip_output, where=sink.folder / zip_output.name)]
    )


__all__ = [
    "RATIO_FLOOR",
    "SEPARATOR",
    "Member",
    "Unpacked",
    "bundled",
    "checked_name",
    "convert_file",
    "entry_path",
    "is_entry",
    "kind_of",
    "reads_workbooks",
    "unpack",
    "zipped",
]
