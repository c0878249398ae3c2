"""Configuration: one TOML file, loaded once into frozen, typed objects.

Relative paths in the file are relative to the file's own folder, so a
configuration means the same thing whatever the working directory. Secrets are
never written in the file: an endpoint names the environment variable that holds
its password or key passphrase, and the value is read once, here, into a
:class:`pydantic.SecretStr` that prints as ``**********``.

Every problem is reported with the file and the key path, for example::

    config/demo.toml: routes[1].target.endpoint: no endpoint named "wms" (known: ...)
"""

from __future__ import annotations

import codecs
import os
import re
import tomllib
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from xchange.errors import ConfigError
from xchange.names import plain_problems, template_problems
from xchange.secrets import (
    CREDENTIALS,
    SecretExposed,
    SecretsMalformed,
    env_file,
    secret_file,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base")
    path = value.expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return Path(os.path.normpath(path))


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Model):
    """Seconds allowed for each phase of an SFTP session."""

    connect: float = Field(10.0, gt=0)
    banner: float = Field(15.0, gt=0)
    auth: float = Field(20.0, gt=0)
    operation: float = Field(30.0, gt=0)


class LocalEndpoint(_Model):
    """A folder on this machine."""

    type: Literal["local"] = "local"
    path: ConfigPath


class SFTPEndpoint(_Model):
    """A folder on an SFTP server."""

    type: Literal["sftp"] = "sftp"
    # Never an option to an SSH client: no leading "-", no spaces, no "@".
    host: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:\[\]][A-Za-z0-9_.:\[\]-]*$")
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
    path: str = "."
    key_file: ConfigPath | None = None
    key_passphrase_env: str | None = None
    password_env: str | None = None
    #: Or the secret from a file (or ``$CREDENTIALS_DIRECTORY/name``, a systemd
    #: credential): see :mod:`xchange.secrets`.
    key_passphrase_file: str | None = None
    password_file: str | None = None
    known_hosts: ConfigPath
    timeouts: Timeouts = Timeouts()
    keepalive: int = Field(30, ge=0)
    #: Files of at least this many MiB are moved by OpenSSH's own `sftp` client (faster
    #: than paramiko for big files), with the same key and the same pinned known_hosts;
    #: 0 turns this off. Used only with key authentication without a passphrase.
    accelerate_mb: int = Field(64, ge=0)
    # Filled from the environment at load time, never from the file.
    password: SecretStr | None = Field(None, exclude=True)
    key_passphrase: SecretStr | None = Field(None, exclude=True)


Endpoint = LocalEndpoint | SFTPEndpoint


@dataclass(frozen=True, slots=True)
class EndpointKind:
    """One kind of endpoint, the one place it is declared: its configuration, what it is,
    and the remote that serves it (``module:Class``, imported when an endpoint of the
    kind is first opened; the class makes one from the configuration, ``from_config``)."""

    model: type[_Model]
    summary: str
    remote: str


#: Every kind of endpoint, by the ``type`` its configuration gives.
ENDPOINT_KINDS: dict[str, EndpointKind] = {
    "local": EndpointKind(
        LocalEndpoint, "a folder on this machine", "xchange.remote.local:LocalRemote"
    ),
    "sftp": EndpointKind(
        SFTPEndpoint, "a folder on an SFTP server (paramiko)", "xchange.remote.sftp:SFTPRemote"
    ),
}


#: What a manifest's CSV columns may be: a file's name, size, sha256, documents, the
#: value of one of the route's control totals (``totals.<name>``), the source's name and
#: the route's.
MANIFEST_COLUMNS = ("name", "size", "sha256", "documents", "source", "route")


class CsvManifestLayout(_Model):
    """How a manifest in CSV is laid out (a partner's control-file layout)."""

    #: The columns in order, each one of MANIFEST_COLUMNS or ``totals.<name>``.
    columns: list[str] = Field(
        default_factory=lambda: ["name", "size", "sha256", "documents"], min_length=1
    )
    header: StrictBool = True
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    #: Line ends: "lf" or "crlf" (Windows tools).
    line_end: Literal["lf", "crlf"] = "lf"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r}") from None
        return encoding

    @field_validator("delimiter")
    @classmethod
    def _plain_delimiter(cls, delimiter: str) -> str:
        if delimiter in ('"', "\r", "\n"):
            raise ValueError(f"{delimiter!r} cannot separate columns")
        return delimiter


class TargetManifest(CsvManifestLayout):
    """A file written after the data files of one source: what was delivered."""

    #: json (every output with its figures), csv (``columns``), or done (an empty file).
    format: Literal["json", "csv", "done"] = "json"
    #: File-name template: ``{source_name}``, ``{source_stem}``, ``{date}`` (the source's
    #: first claim), ``{route}``; e.g. ``{source_stem}.manifest.json``, ``{source_stem}.ok``.
    name: str = Field(min_length=1)

    @model_validator(mode="after")
    def _columns(self) -> TargetManifest:
        if self.format != "csv" and self.model_fields_set & {
            "columns",
            "header",
            "delimiter",
            "encoding",
            "line_end",
        }:
            given = sorted(
                self.model_fields_set & {"columns", "header", "delimiter", "encoding", "line_end"}
            )
            raise ValueError(
                f"{', '.join(given)}: only a csv manifest has them (format is {self.format!r})"
            )
        for column in self.columns:
            if column not in MANIFEST_COLUMNS and not (
                column.startswith("totals.") and len(column) > len("totals.")
            ):
                raise ValueError(
                    f"columns: {column!r} is not one of {', '.join(MANIFEST_COLUMNS)} "
                    "or totals.<name>"
                )
        return self


