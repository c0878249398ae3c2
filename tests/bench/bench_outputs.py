"""Benchmarks 10 and 11b: one source file converted into many outputs (one WMS XML per
order) delivered to an SFTP target by `run --once` (journaled, each output under a hidden
name, renamed, its size checked), against `xchange convert` of the same file plus OpenSSH
`sftp -b` putting the outputs, in the same run, on loopback and over a link with a 40 ms
round trip (tests/latencyproxy.py).

    python tests/bench/bench_outputs.py [--orders 2000] [--link-orders 300] [--rounds 3]
        [--rtt-ms 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, alternate, over_link, report, ssh_options, sshd_server  # type: ignore[import-not-found]

sys.path.insert(0, str(ROOT))


HEADER = (
    "订单号,下单时间,渠道,收货人,手机,省份,城市,区县,详细地址,"
    "商品编码,商品名称,数量,单价,发货仓,买家留言"
)
LINE = (
    "EC2026{n:07d},2026-11-21 09:15:02,天猫,张三,13800138000,上海市,上海市,浦东新区,"
    "世纪大道100号8楼,SKU-1001,纯棉T恤 白色 L,2,59.90,上海仓,请周末送货"
)

CONFIG = """
formats = "{formats}"
[journal]
path = "{work}/journal.sqlite"
[quarantine]
path = "{work}/quarantine"
[endpoints.shop-drop]
type = "local"
path = "{drop}"
[endpoints.wms]
type = "sftp"
host = "{host}"
port = {port}
user = "{user}"
path = "{target}"
key_file = "{key}"
known_hosts = "{known_hosts}"
[[routes]]
name = "shop-orders"
source = {{ endpoint = "shop-drop", pattern = "orders_*.csv" }}
source_layout = "shop-order-lines"
mapping = "shop-to-wms-outbound"
target_layout = "wms-outbound-order"
target = {{ endpoint = "wms", name = "WMS_OUT_{{OrderDate}}_{{OrderNo}}.xml" }}
after = {{ action = "archive", folder = "archive" }}
ready = {{ settle = 0 }}
"""


def run_case(server: object, work: Path, source: Path, orders: int, rounds: int) -> dict:
    target = server.folder(f"outputs-{server.port}")  # type: ignore[attr-defined]
    drop = work / "drop"
    converted = work / "converted"
    config = work / "bench.toml"
    config.write_text(
        CONFIG.format(
            formats=ROOT / "formats",
            work=work,
            drop=drop,
            host=server.host,  # type: ignore[attr-defined]
            port=server.port,  # type: ignore[attr-defined]
            user=server.user,  # type: ignore[attr-defined]
            target=target,
            key=server.client_key,  # type: ignore[attr-defined]
            known_hosts=server.known_hosts,  # type: ignore[attr-defined]
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCHANGE_")}

    def reset() -> None:
        shutil.rmtree(target)
        target.mkdir()
        target.chmod(0o777)
        for folder in (drop, converted):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        shutil.copy(source, drop / source.name)
        (work / "journal.sqlite").unlink(missing_ok=True)
        os.sync()

    def xchange() -> None:
        subprocess.run(
            [sys.executable, "-m", "xchange", "run", "--once", "--config", str(config)],
            check=True,
            capture_output=True,
            env=env,
        )
        assert len(os.listdir(target)) == orders

    def convert_and_sftp() -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "xchange",
                "convert",
                "--route",
                "shop-orders",
                "-o",
                str(converted),
                "--config",
                str(config),
                str(source),
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        batch = work / "put.batch"
        batch.write_text(
            "".join(f"put {p} {target}/{p.name}\n" for p in sorted(converted.iterdir()))
        )
        subprocess.run(
            ["sftp", *ssh_options(server), "-b", str(batch), f"{server.user}@{server.host}"],  # type: ignore[attr-defined]
            check=True,
            capture_output=True,
        )

    return alternate(
        rounds, {"xchange": xchange, "xchange convert + sftp -b": convert_and_sftp}, reset
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=40)
    parser.add_argument("--link-orders", type=int, default=300)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xchange-bench-outputs-"))

    def orders_file(count: int) -> Path:
        path = work / f"src-{count}" / "orders_20261121.csv"
        path.parent.mkdir()
        text = HEADER + "\n" + "\n".join(LINE.format(n=n) for n in range(count)) + "\n"
        path.write_bytes(text.encode("gbk"))
        return path

    with sshd_server() as real:
        started = time.perf_counter()
        times = run_case(real, work, orders_file(args.orders), args.orders, args.rounds)
        report(
            f"10. one source -> {args.orders} outputs -> SFTP (loopback)",
            "outputs/s",
            args.orders,
            times,
        )
        with over_link(real, args.rtt_ms, work) as far:
            count = args.link_orders
            times = run_case(far, work, orders_file(count), count, args.rounds)
            report(
                f"11b. one source -> {count} outputs over a {args.rtt_ms:g} ms round trip",
                "outputs/s",
                count,
                times,
            )
        print(f"(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
