"""Real daemons the tests start, and what they look at."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from tests.conftest import FORMATS, SAMPLES, Exchange
from tests.procs import xchange_argv, xchange_env


@contextmanager
def daemon(exchange: Exchange) -> Iterator[subprocess.Popen[bytes]]:
    """`xchange run` in the foreground, as systemd would start it; stopped with SIGTERM."""
    log = open(exchange.root / "daemon.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        xchange_argv(exchange.config, "run"), stdout=log, stderr=log, env=xchange_env()
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


def fast(exchange: Exchange, settle: float = 0.5, extra: str = "") -> None:
    exchange.write_config(ready=f"settle = {settle}", route_extra=extra)
    text = exchange.config.read_text()
    exchange.config.write_text(
        text.replace("[[routes]]", "[daemon]\npoll_interval = 0.5\nrescan = 2\n\n[[routes]]", 1)
    )


class Arrivals(FileSystemEventHandler):
    """Counts each final name appearing in the receiver's folder (created or moved in)."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        path = (
            getattr(event, "dest_path", "")
            if event.event_type == "moved"
            else (event.src_path if event.event_type == "created" else "")
        )
        name = os.path.basename(os.fsdecode(path))
        if name and not name.startswith("."):
            with self.lock:
                self.count[name] += 1

    def total(self) -> int:
        with self.lock:
            return sum(self.count.values())


SAMPLE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"


def private_formats(exchange: Exchange) -> Path:
    """A copy of formats/ that the test may edit, wired into the exchange's config."""
    formats = exchange.root / "formats"
    shutil.copytree(FORMATS, formats)
    exchange.config.write_text(exchange.config.read_text().replace(str(FORMATS), str(formats)))
    return formats


def drop_with_new_channel(exchange: Exchange) -> None:
    data = SAMPLE.read_bytes().decode("gbk").replace("京东", "抖音").encode("gbk")
    (exchange.inbox / "orders_20261121.csv").write_bytes(data)


def with_alerts(exchange: Exchange, extra: str) -> None:
    text = exchange.config.read_text()
    exchange.config.write_text(text.replace("[[routes]]", extra + "\n[[routes]]", 1))


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus' text format (None: not there)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def with_http(exchange: Exchange, port: int) -> None:
    fast(exchange)
    text = exchange.config.read_text()
    exchange.config.write_text(
        text.replace("[daemon]\n", f'[daemon]\nhttp = "127.0.0.1:{port}"\n', 1)
    )