class SourceManifest(CsvManifestLayout):
    """A partner's manifest: its data files are taken only once a manifest lists them,
    and checked against it."""

    #: Shell pattern (or patterns) of the manifests' names, e.g. ``*.manifest.json``.
    pattern: str | list[str] = Field(min_length=1)
    format: Literal["json", "csv"] = "json"

    @property
    def patterns(self) -> list[str]:
        return [self.pattern] if isinstance(self.pattern, str) else list(self.pattern)

    @model_validator(mode="after")
    def _columns(self) -> SourceManifest:
        kept = [c for c in self.columns if c]
        for column in kept:
            if column not in ("name", "size", "sha256", "documents"):
                raise ValueError(
                    f"columns: {column!r} is not one of name, size, sha256, documents "
                    '(or "" for a column to ignore)'
                )
        if "name" not in kept:
            raise ValueError("columns: a manifest needs a name column")
        if len(set(kept)) != len(kept):
            raise ValueError("columns: a column is named twice")
        return self


# --------------------------------------------------------------------------- PGP


def _fingerprint(value: str) -> str:
    """A key's full fingerprint, as 40 hex digits in capitals (spaces dropped)."""
    text = "".join(value.split()).upper().removeprefix("0X")
    if re.fullmatch(r"[0-9A-F]{16}|[0-9A-F]{8}", text):
        raise ValueError(
            f"{value!r} is a key id, not a pin: give the key's full fingerprint (40 hex digits, "
            "gpg --fingerprint shows it)"
        )
    if not re.fullmatch(r"[0-9A-F]{40}", text):
        raise ValueError(f"{value!r} is not a key fingerprint (40 hex digits)")
    return text


Fingerprint = Annotated[str, AfterValidator(_fingerprint)]


class PgpConfig(_Model):
    """GnuPG for the routes that decrypt or encrypt (see :mod:`xchange.pgp`): the folder
    of pinned keys (owner-only), our own key (decrypts what comes in, signs what goes
    out) and where its passphrase is."""

    #: The keyring folder: partners' public keys and our secret key, exported files
    #: (``.asc`` or binary), the folder and every file in it owner-only.
    keyring: ConfigPath
    #: Our key's fingerprint (40 hex digits): needed to decrypt and to sign.
    key: Fingerprint | None = None
    passphrase_env: str | None = None
    passphrase_file: str | None = None
    #: The gpg program (GnuPG 2.2 or later).
    gpg: str = "gpg"
    #: Seconds one gpg run may take (a big file included) before it is stopped.
    timeout: float = Field(600.0, gt=0)
    #: The most bytes a file may decrypt to (gpg's ``--max-output``): PGP compresses, so a
    #: small file may hold gigabytes of plaintext (a compression bomb).
    max_output: ByteSize = Field(ByteSize(1 << 30), gt=0)
    passphrase: SecretStr | None = Field(None, exclude=True)


class SourcePgp(_Model):
    """A route's files come PGP-encrypted (to our key) and signed by a pinned key."""

    decrypt: Literal[True] = True
    #: The partner keys (full fingerprints of their primary keys) a file may be signed by.
    signed_by: list[Fingerprint] = Field(default_factory=list)
    #: "required": an unsigned file is refused; "optional": an unsigned file is taken (a
    #: signature present must still be good and by a pinned key).
    signature: Literal["required", "optional"] = "required"

    @model_validator(mode="after")
    def _pinned(self) -> SourcePgp:
        if self.signature == "required" and not self.signed_by:
            raise ValueError(
                'signature = "required" needs signed_by: the fingerprints of the partner keys '
                'that sign (or signature = "optional")'
            )
        return self


class TargetPgp(_Model):
    """Each output encrypted to the partner's pinned key(s), signed with ours."""

    encrypt_to: list[Fingerprint] = Field(min_length=1)
    sign: StrictBool = True
    #: ASCII armour (``-----BEGIN PGP MESSAGE-----``) instead of binary.
    armor: StrictBool = False
    #: The delivered name, from the output's: ``{name}.pgp`` (``{name}.asc``...).
    name: str = "{name}.pgp"

    @field_validator("name")
    @classmethod
    def _template(cls, value: str) -> str:
        fields = set(re.findall(r"{([^{}]*)}", value))
        if fields != {"name"}:
            raise ValueError(
                f"{value!r}: write the delivered name with {{name}} alone, like {{name}}.pgp"
            )
        problems = plain_problems(value, {"name": "x"})
        if problems:
            raise ValueError(problems[0])
        return value


