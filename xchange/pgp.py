"""PGP on the way in (decrypt, verify the signature) and out (encrypt, sign), by GnuPG.

GnuPG 2.2 (Debian's ``gpg``) is run as a child process, with no wrapper library in
between: what xchange must check is in gpg's *status* lines, which are read here one by
one, and everything else a wrapper would do (a passphrase on its own pipe, files in and
out on disk so a big file never sits in memory, a timeout) is a few lines of
``subprocess``. Nothing new is installed unless a route asks for PGP.

- Each daemon builds its own throwaway GnuPG home (``mkdtemp``, owner-only; never the
  user's ``~/.gnupg``) from the keyring folder of the configuration, which must be
  owner-only, as each file in it. Its agent is stopped (``gpgconf --kill``) and the
  home removed when the daemon closes it, or at exit.
- Keys are pinned by their primary key's full fingerprint: a signature counts only with
  ``VALIDSIG`` naming a pinned primary key; key ids and user ids are never trusted.
  GnuPG's own web of trust is not consulted (``--trust-model always``): the pins are
  the trust.
- A file is taken only if it was encrypted (``DECRYPTION_OKAY``), its integrity checked
  (``GOODMDC``: data without a modification detection code is refused), and every
  signature is good (no ``BADSIG``, ``ERRSIG``, expired or revoked key); unsigned only
  where the route says ``signature = "optional"``.
- The passphrase goes to gpg through a pipe of its own (``--passphrase-fd`` with
  ``--pinentry-mode loopback``): never in argv, never in gpg's environment (which gets
  PATH, a locale and its home, nothing of the daemon's), never in a message.
- Outputs encrypted for delivery are kept (per file, by content) until the file is
  done, so a delivery taken up again after a crash sends the very bytes it sent before
  (encryption is random: made again, they would differ).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import structlog

from xchange.config import AppConfig, PgpConfig, RouteConfig, SourcePgp, TargetPgp
from xchange.errors import PgpRefused, PgpUnavailable
from xchange.names import check_plain_name
from xchange.private import private_folder
from xchange.sink import Output

log = structlog.get_logger(__name__)

#: The longest passphrase passed on (a pipe's buffer holds it whole).
PASSPHRASE_MAX = 4096

#: GnuPG homes this process made and has not removed yet (their agents stopped at exit).
_HOMES: dict[Path, str] = {}
_HOMES_LOCK = threading.Lock()


def keyring_problems(folder: Path) -> list[str]:
    """What makes a keyring folder unfit: missing, not ours, or readable (or writable) by
    others, as any file in it; no key file at all."""
    try:
        info = folder.stat()
    except FileNotFoundError:
        return [f"pgp.keyring: {folder}: no such folder"]
    except OSError as exc:
        return [f"pgp.keyring: {folder}: cannot read: {exc.strerror}"]
    if not stat.S_ISDIR(info.st_mode):
        return [f"pgp.keyring: {folder}: not a folder"]
    problems = []
    if info.st_uid != os.geteuid():
        problems.append(f"pgp.keyring: {folder}: owned by another user (uid {info.st_uid})")
    if info.st_mode & 0o077:
        problems.append(
            f"pgp.keyring: {folder}: others may enter it (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): chmod 700 it"
        )
    files = key_files(folder)
    for path in files:
        mode = path.lstat().st_mode
        if not stat.S_ISREG(mode):
            problems.append(f"pgp.keyring: {path}: not a plain file")
        elif mode & 0o077:
            problems.append(
                f"pgp.keyring: {path}: others may read it (mode {stat.S_IMODE(mode):04o}): "
                "chmod 600 it"
            )
    if not files:
        problems.append(f"pgp.keyring: {folder}: no key files in it")
    return problems


def key_files(folder: Path) -> list[Path]:
    """The key files of a keyring folder (every entry but hidden ones), in name order."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


