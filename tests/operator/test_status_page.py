"""The status page in a real headless browser (Debian's chromium): it loads from a running
daemon, shows a quarantined file with its first problem once one is quarantined, finds a
delivered order by its number (the search box), fits a phone's screen, and screenshots
are kept (var/screenshots/status-page.png, status-page-find.png) for a person to look
at."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from tests.browser import headless
from tests.conftest import REPO, Exchange
from tests.daemons import daemon, scrape, value, with_http
from tests.procs import wait_for
from tests.sshd import free_port

SCREENSHOTS = REPO / "var" / "screenshots"


def test_the_status_page_shows_a_quarantined_file_in_a_real_browser(
    exchange: Exchange, tmp_path: Path
) -> None:
    port = free_port()
    with_http(exchange, port)
    target = 'name = "WMS_OUT_{OrderDate}_{OrderNo}.xml" }'
    exchange.config.write_text(  # the WMS collects what is delivered (pickup receipts)
        exchange.config.read_text().replace(target, target[:-1] + ', pickup_within = "2h" }')
    )
    with exchange.config.open("a", encoding="utf-8") as config:
        config.write('dedupe_key = "OrderNo"\n')  # (the route's last key: business keys kept)
    url = f"http://127.0.0.1:{port}/"
    with daemon(exchange):
        wait_for(lambda: scrape(port, "/healthz")[0] == 200, what="the endpoint")
        exchange.drop_sample()
        (exchange.inbox / "orders_broken.csv").write_bytes(b"\xff\xfe not a csv at all\n")
        wait_for(
            lambda: (
                (value(scrape(port)[1], "xchange_files_total", outcome="quarantined") or 0) >= 1
            ),
            what="the broken file quarantined",
        )
        dom = headless("--dump-dom", url, home=tmp_path / "browser")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert "<title>xchange status</title>" in html
        assert 'id="route-shop-orders"' in html
        assert "quarantined: #" in html and "orders_broken.csv" in html
        assert "last delivery:" in html and "never" not in html.split("last delivery:")[1][:40]
        assert 'http-equiv="refresh"' in html and 'name="viewport"' in html
        assert "<script" not in html
        assert "pickup: 3 waiting for the partner (oldest delivered 20" in html
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "status-page.png"
        shot.unlink(missing_ok=True)
        taken = headless(
            "--window-size=412,915", f"--screenshot={shot}", url, home=tmp_path / "browser"
        )
        assert taken.returncode == 0, taken.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"status page screenshot: {shot}")

        # Where did order EC20261121001 go: its source file, route and outputs.
        found = headless("--dump-dom", f"{url}?find=EC20261121001", home=tmp_path / "browser")
        assert found.returncode == 0, found.stderr[-2000:]
        html = found.stdout
        assert 'name="find" value="EC20261121001"' in html
        assert "#1 shop-orders: shop-drop:orders_20261121.csv (" in html
        assert "business key EC20261121001" in html
        assert "wms-outbox:WMS_OUT_20261121_EC20261121001.xml" in html and "delivered 20" in html
        assert html.count("<b>output</b>") == 3 and "orders_broken.csv" in html
        assert "http-equiv" not in html  # (results are not refreshed away)
        shot = SCREENSHOTS / "status-page-find.png"
        shot.unlink(missing_ok=True)
        term = quote("EC20261121001")
        taken = headless(
            "--window-size=412,915",
            f"--screenshot={shot}",
            f"{url}?find={term}",
            home=tmp_path / "browser",
        )
        assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]

        # A hostile term is text on the page, never markup.
        hostile = "<script>alert('x')</script>%_\""
        shown = headless("--dump-dom", f"{url}?find={quote(hostile)}", home=tmp_path / "browser")
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert "<script" not in shown.stdout
        assert "nothing in the journal matches" in shown.stdout
        assert "&lt;script&gt;alert('x')&lt;/script&gt;%_" in shown.stdout