class UnpackSpec(_Model):
    """Archives taken in (``[routes.source.unpack]``): each entry is a source file of its
    own; see :mod:`xchange.archives`."""

    #: What the files are: "auto" (told by their first bytes), "zip", "gzip" (one
    #: compressed file) or "tar.gz".
    kind: Literal["auto", "zip", "gzip", "tar.gz"] = "auto"
    #: Entries to take (shell patterns on the entry's path inside the archive).
    entries: str | list[str] = "*"
    #: Entries to leave out on purpose; an entry matching neither list refuses the archive.
    ignore: list[str] = Field(default_factory=list)
    #: How entry names are written where the archive does not say (a zip entry without
    #: its UTF-8 flag, tar names): "utf-8", or "gbk" for zips made on Chinese Windows.
    names: str = "utf-8"
    #: Limits, checked on the bytes as they come out (declared sizes can lie): entries,
    #: bytes unpacked in all, and unpacked bytes per byte of archive (once past 1 MiB).
    max_entries: int = Field(1000, ge=1)
    max_total: ByteSize = Field(ByteSize(1 << 30), gt=0)
    max_ratio: float = Field(100.0, gt=1)

    @field_validator("names")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        return _known_codec(value)

    @property
    def patterns(self) -> list[str]:
        return [self.entries] if isinstance(self.entries, str) else list(self.entries)


class ArchiveSpec(_Model):
    """The outputs of one source delivered as one zip (``[routes.target.archive]``)."""

    kind: Literal["zip"] = "zip"
    #: File-name template of the zip (``{source_stem}``, ``{date:...}``, ``{source_name}``).
    name: str = Field(min_length=1)
    #: How entry names are written: "utf-8" (with the zip's UTF-8 flag) or the code page
    #: the partner's tool reads, such as "gbk".
    names: str = "utf-8"

    @field_validator("names")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        return _known_codec(value)

    @field_validator("name")
    @classmethod
    def _template(cls, value: str) -> str:
        problems = template_problems(value, frozenset())
        if problems:
            raise ValueError(problems[0])
        return value


def _known_codec(value: str) -> str:
    try:
        return codecs.lookup(value).name
    except LookupError:
        raise ValueError(f"{value!r} is not an encoding Python knows (e.g. utf-8, gbk)") from None


class SourceSpec(_Model):
    endpoint: str
    #: Files to take (shell pattern on the name); several with a list.
    pattern: str | list[str] = "*"
    #: Files to leave alone even when they match.
    exclude: list[str] = Field(default_factory=list)
    #: Look into sub-folders too (never into the archive folder).
    recursive: StrictBool = False
    #: The partner's manifests (None: every file is taken on its own).
    manifest: SourceManifest | None = None
    #: Files come PGP-encrypted and signed (None: as they are).
    pgp: SourcePgp | None = None
    #: Archives: each entry taken as a source file (None: files are taken as they are).
    unpack: UnpackSpec | None = None

    @property
    def patterns(self) -> list[str]:
        return [self.pattern] if isinstance(self.pattern, str) else list(self.pattern)

    @model_validator(mode="after")
    def _archives_only(self) -> SourceSpec:
        # A route that unpacks takes archives only: a pattern naming documents (every
        # file it takes then quarantined as "not a zip or gzip archive") is a mistake.
        if self.unpack is None:
            return self
        for pattern in self.patterns:
            stem = re.sub(r"(?i)\.(pgp|gpg|asc)$", "", pattern)
            ext = stem.rpartition(".")[2].lower() if "." in stem else ""
            if ext in _DOCUMENT_EXTENSIONS:
                raise ValueError(
                    f"unpack: pattern {pattern!r} takes .{ext} files, which are not archives; "
                    "a route that unpacks takes its archives only (*.zip, *.gz, *.tgz)"
                )
        return self


#: What a file name ending so holds is a document, not an archive (an xlsx workbook is a
#: zip, but one read by the xlsx codec: it is not unpacked).
_DOCUMENT_EXTENSIONS = frozenset({"csv", "tsv", "txt", "dat", "xml", "json", "xlsx", "xls"})


class ReadySpec(_Model):
    """When a file counts as completely written."""

    #: Seconds its size and time must stay unchanged.
    settle: float = Field(2.0, ge=0)
    #: Seconds since its last change before it is taken, however stable it looks.
    min_age: float = Field(0.0, ge=0)
    #: A done-marker that must exist, e.g. "{name}.ok" or "{stem}.done"; the marker is
    #: archived or deleted with the file.
    marker: str | None = None
    #: Seconds after which a file still not ready is reported as stuck (0: never).
    max_wait: float = Field(3600.0, ge=0)


class ScheduleSpec(_Model):
    """When the daemon looks at a route (local folders are also watched for changes)."""

    #: Seconds between looks.
    interval: float | None = Field(None, gt=0)
    #: A crontab line ("minute hour day month day-of-week"); days of the week by name.
    cron: str | None = None
    timezone: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ScheduleSpec:
        if self.interval is not None and self.cron is not None:
            raise ValueError("give interval or cron, not both")
        if self.cron is not None:
            fields = self.cron.split()
            if len(fields) != 5:
                raise ValueError(f"cron {self.cron!r}: expected 5 fields")
            if any(ch.isdigit() for ch in fields[4]):
                raise ValueError(
                    f"cron {self.cron!r}: write days of the week by name (mon-fri, sun): "
                    "numbers mean different days to different cron implementations"
                )
        if self.timezone is not None:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {self.timezone!r}") from None
        return self


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(text: str) -> frozenset[int]:
    """``mon-sat``, ``mon,wed,fri``, ``daily`` -> weekday numbers (Monday 0)."""
    text = text.strip().lower()
    if text in ("daily", "*", "mon-sun"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"days {text!r}: write days by name (mon-sat, mon,wed,fri, daily)")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
    return frozenset(days)


