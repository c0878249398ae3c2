"""A sink lists every output it wrote (name, size, sha256, documents, where it is), and
forgets them all, files included, when the file fails; holding a hundred thousand of
them adds nothing for the cyclic collector to follow while the rest is converted."""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path

from xchange.sink import Sink


def test_outputs_are_listed_in_order_and_discarded_with_their_files(tmp_path: Path) -> None:
    """Each output as written (on disk or in memory); ``discard`` removes the files."""
    folder = tmp_path / "out"
    sink = Sink(folder)
    sink.put("a.json", b"{}\n", 1)
    with sink.create("b.csv", counter := [0]) as out:
        out.write(b"x,y\r\n")
        counter[0] = 2
    assert [(o.name, o.size, o.sha256, o.documents, o.path) for o in sink.outputs] == [
        ("a.json", 3, hashlib.sha256(b"{}\n").hexdigest(), 1, folder / "a.json"),
        ("b.csv", 5, hashlib.sha256(b"x,y\r\n").hexdigest(), 2, folder / "b.csv"),
    ]
    assert [o.data for o in sink.outputs] == [b"{}\n", b"x,y\r\n"]
    sink.discard()
    assert sink.outputs == [] and sorted(folder.iterdir()) == []
    memory = Sink()
    memory.put("c.xml", b"<c/>", 1)
    assert [(o.name, o.path, o.data) for o in memory.outputs] == [("c.xml", None, b"<c/>")]


def test_many_outputs_add_nothing_for_the_collector_to_follow(tmp_path: Path) -> None:
    """10,000 outputs held: the objects the collector tracks do not grow with them."""
    sink = Sink(tmp_path / "out")
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        sink.put(f"{i}.json", b"{}", 1)
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert len(sink.outputs) == 10_000  # (made when asked for)
