"""PGP keys made at test time (none is committed), each party with a GnuPG home of its
own, and a keyring folder for xchange made from their exports."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Our key's passphrase in the tests.
PASSPHRASE = "correct horse battery staple"


@dataclass
class Party:
    """One party's key, in a GnuPG home of its own (short path: the agent's socket)."""

    name: str
    home: Path
    fingerprint: str
    passphrase: str = ""

    def gpg(self, *args: str, data: bytes | None = None, check: bool = True) -> bytes:
        """Run gpg in this party's home; its standard output."""
        done = subprocess.run(
            [
                "gpg",
                "--homedir",
                str(self.home),
                "--batch",
                "--no-tty",
                "--trust-model",
                "always",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                self.passphrase,
                *args,
            ],
            input=data,
            capture_output=True,
            env={"PATH": os.environ["PATH"], "GNUPGHOME": str(self.home)},
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)}: {done.stderr.decode(errors='replace')}")
        return done.stdout

    def public(self) -> bytes:
        return self.gpg("--export", "--armor", self.fingerprint)

    def secret(self) -> bytes:
        return self.gpg("--export-secret-keys", "--armor", self.fingerprint)

    def knows(self, *others: Party) -> None:
        """Import the others' public keys."""
        for other in others:
            self.gpg("--import", data=other.public())

    def encrypt(
        self, data: bytes, to: list[Party], *, sign: bool = True, extra: tuple[str, ...] = ()
    ) -> bytes:
        """``data`` encrypted to ``to`` (whose public keys this party knows), signed with
        this party's key unless ``sign`` is false."""
        args = ["--encrypt", *extra]
        for party in to:
            args += ["--recipient", party.fingerprint]
        if sign:
            args += ["--sign", "--local-user", self.fingerprint]
        return self.gpg(*args, "--output", "-", data=data)


def make_party(name: str, passphrase: str = "") -> Party:
    home = Path(tempfile.mkdtemp(prefix="xt-gpg-"))
    party = Party(name, home, "", passphrase)
    party.gpg("--quick-gen-key", f"{name} <{name}@example.com>", "ed25519", "sign,cert", "never")
    listing = party.gpg("--with-colons", "--list-keys").decode()
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    party.fingerprint = fpr
    party.gpg("--quick-add-key", fpr, "cv25519", "encr", "never")
    return party


def stop(party: Party) -> None:
    subprocess.run(
        ["gpgconf", "--homedir", str(party.home), "--kill", "all"],
        env={"PATH": os.environ["PATH"], "GNUPGHOME": str(party.home)},
        check=False,
        capture_output=True,
    )
    shutil.rmtree(party.home, ignore_errors=True)


@dataclass
class Parties:
    """Us (our key protected by PASSPHRASE), the bank (pinned), another partner (in the
    keyring, not pinned for the bank's route) and a stranger (in no keyring)."""

    us: Party
    bank: Party
    other: Party
    stranger: Party

    def keyring(self, folder: Path) -> Path:
        """A keyring folder for xchange: our secret key, the bank's and the other
        partner's public keys; owner-only."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, data in (
            ("us.secret.asc", self.us.secret()),
            ("bank.asc", self.bank.public()),
            ("other.asc", self.other.public()),
        ):
            (folder / name).write_bytes(data)
            (folder / name).chmod(0o600)
        return folder


@contextmanager
def parties() -> Iterator[Parties]:
    made = Parties(
        make_party("us", PASSPHRASE), make_party("bank"), make_party("other"), make_party("x")
    )
    try:
        made.bank.knows(made.us, made.stranger)
        made.other.knows(made.us)
        made.stranger.knows(made.us)
        made.us.knows(made.bank)
        yield made
    finally:
        for party in (made.us, made.bank, made.other, made.stranger):
            stop(party)


def local(name: str, folder: Path) -> str:
    """A local-folder endpoint in TOML."""
    return f'[endpoints.{name}]\ntype = "local"\npath = "{folder}"\n'


def bank_config(
    root: Path,
    keyring: Path,
    *,
    us: str,
    source_pgp: str | None,
    target_pgp: str | None = None,
    source_endpoint: str = "",
    target_endpoint: str = "",
    pgp_extra: str = "",
) -> Path:
    """The bank-statements exchange under ``root`` (inbox, outbox, journal, quarantine),
    with PGP as given (``source_pgp``/``target_pgp``: inline tables, or None); its
    passphrase in PGP_TEST_PASSPHRASE (set by the test). Endpoints ``bank-drop`` and
    ``erp-inbox`` are local folders unless given as TOML."""
    repo = Path(__file__).resolve().parent.parent
    for sub in ("inbox", "outbox"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    source = f", pgp = {source_pgp}" if source_pgp else ""
    target = f", pgp = {target_pgp}" if target_pgp else ""
    config = root / "xchange.toml"
    config.write_text(
        f"""
formats = "{repo / "formats"}"

[journal]
path = "{root / "var" / "journal.sqlite"}"

[quarantine]
path = "{root / "var" / "quarantine"}"

[pgp]
keyring = "{keyring}"
key = "{us}"
passphrase_env = "PGP_TEST_PASSPHRASE"
{pgp_extra}

{source_endpoint or local("bank-drop", root / "inbox")}

{target_endpoint or local("erp-inbox", root / "outbox")}

[[routes]]
name = "bank-statements"
source = {{ endpoint = "bank-drop", pattern = "statement_*"{source} }}
source_layout = "bank-statement"
mapping = "bank-statement-to-erp-journal"
target_layout = "erp-bank-journal"
target = {{ endpoint = "erp-inbox", name = "ERP_BANK_{{source_stem}}.csv"{target} }}
retry = {{ attempts = 1, initial = 0, later = 0, give_up_after = 2 }}
ready = {{ settle = 0 }}
""",
        encoding="utf-8",
    )
    return config