class ExpectSpec(_Model):
    """When files must have arrived: ``by`` (HH:MM) on ``days`` in ``timezone``, at least
    ``min_files`` delivered that day; and, optionally, an alarm when nothing came for
    ``silence_hours``."""

    by: str | None = Field(None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    days: str = "daily"
    timezone: str = "UTC"
    min_files: int = Field(1, ge=1)
    silence_hours: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _valid(self) -> ExpectSpec:
        import zoneinfo

        parse_days(self.days)
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        if self.by is None and self.silence_hours is None:
            raise ValueError("give by (a deadline) or silence_hours, or both")
        return self


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """``90m``, ``2h``, ``1d``, ``30s`` (or ``1h30m``) as a length of time."""
    found = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or found is None:
        raise ValueError(f"{text!r} is not a length of time: write it like 90m, 2h, 1d or 1h30m")
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


class TargetSpec(_Model):
    endpoint: str
    #: File-name template over the target document's header fields and the source name,
    #: e.g. ``WMS_OUT_{OrderNo}.xml``; see :mod:`xchange.names`.
    name: str = Field(min_length=1)
    #: When the final name is taken: fail (quarantine), overwrite, unique (add _1, _2 ...),
    #: or skip (deliver nothing under that name, and say so).
    if_exists: Literal["fail", "overwrite", "unique", "skip"] = "fail"
    #: The permissions every delivered file gets before its rename, whatever the path it
    #: takes (``0o644``, or ``"0640"``), or "server" to keep the server's default.
    mode: int | str = 0o644
    #: The partner collects what is delivered (takes it out of the folder): xchange notes
    #: when each output is gone ("picked up at"), shows what still waits, and, with
    #: ``pickup_within`` (``"2h"``), alerts an output not collected that long after its
    #: delivery, once per episode. ``pickup_within`` alone implies ``pickup``.
    pickup: StrictBool = False
    pickup_within: str | None = None
    #: How each delivered file is checked under its temporary name before its rename:
    #: "size" (the size the server shows), "hash" (a digest the server computes, where it
    #: offers a trustworthy one; else read back up to ``readback_max``) or "readback"
    #: (the file read back and its sha256 compared). A file that cannot be verified as
    #: asked (read back needed, and larger than ``readback_max``) is refused.
    verify: Literal["size", "hash", "readback"] = "size"
    #: The largest file read back to verify it (bytes, or "16MiB", "1GB"...); with "hash",
    #: 0 means the server's digest only (files are refused where it offers none).
    readback_max: ByteSize = Field(ByteSize(16 << 20), ge=0)
    #: A checksum file delivered after each data file: "sha256" puts ``NAME.sha256``
    #: (``sha256sum`` format) beside ``NAME``.
    sidecar: Literal["sha256"] | None = None
    #: A manifest written after the data files of each source (None: none).
    manifest: TargetManifest | None = None
    #: Each output encrypted (and signed) before delivery (None: as converted).
    pgp: TargetPgp | None = None
    #: The outputs of each source delivered together in one zip (None: one by one).
    archive: ArchiveSpec | None = None

    @model_validator(mode="after")
    def _check_mode(self) -> TargetSpec:
        self.permissions  # noqa: B018 - validates
        if self.verify == "readback" and self.readback_max == 0:
            raise ValueError(
                'verify = "readback" with readback_max = 0 would refuse every file: raise '
                'readback_max (bytes, or "16MiB")'
            )
        return self

    @field_validator("pickup_within")
    @classmethod
    def _check_within(cls, value: str | None) -> str | None:
        if value is not None and duration(value) <= timedelta(0):
            raise ValueError("give a length of time above zero, like 2h")
        return value

    @model_validator(mode="after")
    def _check_pickup(self) -> TargetSpec:
        if self.pickup_within is not None and "pickup" in self.model_fields_set and not self.pickup:
            raise ValueError(
                "pickup = false with pickup_within: a deadline to collect needs pickups "
                "watched; drop one of them"
            )
        return self

    @property
    def collected(self) -> bool:
        """Whether the partner collects what is delivered (its pickups are watched)."""
        return self.pickup or self.pickup_within is not None

    @property
    def collect_within(self) -> timedelta | None:
        """How long the partner has to collect an output (None: no limit)."""
        return None if self.pickup_within is None else duration(self.pickup_within)

    @property
    def permissions(self) -> int | None:
        """The mode bits to set, or None for the server's default."""
        if self.mode == "server":
            return None
        value = self.mode
        if isinstance(value, str):
            try:
                value = int(value, 8)
            except ValueError:
                raise ValueError(
                    f'mode: {self.mode!r} is not an octal mode like "0644" (or "server")'
                ) from None
        if isinstance(value, bool) or not 0 <= value <= 0o777:
            raise ValueError(f"mode: {self.mode!r} is not a file mode between 0o000 and 0o777")
        return value


class AfterSpec(_Model):
    """What happens to the source file once it is delivered."""

    action: Literal["archive", "delete", "leave"] = "archive"
    #: Archive folder, relative to the source endpoint's folder; may use date parts
    #: such as ``archive/{date:%Y%m%d}``.
    folder: str = "archive"


class RetrySpec(_Model):
    """Transient failures: tries within a run, then later runs, then quarantine."""

    #: Tries within one run, waiting initial, 2*initial, ... (capped at maximum) seconds.
    attempts: int = Field(3, ge=1, le=100)
    initial: float = Field(1.0, ge=0)
    maximum: float = Field(60.0, ge=0)
    #: Then the file waits for a later run: `later` seconds, doubling up to `later_max`.
    later: float = Field(60.0, ge=0)
    later_max: float = Field(3600.0, ge=0)
    #: Runs that may fail transiently before the file is quarantined.
    give_up_after: int = Field(10, ge=1)


class RouteQuarantine(_Model):
    """What happens to a route's quarantined files when their cause may be fixed."""

    #: Re-check quarantined files when the layouts, mapping, value tables or lookups that
    #: judged them change, and retry files given up on a transient cause once the
    #: target answers again; what passes is delivered (once), the rest stays.
    auto_retry: StrictBool = True
    #: At most this many files re-checked at one look (the rest at the next ones).
    batch: int = Field(100, ge=1, le=10_000)


class RouteConfig(_Model):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    source: SourceSpec
    #: Layouts and mapping under the formats folder; mapping = "copy" (and no layouts)
    #: delivers files byte for byte.
    source_layout: str | None = None
    mapping: str
    target_layout: str | None = None
    target: TargetSpec
    #: Files of this route handled at the same time (each with its own connections);
    #: 1 keeps the folder's order (oldest first). New small files of a copy route go in
    #: pipelined batches on one session instead (see ``xchange.batch``).
    transfers: int = Field(1, ge=1, le=64)
    after: AfterSpec = AfterSpec()
    retry: RetrySpec = RetrySpec()
    ready: ReadySpec = ReadySpec()
    schedule: ScheduleSpec = ScheduleSpec()
    #: Target header field that identifies a business document (e.g. an order number);
    #: by default the target layout's ``business_key``. A document whose key this route
    #: delivered before is a repeat (see ``repeats``).
    dedupe_key: str | None = None
    #: What a repeat does: "skip" it (deliver the rest, name the earlier file and date in
    #: the result and the report), "alert" (skip it and send an alert), "quarantine" (the
    #: whole file, nothing delivered), or "deliver" (no check: send it again).
    repeats: Literal["skip", "alert", "quarantine", "deliver"] = "skip"
    quarantine: RouteQuarantine = RouteQuarantine()
    #: Arrival deadlines and the silence alarm (None: nobody waits for this route's files).
    expect: ExpectSpec | None = None

    @model_validator(mode="after")
    def _repeats(self) -> RouteConfig:
        if self.repeats == "deliver" and self.dedupe_key is not None:
            raise ValueError(
                'repeats = "deliver" sends documents delivered before again: drop '
                "dedupe_key, or choose skip, alert or quarantine"
            )
        return self


class JournalConfig(_Model):
    """Where the journal is: a SQLite file (``path``, the embedded default), or a
    PostgreSQL database shared by several daemons (``url``; ``path``'s folder still holds
    this host's scratch space and run lock)."""

    path: ConfigPath
    #: ``postgresql://user@host:port/database`` (no password: it comes from password_env).
    url: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    #: Seconds a daemon's claim on a file lasts without renewal (renewed every third).
    lease: float = Field(120.0, gt=0)
    password: SecretStr | None = Field(None, exclude=True)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql://user@host:port/database URL")
        netloc = url.split("://", 1)[1].split("/", 1)[0]
        if "@" in netloc and ":" in netloc.split("@", 1)[0]:
            raise ValueError(
                "the URL holds a password: write it nowhere in the file; name the "
                "environment variable that holds it in journal.password_env"
            )
        return url


class QuarantineConfig(_Model):
    path: ConfigPath


class EmailSink(_Model):
    """Alerts by email (SMTP with STARTTLS or SSL, optional login)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    sender: str = Field(alias="from", min_length=3)
    to: list[str] = Field(min_length=1)
    #: Extra CA certificates to trust (a private mail relay).
    ca_file: ConfigPath | None = None
    timeout: float = Field(10.0, gt=0)
    password: SecretStr | None = Field(None, exclude=True)


class WebhookSink(_Model):
    """Alerts by HTTP POST of JSON, shaped for a generic receiver, DingTalk, WeCom or Slack."""

    type: Literal["webhook"]
    url: str | None = None
    #: The URL from an environment variable (DingTalk and WeCom URLs carry a token).
    url_env: str | None = None
    url_file: str | None = None
    shape: Literal["generic", "dingtalk", "wecom", "slack"] = "generic"
    timeout: float = Field(10.0, gt=0)
    secret_url: SecretStr | None = Field(None, exclude=True)


class LogSink(_Model):
    """Alerts as log events (``alert.sent``) only."""

    type: Literal["log"]


AlertSink = Annotated[EmailSink | WebhookSink | LogSink, Field(discriminator="type")]


def _log_sink() -> EmailSink | WebhookSink | LogSink:
    return LogSink(type="log")


class AlertsConfig(_Model):
    #: Seconds: at most one alert per route and cause in this window; the rest wait for
    #: a digest at the window's end.
    window: float = Field(900.0, gt=0)
    sinks: list[AlertSink] = Field(default_factory=lambda: [_log_sink()])


class DaemonConfig(_Model):
    #: Seconds between looks at a route without a schedule of its own.
    poll_interval: float = Field(30.0, gt=0)
    #: Seconds between full rescans of watched local folders (events can be lost).
    rescan: float = Field(300.0, gt=0)
    #: Seconds between looks at the targets whose partner collects files (pickups).
    pickup_every: float = Field(60.0, gt=0)
    #: Routes run at the same time (each in its own thread, with its own connections).
    workers: int = Field(4, ge=1, le=64)
    #: Metrics and health over HTTP (``127.0.0.1:9464``); off unless set.
    http: str | None = Field(None, pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):[0-9]{1,5}$")
    #: The environment variable holding the token a client not on this host must send.
    http_token_env: str | None = None


class AppConfig(_Model):
    """The whole configuration, as loaded from one file."""

    source_file: Path = Field(exclude=True)
    formats: ConfigPath = Path("formats")
    journal: JournalConfig
    quarantine: QuarantineConfig
    endpoints: dict[str, Endpoint]
    routes: list[RouteConfig] = Field(min_length=1)
    alerts: AlertsConfig = AlertsConfig()
    daemon: DaemonConfig = DaemonConfig()
    #: ``KEY=value`` lines xchange reads itself, where ``*_env`` names are looked up
    #: before the environment (see :mod:`xchange.secrets`).
    secrets: ConfigPath | None = None
    #: Secrets named by ``*_env`` keys whose variables are not set (loaded with
    #: ``secrets="defer"``): one line each, naming file, key and variable.
    missing_secrets: list[str] = Field(default_factory=list, exclude=True)
    #: GnuPG for routes that decrypt or encrypt (None: no route does).
    pgp: PgpConfig | None = None

    @model_validator(mode="after")
    def _pgp_keys(self) -> AppConfig:
        for i, route in enumerate(self.routes):
            where = f"routes[{i}]"
            wants = (route.source.pgp, route.target.pgp)
            if any(wants) and self.pgp is None:
                raise ValueError(f"{where}: uses PGP: add a [pgp] table naming the keyring")
            needs_key = route.source.pgp is not None or (
                route.target.pgp is not None and route.target.pgp.sign
            )
            if needs_key and self.pgp is not None and self.pgp.key is None:
                raise ValueError(
                    f"{where}: decrypts or signs: set pgp.key to our key's fingerprint"
                )
        return self

    def require_secrets(self) -> None:
        """Raise unless every secret the configuration names was found (for commands that
        connect or send alerts).

        Raises:
            ConfigError: one line per variable not set.
        """
        if self.missing_secrets:
            raise ConfigError(self.missing_secrets)

    def route(self, name: str) -> RouteConfig:
        for route in self.routes:
            if route.name == name:
                return route
        known = ", ".join(r.name for r in self.routes)
        raise ConfigError([f"{self.source_file}: no route named {name!r} (known: {known})"])


# --------------------------------------------------------------------------- errors


def key_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic location as ``routes[1].target.port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "string_type": "a string",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "dict_type": "a table",
    "model_type": "a table",
    "list_type": "a list",
    "path_type": "a path",
}


#: Key names that look like a secret someone tried to write into the file.
_SECRET_LIKE = re.compile(r"pass|secret|token|credential|api_?key|private|pwd|auth")


def describe_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as a sentence a person can act on (never echoes unknown keys)."""
    kind = err["type"]
    value = err.get("input")
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_show(value)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        # The value of an unknown key is never shown: it may be a misplaced secret.
        name = str(err["loc"][-1]).lower() if err.get("loc") else ""
        if _SECRET_LIKE.search(name):
            return (
                "unknown key (secrets are not written here: use password_env or key_passphrase_env)"
            )
        return "unknown key"
    if kind in ("value_error", "assertion_error"):
        return str(err.get("msg", kind)).removeprefix("Value error, ")
    msg = str(err.get("msg", kind))
    msg = msg[0].lower() + msg[1:] if msg else kind
    return f"{msg}, got {_show(value)}"


_UNION_TAGS = {"email", "webhook", "log"}


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop the tag pydantic inserts after a list index for a tagged union (sinks[0].email.x)."""
    out: list[int | str] = []
    for i, part in enumerate(loc):
        if i and isinstance(loc[i - 1], int) and part in _UNION_TAGS:
            continue
        out.append(part)
    return tuple(out)


def _problems(source: str, exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[str]:
    return [
        f"{source}: {key_path(_clean_loc(prefix + tuple(e['loc'])))}: {describe_error(e)}"
        for e in exc.errors(include_url=False)
    ]


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    secrets: Literal["require", "defer"] = "require",
) -> AppConfig:
    """Read, validate and resolve one configuration file.

    ``secrets="defer"``: a secret whose environment variable is not set is no problem
    here (commands that only read the journal need none); it is listed in
    ``missing_secrets`` for ``require_secrets()`` to refuse where it is needed.

    Raises:
        ConfigError: with one line per problem, each naming the file and key path.
    """
    env = os.environ if env is None else env
    source = str(path)
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None

    context = {"base": file.resolve().parent}
    problems: list[str] = []
    missing: list[str] = []
    env = _with_secrets_file(raw.get("secrets"), env, context["base"], source, problems, missing)
    endpoints: dict[str, Endpoint] = {}
    raw_endpoints = raw.pop("endpoints", {})
    if not isinstance(raw_endpoints, dict):
        problems.append(f"{source}: endpoints: expected a table, got {_show(raw_endpoints)}")
        raw_endpoints = {}
    for name, spec in raw_endpoints.items():
        loc: tuple[int | str, ...] = ("endpoints", name)
        if not re.match(NAME_PATTERN, name):
            problems.append(f"{source}: {key_path(loc)}: endpoint names use letters, digits, - _ .")
        if not isinstance(spec, dict):
            problems.append(f"{source}: {key_path(loc)}: expected a table, got {_show(spec)}")
            continue
        kind = spec.get("type", "local")
        known = ENDPOINT_KINDS.get(kind) if isinstance(kind, str) else None
        if known is None:
            problems.append(
                f"{source}: {key_path((*loc, 'type'))}: expected one of "
                f"{', '.join(repr(k) for k in ENDPOINT_KINDS)}, got {_show(kind)}"
            )
            continue
        try:
            endpoint = known.model.model_validate(spec, context=context)
        except ValidationError as exc:
            problems.extend(_problems(source, exc, loc))
            continue
        if isinstance(endpoint, SFTPEndpoint):
            endpoint, secret_problems, unset = _with_secrets(
                endpoint, env, f"{source}: {key_path(loc)}", context["base"]
            )
            problems.extend(secret_problems)
            missing.extend(unset)
        endpoints[name] = endpoint  # type: ignore[assignment]

    config: AppConfig | None = None
    try:
        config = AppConfig.model_validate(
            {**raw, "endpoints": {}, "source_file": file}, context=context
        )
    except ValidationError as exc:
        problems.extend(_problems(source, exc))

    problems.extend(_cross_check(source, raw.get("routes"), raw_endpoints))
    if config is not None:
        # Every command reads the journal: its password is needed even by read-only ones.
        found = Secret(f"{source}: journal", env, context["base"]).read(
            "password", config.journal.password_env, config.journal.password_file
        )
        problems.extend(found.problems + found.missing)
        if found.value is not None:
            journal = config.journal.model_copy(update={"password": found.value})
            config = config.model_copy(update={"journal": journal})
    if config is not None and config.pgp is not None:
        pgp = config.pgp
        found = Secret(f"{source}: pgp", env, context["base"]).read(
            "passphrase", pgp.passphrase_env, pgp.passphrase_file
        )
        problems.extend(found.problems)
        missing.extend(found.missing)
        if found.value is not None:
            config = config.model_copy(
                update={"pgp": pgp.model_copy(update={"passphrase": found.value})}
            )
    if config is not None:
        alerts, alert_problems, unset = _alert_secrets(config.alerts, env, source, context["base"])
        problems.extend(alert_problems)
        missing.extend(unset)
        config = config.model_copy(
            update={"endpoints": endpoints, "alerts": alerts, "missing_secrets": missing}
        )
        if not config.formats.is_dir() and any(r.mapping != "copy" for r in config.routes):
            problems.append(f"{source}: formats: no such folder: {config.formats}")
    if secrets == "require":
        problems.extend(missing)
    if problems or config is None:
        raise ConfigError(problems)
    return config


@dataclass
class Secret:
    """One secret of one place in the configuration: by an environment variable (looked
    up in the secrets file first) or a file; never both."""

    where: str
    env: Mapping[str, str]
    base: Path
    value: SecretStr | None = None
    problems: list[str] = field(default_factory=list)
    #: The secret is named but not to be found (a command that needs none goes on).
    missing: list[str] = field(default_factory=list)

    def read(self, name: str, variable: str | None, written: str | None) -> Secret:
        self.value, self.problems, self.missing = None, [], []
        if variable is not None and written is not None:
            self.problems.append(f"{self.where}: give {name}_env or {name}_file, not both")
        elif variable is not None:
            if variable in self.env:
                self.value = SecretStr(self.env[variable])
            else:
                self.missing.append(
                    f"{self.where}.{name}_env: environment variable {variable} is not set"
                )
        elif written is not None:
            path = written
            if not written.startswith(CREDENTIALS) and not Path(written).is_absolute():
                path = str(self.base / written)
            try:
                self.value = SecretStr(secret_file(path, self.env))
            except SecretExposed as exc:
                self.problems += [f"{self.where}.{name}_file: {p}" for p in exc.problems]
            except ConfigError as exc:  # (not to be seen from here: a service's own file)
                self.missing += [f"{self.where}.{name}_file: {p}" for p in exc.problems]
        return self


def _with_secrets_file(
    written: Any,
    env: Mapping[str, str],
    base: Path,
    source: str,
    problems: list[str],
    missing: list[str],
) -> Mapping[str, str]:
    """The environment the ``*_env`` names are looked up in: the secrets file's values
    first (they win: the file is what everyone reads), then the process's. A file others
    may read is a problem; one this shell cannot read (the service's) a missing secret."""
    if written is None:
        return env
    if not isinstance(written, str):
        return env  # (the model says what is wrong with it)
    path = Path(written) if Path(written).is_absolute() else base / written
    try:
        values = env_file(path)
    except (SecretExposed, SecretsMalformed) as exc:
        problems.extend(f"{source}: secrets: {p}" for p in exc.problems)
        return env
    except ConfigError as exc:
        missing.extend(f"{source}: secrets: {p}" for p in exc.problems)
        return env
    return ChainMap(values, dict(env))


def _alert_secrets(
    alerts: AlertsConfig, env: Mapping[str, str], source: str, base: Path
) -> tuple[AlertsConfig, list[str], list[str]]:
    """The sinks with their secrets; problems; and secrets whose variables are unset."""
    problems: list[str] = []
    missing: list[str] = []
    sinks: list[Any] = []
    for i, sink in enumerate(alerts.sinks):
        where = f"{source}: alerts.sinks[{i}]"
        if isinstance(sink, EmailSink) and (sink.password_env or sink.password_file):
            found = Secret(where, env, base).read("password", sink.password_env, sink.password_file)
            problems += found.problems
            missing += found.missing
            if found.value is not None:
                sink = sink.model_copy(update={"password": found.value})
        if isinstance(sink, WebhookSink):
            given = [k for k in ("url", "url_env", "url_file") if getattr(sink, k) is not None]
            if len(given) != 1:
                problems.append(f"{where}: give exactly one of url, url_env and url_file")
            elif sink.url is None:
                found = Secret(where, env, base).read("url", sink.url_env, sink.url_file)
                problems += found.problems
                missing += found.missing
                if found.value is not None:
                    sink = sink.model_copy(update={"secret_url": found.value})
            if sink.url is not None and not sink.url.startswith(("http://", "https://")):
                problems.append(f"{where}.url: expected an http:// or https:// URL")
        sinks.append(sink)
    return alerts.model_copy(update={"sinks": sinks}), problems, missing


def _with_secrets(
    endpoint: SFTPEndpoint, env: Mapping[str, str], where: str, base: Path
) -> tuple[SFTPEndpoint, list[str], list[str]]:
    """The endpoint with its secrets; problems; and secrets whose variables are unset."""
    problems: list[str] = []
    missing: list[str] = []
    update: dict[str, Any] = {}
    for name, target in (("password", "password"), ("key_passphrase", "key_passphrase")):
        variable, written = getattr(endpoint, f"{name}_env"), getattr(endpoint, f"{name}_file")
        if variable is None and written is None:
            continue
        found = Secret(where, env, base).read(name, variable, written)
        problems += found.problems
        missing += found.missing
        if found.value is not None:
            update[target] = found.value
    if (
        endpoint.key_file is None
        and endpoint.password_env is None
        and endpoint.password_file is None
    ):
        problems.append(
            f"{where}: set key_file, password_env or password_file to say how to log in"
        )
    if endpoint.key_file is not None and not endpoint.key_file.is_file():
        problems.append(f"{where}.key_file: no such file: {endpoint.key_file}")
    return endpoint.model_copy(update=update), problems, missing


def _cross_check(source: str, routes: Any, raw_endpoints: Mapping[str, Any]) -> list[str]:
    """References between sections, checked on the raw data so that they are reported
    together with any type errors."""
    if not isinstance(routes, list):
        return []
    problems: list[str] = []
    known = ", ".join(sorted(raw_endpoints)) or "none"
    seen: set[str] = set()
    after_by_source: dict[str, tuple[int, Any]] = {}
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        if route.get("mapping") == "copy":
            for key in ("source_layout", "target_layout"):
                if key in route:
                    problems.append(
                        f'{source}: routes[{i}].{key}: a mapping = "copy" route has no layouts'
                    )
        elif isinstance(route.get("mapping"), str):
            for key in ("source_layout", "target_layout"):
                if key not in route:
                    problems.append(
                        f"{source}: routes[{i}].{key}: required key is missing "
                        '(or set mapping = "copy")'
                    )
        name = route.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(f"{source}: routes[{i}].name: route {name!r} is defined twice")
            seen.add(name)
        source_spec = route.get("source")
        endpoint_name = source_spec.get("endpoint") if isinstance(source_spec, dict) else None
        if isinstance(endpoint_name, str) and isinstance(source_spec, dict):
            # Routes taking the same files (same folder, same patterns) fan out.
            taken = f"{endpoint_name}|{source_spec.get('pattern', '*')}"
            first = after_by_source.setdefault(taken, (i, route.get("after")))
            if first[1] != route.get("after"):
                problems.append(
                    f"{source}: routes[{i}].after: routes taking the same files must treat "
                    f"them the same way once delivered (see routes[{first[0]}].after)"
                )
        for side in ("source", "target"):
            spec = route.get(side)
            ref = spec.get("endpoint") if isinstance(spec, dict) else None
            if isinstance(ref, str) and ref not in raw_endpoints:
                problems.append(
                    f'{source}: routes[{i}].{side}.endpoint: no endpoint named "{ref}" '
                    f"(known: {known})"
                )
    return problems
