"""How gpg's status lines are judged, for the cases the end-to-end tests cannot make with
gpg alone (a bad signature inside an intact encryption, expired and revoked keys, several
signatures): each refused with the key named."""

from __future__ import annotations

import pytest

from xchange.config import SourcePgp
from xchange.errors import PgpRefused, PgpUnavailable
from xchange.pgp import Ran, Status, decrypted, passphrase_refused

BANK = "96933246F245E49414C944E59D51EF54253036F8"
OTHER = "4B17C13B2F22773DCE7353D07240C2F947BFC559"
US = "AA721DAD3CBE2CC041E80FF8C504CF83537DD1A0"
PINNED = SourcePgp(signed_by=[BANK])

DECRYPTED = [
    "ENC_TO EBB63DA796117220 18 0",
    f"DECRYPTION_KEY FF73357437E579D1D80B623FEBB63DA796117220 {US} u",
    "BEGIN_DECRYPTION",
    "DECRYPTION_INFO 2 9 0",
    "PLAINTEXT 62 1796620348 statement.csv",
]
END = ["DECRYPTION_OKAY", "GOODMDC", "END_DECRYPTION"]


def valid(fpr: str, sub: str | None = None) -> str:
    return f"VALIDSIG {sub or fpr} 2026-12-07 1796620348 0 4 0 22 10 00 {fpr}"


def judge(*signature: str, code: int = 0, spec: SourcePgp = PINNED) -> str | None:
    text = "\n".join(f"[GNUPG:] {line}" for line in [*DECRYPTED, *signature, *END])
    return decrypted(Ran(code, Status.parse(text), ""), spec, "statement.csv.pgp", US)


def test_a_good_signature_by_the_pinned_primary_key_is_taken_even_from_a_subkey() -> None:
    """VALIDSIG's last field (the primary key) is what is pinned: a signing subkey of the
    pinned key signs for it."""
    sub = "FF73357437E579D1D80B623FEBB63DA796117221"
    assert judge("NEWSIG", "GOODSIG 7AEF9068545CDED2 Bank", valid(BANK, sub)) == BANK


@pytest.mark.parametrize(
    ("lines", "said"),
    [
        (["NEWSIG", "BADSIG 7AEF9068545CDED2 Bank"], "bad signature by key id 7AEF9068545CDED2"),
        (
            ["NEWSIG", "EXPKEYSIG 7AEF9068545CDED2 Bank", valid(BANK)],
            f"signature by {BANK} whose key has expired",
        ),
        (
            ["NEWSIG", "REVKEYSIG 7AEF9068545CDED2 Bank", valid(BANK)],
            f"signature by {BANK} whose key was revoked",
        ),
        (["NEWSIG", "EXPSIG 7AEF9068545CDED2 Bank", valid(BANK)], "expired: refused"),
        (
            ["NEWSIG", f"ERRSIG 7240C2F947BFC559 22 10 00 1796620348 9 {OTHER}", "NO_PUBKEY x"],
            f"signed by {OTHER}, which is not in the keyring",
        ),
        (
            ["NEWSIG", "ERRSIG 7240C2F947BFC559 22 10 00 1796620348 9 -"],
            "signed by key id 7240C2F947BFC559, which is not in the keyring",
        ),
        (
            # two signatures: the bank's and another's; every one must be pinned
            [
                "NEWSIG",
                "GOODSIG 7AEF9068545CDED2 Bank",
                valid(BANK),
                "NEWSIG",
                "GOODSIG 7240C2F947BFC559 Other",
                valid(OTHER),
            ],
            f"signed by {OTHER}, which is not pinned for this route",
        ),
    ],
)
def test_a_signature_not_good_or_not_pinned_is_refused_naming_the_key(
    lines: list[str], said: str
) -> None:
    with pytest.raises(PgpRefused) as info:
        judge(*lines, code=1)
    assert said in info.value.message
    assert info.value.kind == "pgp"


def test_decrypted_and_signed_but_gpg_failed_is_refused() -> None:
    """Whatever gpg's exit code says went wrong beyond the lines read: refused."""
    with pytest.raises(PgpRefused, match="gpg refused it"):
        judge("NEWSIG", "GOODSIG 7AEF9068545CDED2 Bank", valid(BANK), code=2)


def test_no_integrity_check_is_refused_even_when_gpg_decrypted() -> None:
    """DECRYPTION_OKAY without GOODMDC (an older gpg, or one told to ignore it)."""
    text = "\n".join(
        f"[GNUPG:] {line}"
        for line in [*DECRYPTED, "NEWSIG", "GOODSIG k Bank", valid(BANK), "DECRYPTION_OKAY"]
    )
    with pytest.raises(PgpRefused, match="not integrity-protected"):
        decrypted(Ran(0, Status.parse(text), ""), PINNED, "s.pgp", US)


def test_a_refused_passphrase_is_ours_to_fix_not_the_files() -> None:
    """gpg 2.2 in loopback mode says a wrong passphrase only by its error code (11)."""
    status = Status.parse(
        "[GNUPG:] ENC_TO EBB63DA796117220 18 0\n[GNUPG:] ERROR pkdecrypt_failed 67108875\n"
        "[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] DECRYPTION_FAILED\n"
    )
    assert passphrase_refused(status)
    with pytest.raises(PgpUnavailable, match=f"the passphrase of our key {US} was refused"):
        decrypted(Ran(2, status, ""), PINNED, "s.pgp", US)
    assert not passphrase_refused(Status.parse("[GNUPG:] ERROR pkdecrypt_failed 67108881\n"))
