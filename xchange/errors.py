"""The one error tree of xchange.

Every failure xchange reports is one of these classes. Each says whether trying
again later can help (``retryable``); the retry policy and the quarantine act on
that flag alone, never on the concrete class::

    XchangeError
      ├─ ConfigError                    a configuration, layout or mapping file is wrong
      ├─ RemoteError                    an endpoint (local folder or SFTP server) failed
      │    ├─ ConnectionLost            (retryable) network cut, server closed the session
      │    ├─ RemoteTimeout             (retryable) no answer within the configured timeout
      │    ├─ RemoteUnavailable         (retryable) refused, server down, disk full
      │    ├─ HostKeyUnknown            the server's key is not in known_hosts
      │    ├─ HostKeyMismatch           the server's key changed: possible interception
      │    ├─ AuthenticationFailed      key or password refused
      │    ├─ RemoteNotFound            the path does not exist
      │    ├─ RemotePermissionDenied    (retryable) the path is not writable/readable
      │    ├─ TargetExists              the final name is taken and the policy says fail
      │    ├─ NameRefused               the target cannot hold that name at all
      │    ├─ VerifyFailed              (retryable) the file on the target is not the one sent
      │    ├─ CannotVerify              the target cannot verify the file as configured
      │    └─ SourceChanged             the source is not the file taken any more
      ├─ FormatError                    the file itself is wrong: retrying cannot help
      │    ├─ DecodeError               bytes are not text in the declared encoding / syntax
      │    ├─ ValidationFailed          the content breaks the layout's rules (has a report)
      │    ├─ MappingError              the mapping cannot produce the target layout
      │    ├─ ManifestDiffers           the file is not what its partner's manifest says
      │    ├─ PgpRefused                PGP: not decryptable by us, tampered, or not signed
      │    │                            by a pinned key
      │    └─ ArchiveRefused            an archive is corrupt, hostile or over its limits
      ├─ PgpUnavailable                 (retryable) gpg, the keyring or our key cannot be used
      ├─ UnsafeName                     a name built from data would leave its folder
      ├─ JournalError                   the journal cannot be read or written
      │    ├─ JournalUnavailable        (retryable) the journal's server cannot be reached
      │    ├─ LeaseLost                 another daemon took the file over: left to it
      │    └─ IllegalTransition         a state change the journal's table forbids (a defect)
      ├─ UsageError                     an operator asked for something that cannot be done
      └─ LockHeld                       another run of the same configuration is active
"""

from __future__ import annotations

from typing import Any, ClassVar


class XchangeError(Exception):
    """Root of every error xchange raises on purpose."""

    retryable: ClassVar[bool] = False
    #: Short, stable name of the cause class, used in the journal, alerts and reports.
    kind: ClassVar[str] = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

    @property
    def reason(self) -> str:
        """The message as one line of bounded length, for summaries, the journal, alerts
        and logs (the whole text goes to the quarantine report)."""
        return one_line(self.message or self.kind)


#: The longest reason shown on one line.
REASON_LIMIT = 300


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """``text``'s first line, whitespace collapsed, cut to ``limit`` characters with "..."."""
    first = " ".join((text.splitlines() or [""])[0].split())
    return first if len(first) <= limit else first[: limit - 3].rstrip() + "..."


class ConfigError(XchangeError):
    """A configuration, layout or mapping file is invalid.

    ``problems`` holds one line per problem, each naming the file and the key path.
    """

    kind = "config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RemoteError(XchangeError):
    kind = "remote"


class ConnectionLost(RemoteError):
    retryable = True
    kind = "connection"


class RemoteTimeout(RemoteError):
    retryable = True
    kind = "timeout"


class RemoteUnavailable(RemoteError):
    retryable = True
    kind = "unavailable"


class HostKeyUnknown(RemoteError):
    kind = "host-key-unknown"


class HostKeyMismatch(RemoteError):
    kind = "host-key-changed"


class AuthenticationFailed(RemoteError):
    kind = "auth"


class RemoteNotFound(RemoteError):
    kind = "not-found"


class RemotePermissionDenied(RemoteError):
    # Permissions on a partner's inbox are usually fixed by a person within hours:
    # retry with backoff, alert, then quarantine when the attempts run out.
    retryable = True
    kind = "permission"


class TargetExists(RemoteError):
    kind = "target-exists"


class NameRefused(RemoteError):
    """The target refuses the name itself (too long for its file system, say): trying
    again cannot help, the file is quarantined at once."""

    kind = "name-refused"


class VerifyFailed(RemoteError):
    """The temporary file on the target is not what was sent (its digest, as the server
    computes it or as read back, differs): it is removed, nothing is renamed, and the
    delivery is tried again."""

    retryable = True
    kind = "verify"


