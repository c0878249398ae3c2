"""The runner over the in-memory backend, given through its remote factory: the whole
exchange (claim, convert, deliver, archive, duplicate) with no disk folder and no server
behind the endpoints."""

from __future__ import annotations

from tests.conftest import SAMPLES, Exchange
from xchange.config import Endpoint, load_config
from xchange.journal import State, open_journal
from xchange.remote import Remote
from xchange.remote.memory import MemoryRemote, MemoryStore
from xchange.results import DELIVERED, DUPLICATE
from xchange.runner import Runner


def test_an_exchange_runs_end_to_end_on_in_memory_endpoints(exchange: Exchange) -> None:
    """Every endpoint is a memory store: the sample is delivered byte for byte as the
    expected outputs, the source archived; the same bytes again are a duplicate."""
    stores: dict[str, MemoryStore] = {}

    def memory(name: str, cfg: Endpoint) -> Remote:
        return MemoryRemote(name, stores.setdefault(name, MemoryStore()))

    sample = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"
    stores["shop-drop"] = MemoryStore()
    stores["shop-drop"].write("orders_20261121.csv", sample.read_bytes())
    config = load_config(exchange.config)
    journal = open_journal(config.journal)
    runner = Runner(config, journal, remotes=memory)
    try:
        (first,) = runner.run_once()
        assert [f.outcome for f in first.files] == [DELIVERED]
        expected = {
            p.name: p.read_bytes() for p in (SAMPLES / "shop-orders" / "expected").iterdir()
        }
        assert stores["wms-outbox"].folder("") == expected
        drop = stores["shop-drop"]
        assert drop.folder("") == {}  # archived: nothing left in the drop folder
        (archived,) = [p for p in drop.files if p.startswith("archive/")]
        assert drop.files[archived].data == sample.read_bytes()
        drop.write("orders_again.csv", sample.read_bytes())
        (again,) = runner.run_once()
        assert [f.outcome for f in again.files] == [DUPLICATE]
        (record,) = journal.query()
        assert record.state == State.ARCHIVED
        assert not exchange.outbox.exists() or not any(exchange.outbox.iterdir())
    finally:
        runner.close()
        journal.close()