@dataclass
class Status:
    """gpg's status lines (``[GNUPG:] KEYWORD args...``), each split into words."""

    lines: list[list[str]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Status:
        found = []
        for line in text.splitlines():
            if line.startswith("[GNUPG:] "):
                words = line[len("[GNUPG:] ") :].split()
                if words:
                    found.append(words)
        return cls(found)

    def has(self, keyword: str) -> bool:
        return any(words[0] == keyword for words in self.lines)

    def all(self, keyword: str) -> list[list[str]]:
        return [words for words in self.lines if words[0] == keyword]

    def signatures(self) -> list[list[list[str]]]:
        """The status lines of each signature found (each from its ``NEWSIG``)."""
        sigs: list[list[list[str]]] = []
        for words in self.lines:
            if words[0] == "NEWSIG":
                sigs.append([])
            elif sigs and words[0] in SIGNATURE_WORDS:
                sigs[-1].append(words)
            elif words[0] in SIGNATURE_WORDS:
                sigs.append([words])  # (a gpg that writes no NEWSIG)
        return sigs


SIGNATURE_WORDS = frozenset(
    {"GOODSIG", "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "VALIDSIG", "NO_PUBKEY"}
)


#: libgpg-error codes (an ``ERROR`` or ``FAILURE`` status line's code, low 16 bits) that
#: say our key's passphrase was wrong or missing: BAD_PASSPHRASE, CANCELED, NO_PASSPHRASE,
#: NO_PIN.
PASSPHRASE_CODES = frozenset({11, 99, 177, 178})


def passphrase_refused(status: Status) -> bool:
    """Whether gpg says our key's passphrase was wrong or missing."""
    if status.has("BAD_PASSPHRASE") or status.has("MISSING_PASSPHRASE"):
        return True
    for words in status.all("ERROR") + status.all("FAILURE"):
        if len(words) > 2 and words[2].isdigit() and int(words[2]) & 0xFFFF in PASSPHRASE_CODES:
            return True
    return False


@dataclass(frozen=True)
class Ran:
    """One gpg run: its exit code, status lines and the last words it wrote for a person."""

    code: int
    status: Status
    said: str


def signer(status: Status, spec: SourcePgp, name: str) -> str | None:
    """The pinned primary key that signed a decrypted file (None: unsigned, allowed).

    Raises:
        PgpRefused: a signature is bad, by an unknown, expired or revoked key, or by a key
            not pinned; or there is none and the route requires one.
    """
    pinned = spec.signed_by
    found = None
    for lines in status.signatures():
        words = {w[0]: w for w in lines}
        if "BADSIG" in words:
            raise PgpRefused(
                f"{name}: bad signature by key id {words['BADSIG'][1]}: the content does "
                "not match its signature (altered after signing, or signed by another key)"
            )
        if "ERRSIG" in words:
            err = words["ERRSIG"]
            seen = err[7] if len(err) > 7 and err[7] != "-" else f"key id {err[1]}"
            if "NO_PUBKEY" in words or (len(err) > 6 and err[6] == "9"):
                raise PgpRefused(
                    f"{name}: signed by {seen}, which is not in the keyring: not one of the "
                    f"keys pinned in signed_by ({', '.join(pinned) or 'none'})"
                )
            raise PgpRefused(f"{name}: the signature by {seen} cannot be checked")
        for word, why in (
            ("EXPKEYSIG", "whose key has expired"),
            ("REVKEYSIG", "whose key was revoked"),
            ("EXPSIG", "expired"),
        ):
            if word in words:
                valid = words.get("VALIDSIG")
                seen = valid[-1] if valid else f"key id {words[word][1]}"
                raise PgpRefused(f"{name}: signature by {seen} {why}: refused")
        if "GOODSIG" not in words or "VALIDSIG" not in words:
            raise PgpRefused(f"{name}: a signature gpg did not find good: refused")
        valid = words["VALIDSIG"]
        primary = valid[10] if len(valid) > 10 else valid[1]
        if primary not in pinned:
            raise PgpRefused(
                f"{name}: signed by {primary}, which is not pinned for this route "
                f"(signed_by: {', '.join(pinned) or 'none'})"
            )
        found = primary
    if found is None and spec.signature == "required":
        raise PgpRefused(
            f"{name}: not signed; the route requires a signature by "
            f'{" or ".join(pinned)} (signature = "required")'
        )
    return found


def decrypted(
    ran: Ran, spec: SourcePgp, name: str, ours: str, most: int | None = None
) -> str | None:
    """Judge a ``gpg --decrypt`` run: the pinned key that signed it (None: unsigned).
    ``most``: the ``--max-output`` it ran with.

    Raises:
        PgpUnavailable: our key cannot be used (its passphrase refused or missing).
        PgpRefused: the file is not encrypted to our key, fails its integrity check,
            decrypts to more than ``most`` bytes, holds more than one plaintext, or is not
            signed as the route requires.
    """
    status = ran.status
    if status.has("NEED_PASSPHRASE_SYM") and not status.has("DECRYPTION_KEY"):
        # gpg tried our key's passphrase on it: refused as the file's fault (not said as
        # our passphrase being wrong), and never taken (even where that passphrase opens it)
        raise PgpRefused(
            f"{name}: encrypted with a passphrase (symmetric), not to our key {ours}: refused"
        )
    if passphrase_refused(status):
        raise PgpUnavailable(
            f"{name}: the passphrase of our key {ours} was refused (pgp.passphrase_env or "
            "pgp.passphrase_file): the file waits"
        )
    if status.has("NODATA") or not (status.has("BEGIN_DECRYPTION") or status.has("ENC_TO")):
        raise PgpRefused(f"{name}: not PGP-encrypted data (plain, or only signed): refused")
    unprotected = [
        w
        for w in status.all("DECRYPTION_INFO")
        if len(w) > 1 and w[1] == "0" and w[3:4] in ([], ["0"])
    ]
    if unprotected or any(w[1].startswith("nomdc") for w in status.all("ERROR") if len(w) > 1):
        raise PgpRefused(
            f"{name}: not integrity-protected (no modification detection code): refused"
        )
    if any(w[1] == "proc_pkt.plaintext" for w in status.all("ERROR") if len(w) > 1):
        # (two literal data packets: which would be the file? gpg says "multiple plaintexts")
        raise PgpRefused(
            f"{name}: its content is not one plaintext (several literal data packets, or "
            f"a damaged one: {ran.said or 'gpg refused it'}): refused"
        )
    if status.has("DECRYPTION_FAILED") or not status.has("DECRYPTION_OKAY"):
        keys = [w[1] for w in status.all("NO_SECKEY")]
        if keys and not status.has("DECRYPTION_KEY"):
            raise PgpRefused(
                f"{name}: encrypted to key id(s) {', '.join(keys)}, not to our key {ours}"
            )
        errors = " ".join(w[1] + "=" + w[2] for w in status.all("ERROR") if len(w) > 2)
        raise PgpRefused(
            f"{name}: cannot be decrypted: corrupt or tampered (integrity check failed)"
            + (f" [{errors}]" if errors else "")
        )
    if not status.has("GOODMDC") or status.has("BADMDC"):
        raise PgpRefused(
            f"{name}: not integrity-protected (no modification detection code): refused"
        )
    if ran.code != 0 and most is not None and ran.said.endswith(TOO_LARGE):
        raise PgpRefused(
            f"{name}: decrypts to more than {most} bytes (pgp.max_output): a compression "
            "bomb? refused"
        )
    found = signer(status, spec, name)
    if ran.code != 0:
        raise PgpRefused(f"{name}: gpg refused it: {ran.said or f'exit code {ran.code}'}")
    return found


#: How gpg (LC_ALL=C) ends its last words when the plaintext passed ``--max-output``.
TOO_LARGE = "Provided object is too large"


def plain_name(name: str) -> str:
    """A received file's name as its plaintext is converted: ``statement.csv.pgp`` ->
    ``statement.csv`` (its ``.pgp``, ``.gpg`` or ``.asc`` dropped)."""
    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem and ext.lower() in ("pgp", "gpg", "asc") else name


def sealed_name(template: str, name: str) -> str:
    """The delivered name of an encrypted output: ``{name}.pgp`` with its name."""
    return template.replace("{name}", name)


def delivered_names(route: RouteConfig, names: list[str]) -> list[str]:
    """The names outputs are delivered under: ``{name}.pgp`` (the target's ``pgp.name``)
    where the route's outputs go encrypted, else as made."""
    spec = route.target.pgp
    return names if spec is None else [sealed_name(spec.name, n) for n in names]


class Gpg:
    """A private GnuPG home made from the keyring folder, and the runs of gpg in it.
    Built on first use (a route that asks for PGP); ``close`` stops its agent."""

    def __init__(self, config: PgpConfig, scratch: Path) -> None:
        self.config = config
        self.scratch = scratch
        self.home: Path | None = None
        #: Primary fingerprints of the keys imported, and of those with their secret.
        self.public: set[str] = set()
        self.secret: set[str] = set()
        self._lock = threading.Lock()
        sweep()

    # ------------------------------------------------------------------ the home

    def ready(self) -> Path:
        """The GnuPG home, made (and the keyring imported) on first use.

        Raises:
            PgpUnavailable: gpg is missing, or the keyring folder is unfit or unreadable.
        """
        with self._lock:
            if self.home is None:
                self.home = self._build()
            return self.home

    def _build(self) -> Path:
        if shutil.which(self.config.gpg) is None:
            raise PgpUnavailable(
                f"pgp.gpg: {self.config.gpg!r} is not installed (apt-get install gnupg)"
            )
        problems = keyring_problems(self.config.keyring)
        if problems:
            raise PgpUnavailable("; ".join(problems))
        # Short, in the system's temporary folder: the agent's socket lives in it.
        home = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-"))
        with _HOMES_LOCK:
            _HOMES[home] = self.config.gpg
        try:
            self.home = home
            ran = self.run(["--import", "--", *map(str, key_files(self.config.keyring))])
            if ran.code not in (0, 2) or not ran.status.has("IMPORT_RES"):
                raise PgpUnavailable(f"pgp.keyring: the keys could not be imported: {ran.said}")
            self.public = self._listed("--list-keys", "pub")
            self.secret = self._listed("--list-secret-keys", "sec")
        except BaseException:
            self.home = None
            stop_agent(home, self.config.gpg)
            raise
        log.info("pgp.keyring", keys=len(self.public), secret=len(self.secret))
        return home

    def _listed(self, command: str, record: str) -> set[str]:
        ran = self.run(["--with-colons", "--fingerprint", command])
        found: set[str] = set()
        wanted = False
        for line in ran.said_all.splitlines() if isinstance(ran, Listed) else []:
            parts = line.split(":")
            if parts[0] in ("pub", "sec", "sub", "ssb"):
                wanted = parts[0] == record
            elif parts[0] == "fpr" and wanted and len(parts) > 9:
                found.add(parts[9])
                wanted = False
        return found

    def close(self) -> None:
        """Stop the home's agent and remove the home (made again if used after)."""
        with self._lock:
            home, self.home = self.home, None
        if home is not None:
            stop_agent(home, self.config.gpg)

    # ------------------------------------------------------------------ runs

    def run(
        self, args: Sequence[str], *, passphrase: bool = False, stdin: BinaryIO | None = None
    ) -> Ran:
        """Run gpg in the home with ``args``, reading ``stdin`` (an open file) if given;
        the passphrase on a pipe of its own.

        Raises:
            PgpUnavailable: gpg cannot be started or did not finish within the timeout.
        """
        assert self.home is not None
        command = [
            self.config.gpg,
            "--homedir",
            str(self.home),
            "--batch",
            "--no-tty",
            "--no-options",
            "--no-greeting",
            "--status-fd",
            "1",
            "--no-auto-key-retrieve",
            "--no-auto-key-locate",
            "--trust-model",
            "always",
            "--pinentry-mode",
            "loopback",
        ]
        listing = "--with-colons" in args
        if listing:
            # (the listing on stdout: status lines to stderr's pipe instead)
            command[command.index("--status-fd") + 1] = "2"
        fds: list[int] = []
        secret = self.config.passphrase
        if passphrase and secret is not None:
            value = secret.get_secret_value().encode()
            if len(value) > PASSPHRASE_MAX or b"\n" in value:
                raise PgpUnavailable(
                    "pgp: our key's passphrase is too long, or has a line break: it cannot "
                    "be passed to gpg"
                )
            read, write = os.pipe()
            try:
                os.write(write, value + b"\n")
            finally:
                os.close(write)
            fds.append(read)
            command += ["--passphrase-fd", str(read)]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.home),
            "GNUPGHOME": str(self.home),
        }
        try:
            proc = subprocess.Popen(  # (no shell: gpg and our own arguments)
                [*command, *args],
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                pass_fds=tuple(fds),
            )
        except OSError as exc:
            raise PgpUnavailable(f"pgp.gpg: cannot run {self.config.gpg}: {exc.strerror}") from None
        finally:
            for fd in fds:
                os.close(fd)
        try:
            out, err = proc.communicate(timeout=self.config.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise PgpUnavailable(
                f"gpg did not finish within {self.config.timeout:.0f} s (pgp.timeout): stopped"
            ) from None
        text_out = out.decode("utf-8", "replace")
        text_err = err.decode("utf-8", "replace")
        people = [
            line.removeprefix("gpg: ")
            for line in text_err.splitlines()
            if line and not line.startswith("[GNUPG:]")
        ]
        said = people[-1] if people else ""
        if listing:
            return Listed(proc.returncode, Status.parse(text_err), said, text_out)
        return Ran(proc.returncode, Status.parse(text_out), said)

    # ------------------------------------------------------------------ in, out

    def decrypt(self, source: BinaryIO, plain: Path, spec: SourcePgp, name: str) -> str | None:
        """Decrypt ``source`` (an open file, read from its start: the very bytes the
        journal has) into ``plain`` and check it as the route asks; returns the pinned key
        that signed it (None: unsigned, allowed). ``plain`` is removed when the file is
        refused.

        Raises:
            PgpRefused: the file is refused (the reason names the key seen).
            PgpUnavailable: gpg or our key cannot be used now.
        """
        self.ready()
        ours = self.config.key or "(none set)"
        if self.config.key is not None and self.config.key not in self.secret:
            raise PgpUnavailable(
                f"pgp.key: {ours} has no secret key in the keyring folder: nothing can be decrypted"
            )
        try:
            source.seek(0)
            most = int(self.config.max_output)
            ran = self.run(
                ["--max-output", str(most), "--decrypt", "--output", str(plain)],
                passphrase=True,
                stdin=source,
            )
            return decrypted(ran, spec, name, ours, most)
        except BaseException:
            plain.unlink(missing_ok=True)
            raise

    def encrypt(self, source: Path, sealed: Path, spec: TargetPgp, name: str) -> None:
        """Encrypt ``source`` into ``sealed`` to the pinned keys, signed with ours when
        the route asks; the name inside is ``name``.

        Raises:
            PgpUnavailable: a key cannot be used (not in the keyring, expired, revoked,
                not for encryption), our passphrase was refused, or gpg failed.
        """
        self.ready()
        missing = [f for f in spec.encrypt_to if f not in self.public]
        if missing:
            raise PgpUnavailable(
                f"target.pgp.encrypt_to: {', '.join(missing)} not in the keyring folder"
            )
        args = ["--encrypt", "--set-filename", name, "--output", str(sealed)]
        for fingerprint in spec.encrypt_to:
            args += ["--recipient", fingerprint]
        if spec.sign:
            assert self.config.key is not None
            args += ["--sign", "--local-user", self.config.key]
        if spec.armor:
            args.append("--armor")
        try:
            ran = self.run([*args, "--", str(source)], passphrase=spec.sign)
            status = ran.status
            if passphrase_refused(status):
                raise PgpUnavailable(
                    f"the passphrase of our key {self.config.key} was refused "
                    "(pgp.passphrase_env or pgp.passphrase_file)"
                )
            for words in status.all("INV_RECP") + status.all("INV_SGNR"):
                who = words[2] if len(words) > 2 else "?"
                raise PgpUnavailable(f"key {who} cannot be used: {INVALID.get(words[1], words[1])}")
            if ran.code != 0 or not status.has("END_ENCRYPTION"):
                raise PgpUnavailable(f"gpg could not encrypt {name}: {ran.said}")
            if spec.sign and not status.has("SIG_CREATED"):
                raise PgpUnavailable(f"gpg did not sign {name}: {ran.said}")
        except BaseException:
            sealed.unlink(missing_ok=True)
            raise

    def problems(self, config: AppConfig) -> list[str]:
        """What would stop the routes' PGP (for ``xchange check``): gpg, the keyring,
        each pinned key in it, our secret key and its passphrase."""
        try:
            self.ready()
        except PgpUnavailable as exc:
            return exc.message.split("; ")
        found = []
        key = self.config.key
        if key is not None and key not in self.secret:
            found.append(f"pgp.key: {key}: no secret key with this fingerprint in the keyring")
        for i, route in enumerate(config.routes):
            pins: list[tuple[str, str]] = []
            if route.source.pgp is not None:
                pins += [("source.pgp.signed_by", f) for f in route.source.pgp.signed_by]
            if route.target.pgp is not None:
                pins += [("target.pgp.encrypt_to", f) for f in route.target.pgp.encrypt_to]
            found += [
                f"routes[{i}].{where}: {f}: no key with this fingerprint in the keyring "
                f"(a subkey's or another key's fingerprint is not a pin)"
                for where, f in pins
                if f not in self.public
            ]
        unread = self.config.passphrase is None and (
            self.config.passphrase_env is not None or self.config.passphrase_file is not None
        )
        if not found and key is not None and not unread:
            # (a passphrase this shell cannot read is said with the missing secrets)
            error = self.try_key()
            if error:
                found.append(error)
        return found

    def try_key(self) -> str | None:
        """Sign a few bytes with our key: None if it can, else why not."""
        assert self.home is not None and self.config.key is not None
        probe = self.home / "probe"
        probe.write_bytes(b"xchange\n")
        try:
            ran = self.run(
                ["--detach-sign", "--local-user", self.config.key, "--output", "-", str(probe)],
                passphrase=True,
            )
        except PgpUnavailable as exc:
            return exc.message
        finally:
            probe.unlink(missing_ok=True)
        if passphrase_refused(ran.status):
            return (
                f"pgp: the passphrase of our key {self.config.key} was refused (pgp.passphrase_env "
                "or pgp.passphrase_file)"
            )
        if ran.code != 0 or not ran.status.has("SIG_CREATED"):
            return f"pgp.key: {self.config.key} cannot sign: {ran.said}"
        return None


@dataclass(frozen=True)
class Listed(Ran):
    """A listing run: what gpg wrote on its standard output besides."""

    said_all: str = ""


#: INV_RECP / INV_SGNR reason codes, in words.
INVALID = {
    "0": "no specific reason",
    "1": "not found",
    "2": "ambiguous",
    "3": "wrong key usage (no encryption or signing subkey)",
    "4": "revoked",
    "5": "expired",
    "9": "no secret key",
    "10": "not trusted",
    "13": "disabled",
}


def gpgconf_of(gpg: str) -> str | None:
    """The ``gpgconf`` beside ``gpg`` (or on the PATH)."""
    beside = os.path.dirname(shutil.which(gpg) or "")
    return (shutil.which("gpgconf", path=beside) if beside else None) or shutil.which("gpgconf")


def stop_agent(home: Path, gpg: str = "gpg") -> None:
    """Stop the agent of a home this process made, and remove the home."""
    gpgconf = gpgconf_of(gpg)
    if gpgconf is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [gpgconf, "--homedir", str(home), "--kill", "all"],
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GNUPGHOME": str(home)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
                check=False,
            )
    shutil.rmtree(home, ignore_errors=True)
    with _HOMES_LOCK:
        _HOMES.pop(home, None)


