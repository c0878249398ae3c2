"""Decrypting and verifying a PGP file: xchange against plain ``gpg --decrypt``.

A bank statement of ``--size-mb`` MB (CSV text) encrypted to our key and signed with the
bank's (keys made here, thrown away after). Contenders, alternating in each round:

- ``gpg --decrypt``: GnuPG itself, in a home holding our secret key and the bank's public
  key, the passphrase on a descriptor, plaintext to a file (what a script would run);
- ``xchange pgp layer``: ``xchange.pgp.Pgp.received``, the layer a route runs: the same
  decryption plus the checks (integrity, signature by the pinned key), plaintext to a
  private file;
- ``xchange run --once (copy route)``: the whole way, in a fresh process: the drop folder
  read and hashed, claimed, decrypted and checked, the plaintext delivered, the source
  archived, the journal written; and the same run with nothing to take (its fixed cost:
  the interpreter, the configuration, the journal; no GnuPG home is made then).

Prints medians and mins, and the peak RSS of the xchange process of the last run (big
files are streamed: neither the ciphertext nor the plaintext is held in memory).

    python3 tests/bench/bench_pgp.py --size-mb 100 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.common import alternate
from tests.pgpkeys import PASSPHRASE, bank_config, parties


def statement(path: Path, size: int) -> None:
    """A bank statement's CSV (GBK) of about ``size`` bytes."""
    header = "账号,交易日期,交易流水号,对方户名,对方账号,借方发生额,贷方发生额,余额,币种,摘要\r\n"
    with open(path, "wb") as fh:
        fh.write(header.encode("gbk"))
        n = 0
        written = 0
        while written < size:
            line = (
                f"6222020200112233445,20261205,B2026120500{n:07d},上海某某贸易有限公司,"
                f"3100{n % 9973:010d},,{n % 100000}.{n % 100:02d},{100000 + n}.00,CNY,货款 {n}\r\n"
            ).encode("gbk")
            fh.write(line)
            written += len(line)
            n += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xchange-bench-pgp-"))
    os.environ["PGP_TEST_PASSPHRASE"] = PASSPHRASE
    try:
        with parties() as made:
            plain = work / "statement.csv"
            statement(plain, args.size_mb * 1_000_000)
            sealed = work / "statement_bench.csv.pgp"
            made.bank.gpg(
                "--encrypt",
                "--sign",
                "--recipient",
                made.us.fingerprint,
                "--local-user",
                made.bank.fingerprint,
                "--output",
                str(sealed),
                str(plain),
            )
            size = sealed.stat().st_size
            print(f"plaintext {plain.stat().st_size / 1e6:.1f} MB, encrypted {size / 1e6:.1f} MB")
            keyring = made.keyring(work / "keys")
            layer_root = work / "layer"
            config = bank_config(
                layer_root,
                keyring,
                us=made.us.fingerprint,
                source_pgp=f'{{ signed_by = ["{made.bank.fingerprint}"] }}',
            )
            from xchange.config import load_config
            from xchange.pgp import Pgp

            loaded = load_config(config)
            pgp = Pgp(loaded, layer_root / "scratch")
            route = loaded.routes[0]
            out = work / "gpg-out.csv"

            def plain_gpg() -> None:
                out.unlink(missing_ok=True)
                read, write = os.pipe()
                os.write(write, (PASSPHRASE + "\n").encode())
                os.close(write)
                subprocess.run(
                    [
                        "gpg",
                        "--homedir",
                        str(made.us.home),
                        "--batch",
                        "--pinentry-mode",
                        "loopback",
                        "--passphrase-fd",
                        str(read),
                        "--trust-model",
                        "always",
                        "--decrypt",
                        "--output",
                        str(out),
                        str(sealed),
                    ],
                    pass_fds=(read,),
                    check=True,
                    capture_output=True,
                )
                os.close(read)

            def layer() -> None:
                with (
                    open(sealed, "rb") as fh,
                    pgp.received(route, fh, sealed.name, "bench") as (reading, _),
                ):
                    reading.seek(0, os.SEEK_END)

            runs = {"n": 0}

            def whole(drop: bool = True) -> None:
                runs["n"] += 1
                root = work / f"run{runs['n']}"
                copy = bank_config(
                    root,
                    keyring,
                    us=made.us.fingerprint,
                    source_pgp=f'{{ signed_by = ["{made.bank.fingerprint}"] }}',
                )
                text = copy.read_text(encoding="utf-8")
                text = text.replace('source_layout = "bank-statement"\n', "")
                text = text.replace('mapping = "bank-statement-to-erp-journal"', 'mapping = "copy"')
                text = text.replace('target_layout = "erp-bank-journal"\n', "")
                text = text.replace('"ERP_BANK_{source_stem}.csv"', '"{source_name}"')
                copy.write_text(text, encoding="utf-8")
                if drop:
                    os.link(sealed, root / "inbox" / sealed.name)
                done = subprocess.run(
                    [sys.executable, "-m", "xchange", "run", "--once", "--config", str(copy)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert done.returncode == 0, done.stdout + done.stderr
                delivered = root / "outbox" / "statement_bench.csv"
                assert not drop or delivered.stat().st_size == plain.stat().st_size
                shutil.rmtree(root)

            # Warm: the daemon's GnuPG home made and its agent started once, as gpg's.
            plain_gpg()
            layer()
            times = alternate(
                args.rounds,
                {
                    "gpg --decrypt": plain_gpg,
                    "xchange pgp layer": layer,
                    "xchange run --once (copy route)": whole,
                    "  the same, nothing to take": lambda: whole(drop=False),
                },
            )
            pgp.close()
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            mb = plain.stat().st_size / 1e6
            print(
                f"\nDecrypt + verify a {mb:.0f} MB file ({size / 1e6:.1f} MB encrypted, signed by "
                f"the pinned key), {args.rounds} rounds; MB/s of plaintext"
            )
            ref = statistics.median(times["gpg --decrypt"])
            for name, ts in times.items():
                med, low = statistics.median(ts), min(ts)
                print(
                    f"  {name:<34} median {med:6.2f} s ({mb / med:6.1f} MB/s), min {low:6.2f} s"
                    f"   {ref / med:.2f}x gpg's speed   runs: {', '.join(f'{t:.2f}' for t in ts)}"
                )
            print(f"  peak RSS of the largest child process: {rss / 1024:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