class CannotVerify(RemoteError):
    """The target's ``verify`` cannot be honoured for this file (it would have to be read
    back and is larger than ``readback_max``): nothing is sent; a person raises the limit
    or changes the verification."""

    kind = "unverifiable"


class SourceChanged(RemoteError):
    """The source is no longer the file that was taken (rewritten, replaced, grown): it is
    left where it is, to be taken as a new file."""

    kind = "source-changed"


class FormatError(XchangeError):
    kind = "format"


class DecodeError(FormatError):
    kind = "decode"


class ValidationFailed(FormatError):
    """The content breaks the layout's rules; ``report`` lists every problem found."""

    kind = "validation"

    def __init__(self, message: str, *, report: Any) -> None:
        super().__init__(message, details=report)
        self.report = report


class MappingError(FormatError):
    kind = "mapping"


class TotalsDiffer(FormatError):
    """A source's control totals and its outputs' differ: nothing is delivered."""

    kind = "totals"


class RepeatedDocuments(FormatError):
    """Documents whose business key the route delivered before, on a route that
    quarantines repeats: nothing of the file is delivered."""

    kind = "repeat"

    def __init__(self, reason: str, keys: list[str] | None = None) -> None:
        super().__init__(reason)
        self.keys = list(keys or [])


class ManifestDiffers(FormatError):
    """A data file's size, sha256 or record count is not what its partner's manifest
    says: nothing is delivered."""

    kind = "manifest"


class PgpRefused(FormatError):
    """A PGP file refused: not encrypted to our key, its integrity check failed, or its
    signature is missing, bad, or not by a key the route pins (the key named)."""

    kind = "pgp"


class PgpUnavailable(XchangeError):
    """gpg, the keyring folder or our key cannot be used now (gpg missing or too slow, a
    key not in the keyring, our passphrase refused): not the file's fault; it waits."""

    retryable = True
    kind = "pgp-unavailable"


class ArchiveRefused(FormatError):
    """An archive taken in is corrupt or truncated, encrypted, over its limits, or holds
    an entry that would leave its folder (nothing of it is delivered)."""

    kind = "archive"


class UnsafeName(XchangeError):
    kind = "unsafe-name"


class JournalError(XchangeError):
    kind = "journal"


class JournalUnavailable(JournalError):
    """The journal's database server cannot be reached (down, restarting, a network cut):
    nothing is sent whose claim is not confirmed; the files wait and are tried again."""

    retryable = True
    kind = "journal-unavailable"


class LeaseLost(JournalError):
    """A daemon's lease on a file ran out while its journal could not be reached, and
    another daemon of the group took the file over: this one stops before renaming
    anything and leaves the file (and its record) to the other: not tried again here."""

    kind = "lease-lost"


class IllegalTransition(JournalError):
    """A write the journal's transition table forbids (``journal/states.py``): a defect
    in xchange, refused before anything is written."""

    kind = "illegal-transition"


class UsageError(XchangeError):
    """An operator asked for something that cannot be done as asked (re-send a delivered
    file without ``--force``, retry a file of which no copy is kept): nothing is changed."""

    kind = "usage"


class LockHeld(XchangeError):
    kind = "lock"


def _kinds(root: type[XchangeError]) -> frozenset[str]:
    kinds = {root.kind} if root.retryable else set()
    for sub in root.__subclasses__():
        kinds |= _kinds(sub)
    return frozenset(kinds)


#: The causes that are retryable (``kind`` of every retryable error class): a file given
#: up on one of them may go through once its cause has gone away.
RETRYABLE_KINDS = _kinds(XchangeError)

#: Causes that no retry fixes but a person does (a host key to check and pin, a login to
#: mend): the files are kept and wait for that person; the route is not ready meanwhile.
NEEDS_A_PERSON = frozenset(e.kind for e in (HostKeyUnknown, HostKeyMismatch, AuthenticationFailed))


__all__ = [
    "NEEDS_A_PERSON",
    "REASON_LIMIT",
    "RETRYABLE_KINDS",
    "ArchiveRefused",
    "AuthenticationFailed",
    "CannotVerify",
    "ConfigError",
    "ConnectionLost",
    "DecodeError",
    "FormatError",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "IllegalTransition",
    "JournalError",
    "JournalUnavailable",
    "LeaseLost",
    "LockHeld",
    "ManifestDiffers",
    "MappingError",
    "NameRefused",
    "PgpRefused",
    "PgpUnavailable",
    "RemoteError",
    "RemoteNotFound",
    "RemotePermissionDenied",
    "RemoteTimeout",
    "RemoteUnavailable",
    "SourceChanged",
    "TargetExists",
    "UnsafeName",
    "UsageError",
    "ValidationFailed",
    "VerifyFailed",
    "XchangeError",
    "one_line",
]
