"""The status page in Chinese: route partners' file names and reasons are often Chinese, so
the test browser must draw CJK text, not tofu (a box for every character it has no glyph
for). Two different characters drawn alone give two different pictures only where a font
has them: the same picture twice is tofu. Then the page itself, with a Chinese file name
quarantined, is screenshot for a person to look at (var/screenshots/status-page-cjk.png)."""

from __future__ import annotations

from pathlib import Path

from tests.browser import headless
from tests.conftest import REPO, Exchange
from tests.daemons import daemon, scrape, value, with_http
from tests.procs import wait_for
from tests.sshd import free_port

SCREENSHOTS = REPO / "var" / "screenshots"


def drawn(text: str, tmp_path: Path) -> bytes:
    page = tmp_path / f"{ord(text[0])}.html"
    page.write_text(
        f'<html><body style="margin:0;background:#fff"><p style="font:64px sans-serif;'
        f'margin:0">{text}</p></body></html>',
        encoding="utf-8",
    )
    shot = tmp_path / f"{ord(text[0])}.png"
    taken = headless(
        "--window-size=200,100", f"--screenshot={shot}", page.as_uri(), home=tmp_path / "b"
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    return shot.read_bytes()


def test_the_test_browser_draws_chinese_not_tofu(tmp_path: Path) -> None:
    assert drawn("订", tmp_path) != drawn("库", tmp_path), (
        "the browser draws CJK characters as tofu: no CJK font (the test command installs "
        "fonts-wqy-zenhei)"
    )


def test_a_chinese_file_name_on_the_status_page_is_drawn(
    exchange: Exchange, tmp_path: Path
) -> None:
    port = free_port()
    with_http(exchange, port)
    text = exchange.config.read_text().replace('pattern = "orders_*.csv"', 'pattern = "*.csv"')
    exchange.config.write_text(text)
    with daemon(exchange):
        wait_for(lambda: scrape(port, "/healthz")[0] == 200, what="the endpoint")
        (exchange.inbox / "京东订单_损坏.csv").write_bytes(b"\xff\xfe not a csv at all\n")
        wait_for(
            lambda: (
                (value(scrape(port)[1], "xchange_files_total", outcome="quarantined") or 0) >= 1
            ),
            what="the file quarantined",
        )
        url = f"http://127.0.0.1:{port}/"
        dom = headless("--dump-dom", url, home=tmp_path / "browser")
        assert "京东订单_损坏.csv" in dom.stdout
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "status-page-cjk.png"
        shot.unlink(missing_ok=True)
        taken = headless(
            "--window-size=412,915", f"--screenshot={shot}", url, home=tmp_path / "browser"
        )
        assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