#: The GnuPG homes' prefix (then the pid of the process that made it).
HOME_PREFIX = "xchange-gpg-"


def sweep() -> None:
    """Stop the agents of homes left by processes of ours that are gone (killed before
    they could close them: a crash, SIGKILL), and remove those homes."""
    for home in Path(tempfile.gettempdir()).glob(f"{HOME_PREFIX}*-*"):
        pid = home.name[len(HOME_PREFIX) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or home.stat().st_uid != os.geteuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.info("pgp.stale_home", home=str(home), reason="its process is gone")
            stop_agent(home)
        except OSError:
            continue


@atexit.register
def _stop_all() -> None:
    with _HOMES_LOCK:
        homes = list(_HOMES.items())
    for home, gpg in homes:
        stop_agent(home, gpg)


class Pgp:
    """The PGP layers of a daemon's routes: decrypt what comes in before it is read,
    encrypt what goes out after it is converted. Routes without PGP pass through."""

    def __init__(self, config: AppConfig, scratch: Path) -> None:
        self.scratch = scratch
        self.gpg = None if config.pgp is None else Gpg(config.pgp, scratch)
        self._sweep_plaintext()

    def _sweep_plaintext(self) -> None:
        """Remove the plaintext a killed process left in the scratch folder (named after
        its pid: a process alive, this one after a reload included, keeps its own)."""
        folder = self.scratch / "plain"
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            pid = path.name.split("-", 1)[0]
            if not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                path.unlink(missing_ok=True)
            except OSError:
                continue

    @contextlib.contextmanager
    def received(
        self, route: RouteConfig, stream: BinaryIO, name: str, key: str
    ) -> Iterator[tuple[BinaryIO, str]]:
        """The stream to convert and the name it is converted under: ``stream`` and
        ``name`` themselves, or (a route whose files come encrypted) its plaintext,
        decrypted and checked into a private file that lives as long as the context, and
        ``name`` without its ``.pgp``, ``.gpg`` or ``.asc``.

        Raises:
            PgpRefused: the file is refused (quarantined with its received bytes).
            PgpUnavailable: gpg or our key cannot be used now (the file waits).
        """
        spec = route.source.pgp
        if spec is None:
            yield stream, name
            return
        assert self.gpg is not None
        folder = private_folder(self.scratch / "plain")
        plain = folder / f"{os.getpid()}-{key}.plain"
        plain.unlink(missing_ok=True)
        spare = folder / f"{os.getpid()}-{key}.received"
        try:
            with self._with_fd(stream, spare) as source:
                by = self.gpg.decrypt(source, plain, spec, name)
            log.info("pgp.decrypted", signed_by=by)
            with open(plain, "rb") as fh:
                yield fh, plain_name(name)
        finally:
            plain.unlink(missing_ok=True)

    @staticmethod
    @contextlib.contextmanager
    def _with_fd(stream: BinaryIO, spare: Path) -> Iterator[BinaryIO]:
        """``stream`` if it is an open file, else a file with a copy of its bytes."""
        try:
            stream.fileno()
        except (OSError, AttributeError, ValueError):
            stream.seek(0)
            try:
                with open(spare, "w+b") as fh:
                    shutil.copyfileobj(stream, fh, 1 << 20)
                    yield fh
            finally:
                spare.unlink(missing_ok=True)
            return
        yield stream

    def sealed(self, route: RouteConfig, file_id: int, outputs: list[Output]) -> list[Output]:
        """The outputs to deliver: ``outputs`` themselves, or (a route that encrypts)
        each encrypted and signed under its sealed name. Kept per file until ``forget``:
        the same output sealed again gives the bytes it gave before.

        Raises:
            PgpUnavailable: gpg or a key cannot be used now (the file waits).
            UnsafeName: a sealed name would leave its folder.
        """
        spec = route.target.pgp
        if spec is None:
            return outputs
        assert self.gpg is not None
        folder = private_folder(self.scratch / "sealed" / f"{route.name}-{file_id}")
        how = hashlib.sha256(
            repr((spec.encrypt_to, spec.sign, spec.armor, self.gpg.config.key)).encode()
        ).hexdigest()[:12]
        sealed = []
        for out in outputs:
            name = sealed_name(spec.name, out.name)
            check_plain_name(name)
            # Keyed by the name too: gpg records it in the message (--set-filename).
            named = hashlib.sha256(out.name.encode()).hexdigest()[:12]
            kept = folder / f"{out.sha256}-{named}-{how}"
            if not kept.is_file():
                part = folder / f"{out.sha256}-{named}-{how}.part"
                part.unlink(missing_ok=True)
                source = out.path
                if source is None:
                    source = folder / f"{out.sha256}.plain"
                    source.write_bytes(out.data)
                try:
                    self.gpg.encrypt(source, part, spec, out.name)
                finally:
                    if out.path is None:
                        source.unlink(missing_ok=True)
                # Durable before it is kept: a delivery resumed after a power cut sends
                # these very bytes (encrypting again would give others).
                _sync(part)
                os.replace(part, kept)
                _sync(folder)
            sha, size = hashlib.sha256(), 0
            with open(kept, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    sha.update(chunk)
                    size += len(chunk)
            sealed.append(Output(name, size, sha.hexdigest(), out.documents, kept))
        return sealed

    def forget(self, route: RouteConfig, file_id: int) -> None:
        """A file is done (delivered or quarantined): its sealed outputs go."""
        if route.target.pgp is not None:
            shutil.rmtree(self.scratch / "sealed" / f"{route.name}-{file_id}", ignore_errors=True)

    def problems(self, config: AppConfig) -> list[str]:
        """What would stop the routes' PGP (for ``xchange check``)."""
        return [] if self.gpg is None else self.gpg.problems(config)

    def close(self) -> None:
        """Stop gpg's agent (when one was started)."""
        if self.gpg is not None:
            self.gpg.close()


def _sync(path: Path) -> None:
    """fsync a file, or a folder (its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def as_read(
    config: AppConfig, route: RouteConfig, stream: BinaryIO, name: str
) -> Iterator[tuple[BinaryIO, str]]:
    """A file as its route reads it outside a run (``xchange convert``, ``run --dry-run``):
    ``stream`` and ``name`` themselves, or (a route whose files come encrypted) decrypted
    and checked as a run does, in a throwaway scratch folder and GnuPG home.

    Raises:
        PgpRefused: the file would be quarantined.
        PgpUnavailable: gpg or our key cannot be used now.
    """
    if route.source.pgp is None:
        yield stream, name
        return
    with tempfile.TemporaryDirectory(prefix="xchange-pgp-") as scratch:
        pgp = Pgp(config, Path(scratch))
        try:
            with pgp.received(route, stream, name, "read") as found:
                yield found
        finally:
            pgp.close()


def problems(config: AppConfig) -> list[str]:
    """What would stop the configuration's PGP (``xchange check``): gpg missing, the
    keyring folder unfit, a pinned key not in it, our key unable to sign."""
    if config.pgp is None:
        return []
    scratch = Path(tempfile.gettempdir())
    gpg = Gpg(config.pgp, scratch)
    try:
        return gpg.problems(config)
    finally:
        gpg.close()


__all__ = [
    "Gpg",
    "Pgp",
    "Ran",
    "Status",
    "as_read",
    "decrypted",
    "delivered_names",
    "key_files",
    "keyring_problems",
    "passphrase_refused",
    "plain_name",
    "problems",
    "sealed_name",
    "signer",
    "stop_agent",
    "sweep",
]
