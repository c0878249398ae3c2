"""The Journal contract: what every journal backend must do, run against each of them.

A new backend joins by adding one parameter to ``BACKENDS`` and one branch to
``open_backend``. Behaviour only: claims and content identity, the transition table
(an illegal write raises and writes nothing), history, retention, business keys, the alert
ledger, the records that may heal, held-file observations.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from xchange.errors import IllegalTransition, JournalError
from xchange.journal import (
    DONE_STATES,
    TRANSITIONS,
    Claim,
    FileKey,
    FileTally,
    Journal,
    Observation,
    OutputRecord,
    State,
    Step,
)
from xchange.journal.sqlite import SQLiteJournal

BACKENDS = ["sqlite", "postgres"]
T0 = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


def open_backend(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Journal:
    """A fresh, empty journal of the backend ``kind``."""
    if kind == "sqlite":
        tmp_path.mkdir(parents=True, exist_ok=True)
        return SQLiteJournal(tmp_path / "j.sqlite")
    if kind == "postgres":
        from xchange.journal.postgres import PostgresJournal

        server = request.getfixturevalue("postgres")
        url = server.create_database(f"j_{secrets.token_hex(6)}")
        return PostgresJournal(url, password=server.password)
    raise AssertionError(kind)


@pytest.fixture(params=BACKENDS)
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    store = open_backend(request, request.param, tmp_path)
    yield store
    store.close()


def key(sha: str = "a" * 64, path: str = "orders_1.csv", route: str = "r") -> FileKey:
    return FileKey(route, "drop", path, 10, 123, sha)


def walk(journal: Journal, file_id: int, *states: State) -> None:
    for state in states:
        journal.transition(file_id, state)


def test_same_content_on_a_route_is_one_record_and_is_delivered_once(journal: Journal) -> None:
    """A second claim of delivered content says so; a changed file is a new record."""
    first = journal.claim(key(), layout_version="l", mapping_version="m")
    assert not first.already_delivered and first.record.attempts == 1
    journal.transition(first.record.id, State.DELIVERING)
    journal.transition(first.record.id, State.DELIVERED)
    again = journal.claim(key(path="renamed.csv"), layout_version="l", mapping_version="m")
    assert again.already_delivered and again.record.id == first.record.id
    changed = journal.claim(key(sha="b" * 64), layout_version="l", mapping_version="m")
    assert not changed.already_delivered and changed.record.id != first.record.id
    other_route = journal.claim(key(route="r2"), layout_version="l", mapping_version="m")
    assert not other_route.already_delivered


def test_every_transition_is_kept_in_order(journal: Journal) -> None:
    """The history lists each state change with its note."""
    rec = journal.claim(key(), layout_version="l", mapping_version="m").record
    journal.transition(rec.id, State.DELIVERING, note="a.xml")
    journal.transition(rec.id, State.DELIVERED)
    journal.transition(rec.id, State.ARCHIVED, archive_path="archive/x.csv")
    assert [(h.from_state, h.to_state) for h in journal.history(rec.id)] == [
        (None, "processing"),
        ("processing", "delivering"),
        ("delivering", "delivered"),
        ("delivered", "archived"),
    ]
    assert journal.get(rec.id).archive_path == "archive/x.csv"  # type: ignore[union-attr]


def test_prune_forgets_old_delivered_records_but_keeps_quarantine(journal: Journal) -> None:
    """Retention removes delivered history only; quarantined files stay for an operator."""
    done = journal.claim(key(), layout_version="l", mapping_version="m").record
    journal.transition(done.id, State.DELIVERING)
    journal.record_output(done.id, OutputRecord("t", "a.xml", 1, "x", T0))
    journal.transition(done.id, State.DELIVERED)
    bad = journal.claim(key(sha="c" * 64), layout_version="l", mapping_version="m").record
    journal.transition(bad.id, State.QUARANTINED, error=("validation", "bad"))
    assert journal.prune(datetime.now(UTC) - timedelta(days=1)) == 0
    assert journal.prune(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert [r.id for r in journal.query()] == [bad.id]


def test_business_keys_of_other_files_are_reported(journal: Journal) -> None:
    """Keys delivered by one file are found for another, never for the file itself."""
    one = journal.claim(key(), layout_version="l", mapping_version="m").record.id
    two = journal.claim(key(sha="d" * 64), layout_version="l", mapping_version="m").record.id
    journal.keys.record("r", one, ["EC1", "EC2"])
    assert journal.keys.delivered("r", ["EC1", "EC3"], except_file=two) == {"EC1": one}
    assert journal.keys.delivered("r", ["EC1"], except_file=one) == {}
    assert journal.keys.delivered("other", ["EC1"], except_file=two) == {}
    # A file that carried a key delivered before: found by it, as a repeat.
    journal.keys.left_out("r", two, ["EC1"])
    assert [(f.record.id, f.matched) for f in journal.find("EC1")] == [
        (two, ("business key, left out as a repeat",)),
        (one, ("business key",)),
    ]
    assert journal.keys.delivered("r", ["EC1"], except_file=one) == {}  # (not delivered)


def test_outputs_wait_for_their_partner_until_seen_collected(journal: Journal) -> None:
    """Outputs journaled as waiting are listed oldest first until seen collected (the
    first daemon to see it keeps its time); a name delivered again by another file
    replaces the one waiting; episodes of outputs not collected in time begin and end
    once."""
    one = journal.claim(key(), layout_version="l", mapping_version="m").record.id
    two = journal.claim(key(sha="d" * 64, path="b.csv"), layout_version="l", mapping_version="m")
    walk(journal, one, State.PROCESSING, State.DELIVERING)
    for name, minutes in (("A.xml", 2), ("B.xml", 1)):
        at = T0 + timedelta(minutes=minutes)
        journal.record_output(one, OutputRecord("out", name, 1, "f" * 64, at, pickup="waiting"))
    journal.record_output(one, OutputRecord("out", "C.xml", 1, "f" * 64, T0))  # not watched
    waiting = journal.pickups.waiting("r")
    assert [(w.path, w.source, w.file_id) for w in waiting] == [
        ("B.xml", "orders_1.csv", one),
        ("A.xml", "orders_1.csv", one),
    ]
    assert journal.pickups.waiting("other") == []
    assert journal.pickups.at("out", "A.xml") == [waiting[1].output_id]
    assert journal.pickups.at("out", "C.xml") == journal.pickups.at("other", "A.xml") == []
    assert journal.pickups.collected([waiting[0].output_id], T0 + timedelta(hours=1)) == 1
    assert journal.pickups.collected([waiting[0].output_id], T0 + timedelta(hours=2)) == 0
    [b] = [o for o in journal.get(one).outputs if o.path == "B.xml"]
    assert (b.pickup, b.picked_up_at) == ("collected", T0 + timedelta(hours=1))
    # Another file delivers A.xml again before its partner took the first one.
    walk(journal, two.record.id, State.PROCESSING, State.DELIVERING)
    journal.record_steps(
        [
            Step(
                two.record.id,
                State.DELIVERED,
                output=OutputRecord("out", "A.xml", 2, "e" * 64, T0, pickup="waiting"),
            )
        ]
    )
    assert [(w.path, w.file_id) for w in journal.pickups.waiting()] == [("A.xml", two.record.id)]
    assert [o.pickup for o in journal.get(one).outputs] == ["replaced", "collected", None]
    assert journal.pickups.looked("r") is None
    journal.pickups.looked_at("r", T0 + timedelta(hours=3))
    journal.pickups.looked_at("r", T0 + timedelta(hours=2))  # (an older look changes nothing)
    assert journal.pickups.looked("r") == T0 + timedelta(hours=3)
    assert journal.pickups.episode("r", False, now=T0) is None
    assert journal.pickups.episode("r", True, now=T0) is True
    assert journal.pickups.episode("r", True, now=T0 + timedelta(minutes=5)) is None
    assert journal.pickups.episode("r", False, now=T0 + timedelta(hours=1)) is False
    assert journal.pickups.episode("r", False, now=T0 + timedelta(hours=2)) is None
    assert journal.pickups.episode("r", True, now=T0 + timedelta(hours=3)) is True


def test_a_delivered_files_tally_is_kept_exactly_and_read_by_route_and_time(
    journal: Journal,
) -> None:
    """Documents, repeats and totals as exact decimals; a file delivered again keeps its
    latest tally; read back per route within [since, until)."""
    one = journal.claim(key(), layout_version="l", mapping_version="m").record.id
    two = journal.claim(key(sha="d" * 64), layout_version="l", mapping_version="m").record.id
    exact = {"amount[CNY]": Decimal("3456789.10"), "lines": Decimal("1284")}
    journal.tallies.record(FileTally(one, "r", T0, 3, 0, {"lines": Decimal(1)}))
    journal.tallies.record(FileTally(one, "r", T0, 3, 1, exact))
    journal.tallies.record(FileTally(two, "r", T0 + timedelta(hours=1), None))
    [first] = journal.tallies.between("r", T0, T0 + timedelta(hours=1))
    assert first == FileTally(one, "r", T0, 3, 1, exact)
    assert str(first.totals["amount[CNY]"]) == "3456789.10"
    later = journal.tallies.between("r", T0 + timedelta(minutes=1), T0 + timedelta(days=1))
    assert [(t.file_id, t.documents, t.totals) for t in later] == [(two, None, {})]
    assert journal.tallies.between("other", T0, T0 + timedelta(days=1)) == []


def delivered(journal: Journal, k: FileKey, *outputs: OutputRecord) -> int:
    """A file of key ``k`` claimed and delivered with these outputs: its id."""
    file_id = journal.claim(k, layout_version="l", mapping_version="m").record.id
    journal.transition(file_id, State.DELIVERING)
    for o in outputs:
        journal.record_output(file_id, o)
    journal.transition(file_id, State.DELIVERED)
    return file_id


def test_find_names_a_file_by_key_name_output_or_checksum(journal: Journal) -> None:
    """A business key, a source's name (or a pattern), an output's name, the start of a
    source's or an output's sha256: each finds the file, newest first, saying how."""
    out_sum = "ab12cd34" + "e" * 56
    one = delivered(
        journal,
        key("f00dcafe" + "0" * 56, path="orders_1.csv"),
        OutputRecord("wms", "WMS_OUT_EC1.xml", 120, out_sum, T0),
        OutputRecord("wms", "WMS_OUT_EC2.xml", 130, "c" * 64, T0),
    )
    two = delivered(
        journal,
        key("beef" * 16, path="orders_2.csv"),
        OutputRecord("wms", "WMS_OUT_EC3.xml", 99, "d" * 64, T0),
    )
    other = delivered(journal, key("f00dcafe" + "1" * 56, path="orders_1.csv", route="r2"))
    journal.keys.record("r", one, ["EC1", "EC2"])
    journal.keys.record("r", two, ["EC3"])
    journal.keys.record("r2", other, ["EC1"])

    by_key = journal.find("EC1")
    assert [(f.record.id, f.matched, f.keys) for f in by_key] == [
        (other, ("business key",), ("EC1",)),
        (one, ("business key",), ("EC1",)),
    ]
    assert [f.record.id for f in journal.find("EC1", route="r")] == [one]
    (found,) = journal.find("WMS_OUT_EC2.xml")
    assert found.record.id == one and found.matched == ("output name",)
    assert found.outputs == ("WMS_OUT_EC2.xml",)
    assert [o.path for o in found.record.outputs] == ["WMS_OUT_EC1.xml", "WMS_OUT_EC2.xml"]
    assert [f.record.id for f in journal.find("orders_1.csv")] == [other, one]
    assert [f.record.id for f in journal.find("orders_*.csv", route="r")] == [two, one]
    assert [f.record.id for f in journal.find("WMS_OUT_EC?.xml")] == [two, one]
    (by_output_sum,) = journal.find("AB12CD34")  # (case does not matter in a checksum)
    assert by_output_sum.matched == ("output sha256",)
    assert by_output_sum.outputs == ("WMS_OUT_EC1.xml",)
    assert [(f.record.id, f.matched) for f in journal.find("f00dcafe00")] == [
        (one, ("source sha256",))
    ]
    assert [f.record.id for f in journal.find("f00dcafe")] == [other, one]
    assert journal.find("f00dcaf") == []  # (seven digits: too short to be a checksum)
    assert journal.find("EC9") == journal.find("   ") == []
    assert len(journal.find("orders_*", limit=1)) == 1


def test_find_takes_wildcards_and_quotes_in_a_term_as_themselves(journal: Journal) -> None:
    """SQL's wildcards and quotes in a term match only themselves; a shell pattern's
    ``*`` and ``?`` are the only wildcards."""
    odd = delivered(
        journal,
        key("1" * 64, path="orders_100%_o'k.csv"),
        OutputRecord("wms", 'OUT_"50%"_a.xml', 1, "2" * 64, T0),
    )
    plain = delivered(journal, key("3" * 64, path="orders_1000_ok.csv"))
    journal.keys.record("r", odd, ["EC'1%_"])
    journal.keys.record("r", plain, ["EC'1xx"])
    assert [f.record.id for f in journal.find("orders_100%_o'k.csv")] == [odd]
    assert journal.find("orders_100%") == journal.find("orders_1%_o'k.csv") == []
    assert journal.find("orders_10__o'k.csv") == journal.find("%") == journal.find("_") == []
    assert [f.record.id for f in journal.find("orders_100%*")] == [odd]
    assert journal.find("orders_%*") == journal.find("orders_1_0*.csv") == []
    assert [f.record.id for f in journal.find("orders_100?_*")] == [plain, odd]
    assert [f.record.id for f in journal.find('OUT_"50%"_a.xml')] == [odd]
    assert journal.find('OUT_"5%') == journal.find("OUT_'50%'_a.xml") == []
    assert [f.keys for f in journal.find("EC'1%_")] == [("EC'1%_",)]
    assert journal.find("EC'1%") == journal.find("EC'1__") == journal.find("' OR '1'='1") == []
    bracketed = delivered(journal, key("5" * 64, path="orders_[1].csv"))
    assert [f.record.id for f in journal.find("orders_[1]*")] == [bracketed]
    assert journal.find("orders_[12]*") == []  # ([ ] is no set of characters)
    slashed = delivered(journal, key("4" * 64, path="a\\b_%.csv"))
    assert [f.record.id for f in journal.find("a\\b_%.csv")] == [slashed]
    assert [f.record.id for f in journal.find("a\\b*")] == [slashed]
    assert journal.find("a\\c*") == journal.find("a\\%*") == []


def test_actions_record_who_did_what_to_which_file_and_why(journal: Journal) -> None:
    """An action on files is one row a file (with its route); one on none, a row of its
    own; no reason is recorded as such; find shows a file's actions, oldest first."""
    one = delivered(journal, key("1" * 64, path="a.csv"))
    two = delivered(journal, key("2" * 64, path="b.csv", route="r2"))
    journal.actions.record(
        "reprocess", who="li", reason="partner asked", files=[(one, "r"), (two, "r2")]
    )
    journal.actions.record(
        "quarantine drop", who="li (sudo as xchange)", reason=" ", files=[(two, "r2")]
    )
    journal.actions.record("reload", who="wang", reason=None, detail="/etc/xchange.toml")
    actions = journal.actions.of_files([one, two, 999])
    assert [(a.action, a.who, a.route, a.reason) for a in actions[one]] == [
        ("reprocess", "li", "r", "partner asked")
    ]
    assert [(a.action, a.reason) for a in actions[two]] == [
        ("reprocess", "partner asked"),
        ("quarantine drop", "no reason given"),
    ]
    assert 999 not in actions
    recent = journal.actions.recent(limit=2)
    assert [(a.action, a.file_id, a.detail) for a in recent] == [
        ("reload", None, "/etc/xchange.toml"),
        ("quarantine drop", two, None),
    ]
    assert abs(recent[0].at - datetime.now(UTC)) < timedelta(minutes=1)
    assert journal.actions.recent(since=datetime.now(UTC) + timedelta(hours=1)) == []
    (found,) = journal.find("b.csv")
    assert [a.action for a in found.actions] == ["reprocess", "quarantine drop"]
    assert journal.prune(datetime.now(UTC) + timedelta(seconds=1)) == 2
    assert journal.actions.of_files([one, two]) == {}
    assert [a.action for a in journal.actions.recent()] == ["reload"]


def test_alert_ledger_sends_once_per_window_then_a_digest(journal: Journal) -> None:
    """Within a window one alert per route and cause is sent; held ones go in one digest."""
    first = journal.alerts.window("r", "network", window_s=600, now=T0)
    assert first.send
    for minutes in (1, 2, 3):
        held = journal.alerts.window(
            "r", "network", window_s=600, now=T0 + timedelta(minutes=minutes)
        )
        assert not held.send
    assert journal.alerts.window("r", "validation", window_s=600, now=T0).send
    assert journal.alerts.due_digests(window_s=600, now=T0 + timedelta(minutes=5)) == []
    assert journal.alerts.due_digests(window_s=600, now=T0 + timedelta(minutes=10)) == [
        ("r", "network", 3)
    ]
    assert journal.alerts.due_digests(window_s=600, now=T0 + timedelta(minutes=30)) == []
    # News that recovers from nothing (a repeat stopped) opens nothing to resolve.
    assert journal.alerts.window("r", "repeat", window_s=600, now=T0, opens=False).send
    assert sorted(journal.alerts.resolve("r")) == ["network", "validation"]
    assert journal.alerts.resolve("r") == []


def test_a_missed_deadline_is_recorded_once_and_met_once(journal: Journal) -> None:
    """The first daemon to see a deadline missed alerts; a late arrival is said once."""
    assert journal.deadlines.missed("r", "2026-12-01", T0)
    assert not journal.deadlines.missed("r", "2026-12-01", T0 + timedelta(minutes=1))
    assert not journal.deadlines.met("r", "2026-12-02", T0)  # (never missed)
    assert journal.deadlines.met("r", "2026-12-01", T0 + timedelta(hours=1))
    assert not journal.deadlines.met("r", "2026-12-01", T0 + timedelta(hours=2))
    assert journal.deadlines.missed("r", "2026-12-03", T0 + timedelta(days=2))
    assert journal.deadlines.recent("r") == [
        ("2026-12-03", T0 + timedelta(days=2), None),
        ("2026-12-01", T0, T0 + timedelta(hours=1)),
    ]
    assert journal.deadlines.recent("r", limit=1)[0][0] == "2026-12-03"
    assert journal.deadlines.recent("other") == []


def test_a_schedule_slot_is_taken_once_where_daemons_share_the_journal(journal: Journal) -> None:
    """A journal of one daemon grants every slot; a shared one each slot once."""
    assert journal.slots.take("r", "2026-12-04T02:00")
    assert journal.slots.take("r", "2026-12-04T02:00") is not journal.shared
    assert journal.slots.take("other", "2026-12-04T02:00")


def test_an_episode_is_announced_once_per_episode(journal: Journal) -> None:
    """The end of an episode begun at ``since`` is announced by the first daemon only;
    a later episode is announced again."""
    assert journal.alerts.announce("journal-unavailable", since=T0, now=T0 + timedelta(1))
    assert not journal.alerts.announce("journal-unavailable", since=T0, now=T0 + timedelta(2))
    later = T0 + timedelta(days=3)
    assert journal.alerts.announce("journal-unavailable", since=later, now=later)


def test_reconsider_finds_the_quarantined_files_that_may_heal(journal: Journal) -> None:
    """Judged by other versions, given up on a transient cause long enough ago, or cut
    short while being taken again: found (oldest first, bounded); judged by the versions
    in use, recently given up, delivered, dropped or without a kept copy: not."""

    def quarantined(sha: str, kind: str, mapping: str = "m", copy: bool = True) -> int:
        rec = journal.claim(key(sha=sha * 64), layout_version="l", mapping_version=mapping)
        journal.transition(
            rec.record.id,
            State.QUARANTINED,
            error=(kind, "why"),
            quarantine_path=f"/q/{sha}" if copy else None,
        )
        return rec.record.id

    other_version = quarantined("a", "validation", mapping="old")
    same_version = quarantined("b", "validation")
    transient = quarantined("c", "connection")
    no_copy = quarantined("d", "validation", mapping="old", copy=False)
    cut_short = quarantined("e", "validation")
    journal.transition(cut_short, State.PROCESSING)
    journal.transition(cut_short, State.DELIVERING)
    healed = quarantined("f", "validation", mapping="old")
    for state in (State.PROCESSING, State.DELIVERING, State.DELIVERED):
        journal.transition(healed, state)
    dropped = quarantined("g", "validation", mapping="old")
    journal.transition(dropped, State.DROPPED)
    assert {same_version, no_copy, healed, dropped}.isdisjoint({other_version, transient})

    def found(before: datetime, limit: int = 100) -> list[int]:
        return [
            r.id
            for r in journal.reconsider(
                "r",
                layout_version="l",
                mapping_version="m",
                transient={"connection"},
                transient_before=before,
                limit=limit,
            )
        ]

    now = datetime.now(UTC)
    assert found(now + timedelta(seconds=1)) == [other_version, transient, cut_short]
    assert found(now - timedelta(hours=1)) == [other_version, cut_short]  # given up just now
    assert found(now + timedelta(seconds=1), limit=2) == [other_version, transient]
    assert (
        journal.reconsider(
            "other-route",
            layout_version="l",
            mapping_version="m",
            transient={"connection"},
            transient_before=now,
            limit=10,
        )
        == []
    )


def test_every_state_has_a_row_in_the_transition_table() -> None:
    """The table is complete: each state says where it may go (dropped: nowhere), and
    only processing begins a record."""
    assert set(TRANSITIONS) == {None, *State}
    assert TRANSITIONS[None] == {State.PROCESSING}
    assert TRANSITIONS[State.DROPPED] == {State.PROCESSING}
    for done in DONE_STATES:
        assert State.QUARANTINED not in TRANSITIONS[done]


def test_an_illegal_transition_raises_and_writes_nothing(journal: Journal) -> None:
    """processing -> delivered (skipping delivering), dropped -> delivered: refused with the
    file, the two states and what is allowed; the record and its history unchanged."""
    rec = journal.claim(key(), layout_version="l", mapping_version="m").record
    with pytest.raises(IllegalTransition, match="processing -> delivered") as raised:
        journal.transition(rec.id, State.DELIVERED)
    assert f"#{rec.id}" in str(raised.value) and "delivering" in str(raised.value)
    assert isinstance(raised.value, JournalError) and not raised.value.retryable
    with pytest.raises(IllegalTransition):
        journal.record_steps([Step(rec.id, State.DELIVERING), Step(rec.id, State.ARCHIVED)])
    after = journal.get(rec.id)
    assert after is not None and after.state == State.PROCESSING
    assert [h.to_state for h in journal.history(rec.id)] == ["processing"]
    journal.transition(rec.id, State.DROPPED)
    for state in set(State) - {State.DROPPED, State.PROCESSING}:
        with pytest.raises(IllegalTransition):
            journal.transition(rec.id, state)


def test_a_dropped_content_sent_again_is_taken_again(journal: Journal) -> None:
    """An operator dropped it; the partner sends the same bytes again: a new attempt on
    the same record (judged again, quarantined again if nothing changed)."""
    rec = journal.claim(key(), layout_version="l", mapping_version="m").record
    journal.transition(
        rec.id, State.QUARANTINED, error=("validation", "bad"), quarantine_path="/q/1"
    )
    journal.transition(rec.id, State.DROPPED)
    assert journal.get(rec.id).quarantine_path is None  # (its kept copy is gone)
    again = journal.claim(key(), layout_version="l", mapping_version="m")
    assert not again.already_delivered and again.record.id == rec.id
    assert again.record.state == State.PROCESSING and again.record.attempts == 2


def test_every_legal_path_of_a_file_is_accepted(journal: Journal) -> None:
    """The paths the runner takes: delivered and archived; retried then delivered and
    deleted; quarantined, taken again and delivered; archived, the move taken back, and
    sent again on purpose."""
    paths = [
        [State.DELIVERING, State.DELIVERED, State.ARCHIVED],
        [
            State.DELIVERING,
            State.RETRYING,
            State.PROCESSING,
            State.DELIVERING,
            State.DELIVERED,
            State.DELETED,
        ],
        [State.QUARANTINED, State.PROCESSING, State.DELIVERING, State.DELIVERED],
        [
            State.DELIVERING,
            State.DELIVERED,
            State.ARCHIVED,
            State.DELIVERED,
            State.PROCESSING,
            State.DELIVERING,
            State.DELIVERED,
        ],
        [State.DELIVERING, State.QUARANTINED, State.DROPPED],
    ]
    for i, path in enumerate(paths):
        rec = journal.claim(key(sha=f"{i:064d}"), layout_version="l", mapping_version="m").record
        walk(journal, rec.id, *path)
        done = journal.get(rec.id)
        assert done is not None and done.state == path[-1]


def test_notes_keep_the_state(journal: Journal) -> None:
    """Writing the state a file is in (a note: seen again, due now) is always allowed."""
    rec = journal.claim(key(), layout_version="l", mapping_version="m").record
    walk(journal, rec.id, State.DELIVERING, State.RETRYING)
    journal.transition(rec.id, State.RETRYING, note="due now (by hand)")
    assert journal.history(rec.id)[-1].note == "due now (by hand)"


def test_lookups_find_a_file_by_name_size_and_time(journal: Journal) -> None:
    rec = journal.claim(key(), layout_version="l", mapping_version="m").record
    found = journal.lookup("r", "drop", "orders_1.csv", 10, 123)
    assert found is not None and found.id == rec.id
    assert journal.lookup("r", "drop", "orders_1.csv", 11, 123) is None
    many = journal.lookup_many("r", "drop", [("orders_1.csv", 10, 123), ("x.csv", 1, 1)])
    assert list(many) == [("orders_1.csv", 10, 123)]
    assert journal.find_content("r", "a" * 64) is not None
    # The light look-up gives the newest record's state of each key it has.
    states = journal.states_many("r", "drop", [("orders_1.csv", 10, 123), ("x.csv", 1, 1)])
    assert states == {("orders_1.csv", 10, 123): State.PROCESSING}
    walk(journal, rec.id, State.DELIVERING, State.DELIVERED)
    states = journal.states_many("r", "drop", [("orders_1.csv", 10, 123)])
    assert states == {("orders_1.csv", 10, 123): State.DELIVERED}
    assert journal.states_many("r", "other", [("orders_1.csv", 10, 123)]) == {}
    assert journal.find_content("r", "b" * 64) is None


def test_held_file_observations_are_kept_per_route(journal: Journal) -> None:
    held = [Observation("a.csv", 10, 123, T0, T0, "still being written")]
    journal.observations.save("r", held)
    assert set(journal.observations.held("r")) == {"a.csv"}
    assert journal.observations.held("other") == {}
    journal.observations.save("r", [])
    assert journal.observations.held("r") == {}


@pytest.mark.parametrize("backend", BACKENDS)
def test_bulk_journal_calls_mean_the_same_as_one_call_per_file(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    """claim_many, record_steps and lookup_many give the records, states and history that
    claim, record_output/transition and lookup one by one give."""
    one = open_backend(request, backend, tmp_path / "one")
    bulk = open_backend(request, backend, tmp_path / "bulk")
    keys = [FileKey("r", "e", f"f{i}", i, 10 + i, f"{i:064d}") for i in range(5)]
    versions = {"layout_version": "1", "mapping_version": "1"}
    # One file was seen before and failed; one was delivered already.
    for journal in (one, bulk):
        failed = journal.claim(keys[1], **versions).record
        journal.transition(failed.id, State.RETRYING, error=("connection", "cut"))
        done = journal.claim(keys[3], **versions).record
        journal.transition(done.id, State.DELIVERING)
        journal.transition(done.id, State.DELIVERED)
    singles = [one.claim(k, **versions) for k in keys]
    batched = bulk.claim_many(keys, **versions)

    def shape(c: Claim) -> tuple[object, ...]:
        r = c.record
        return (c.already_delivered, r.id, r.path, r.state, r.attempts, r.sha256)

    assert [shape(c) for c in batched] == [shape(c) for c in singles]
    output = OutputRecord("t", "f0.out", 0, "ab" * 32, datetime.now(UTC))
    for c in singles[:3]:
        if not c.already_delivered:
            one.transition(c.record.id, State.DELIVERING)
            one.record_output(c.record.id, output)
            one.transition(c.record.id, State.DELIVERED)
            one.transition(c.record.id, State.ARCHIVED, archive_path="archive", note="archive")
    steps = []
    for c in batched[:3]:
        if not c.already_delivered:
            steps += [
                Step(c.record.id, State.DELIVERING),
                Step(c.record.id, State.DELIVERED, output=output),
                Step(c.record.id, State.ARCHIVED, "archive", "archive"),
            ]
    bulk.record_steps(steps)
    for a, b in zip(one.query(), bulk.query(), strict=True):
        assert (a.state, a.archive_path, a.error_kind, [o.path for o in a.outputs]) == (
            b.state,
            b.archive_path,
            b.error_kind,
            [o.path for o in b.outputs],
        )
        history_a = [(t.from_state, t.to_state, t.note) for t in one.history(a.id)]
        assert history_a == [(t.from_state, t.to_state, t.note) for t in bulk.history(b.id)]
    wanted = [(k.path, k.size, k.mtime_ns) for k in keys] + [("absent", 1, 1)]
    found = bulk.lookup_many("r", "e", wanted)
    assert sorted(found) == sorted(wanted[:5])
    for k in keys:
        assert (
            found[(k.path, k.size, k.mtime_ns)].id
            == one.lookup("r", "e", k.path, k.size, k.mtime_ns).id
        )  # type: ignore[union-attr]
    one.close()
    bulk.close()
    one.close()
    bulk.close()


def test_counts_and_the_oldest_waiting_file_are_read_without_the_records(
    journal: Journal,
) -> None:
    """count by route, states and time; the oldest record in a state (by first claim)."""
    first = journal.claim(key("1" * 64), layout_version="l", mapping_version="m").record
    walk(journal, first.id, State.DELIVERING, State.RETRYING)
    second = journal.claim(key("2" * 64), layout_version="l", mapping_version="m").record
    walk(journal, second.id, State.DELIVERING, State.RETRYING)
    done = journal.claim(key("3" * 64), layout_version="l", mapping_version="m").record
    walk(journal, done.id, State.DELIVERING, State.DELIVERED)
    journal.claim(key("4" * 64, route="other"), layout_version="l", mapping_version="m")
    assert journal.count() == 4
    assert journal.count(route="r") == 3
    assert journal.count(route="r", states=[State.RETRYING]) == 2
    assert journal.count(route="r", states=DONE_STATES) == 1
    assert journal.count(route="r", since=datetime.now(UTC) + timedelta(hours=1)) == 0
    assert journal.oldest("r", State.RETRYING) == first.created_at
    assert journal.oldest("r", State.QUARANTINED) is None


def test_the_journal_says_who_it_is_and_that_it_is_whole(journal: Journal) -> None:
    """Its id is made once and kept; a healthy journal has nothing wrong; a checkpoint is
    cheap and harmless; a journal of one daemon has no owner, a shared one names it."""
    assert journal.journal_id == journal.journal_id and len(journal.journal_id) == 16
    assert journal.check() == []
    journal.checkpoint(force=True)
    assert (journal.owner is None) is not journal.shared


def test_writes_in_a_batch_are_one_transaction(journal: Journal) -> None:
    """Nothing of a batch that raises is kept; a batch that ends is kept whole."""
    with pytest.raises(RuntimeError), journal.batch():
        journal.claim(key(), layout_version="l", mapping_version="m")
        raise RuntimeError("cut")
    assert journal.query() == []
    with journal.batch():
        one = journal.claim(key(), layout_version="l", mapping_version="m").record
        journal.transition(one.id, State.DELIVERING)
    kept = journal.get(one.id)
    assert kept is not None and kept.state == State.DELIVERING


def test_a_file_claimed_is_confirmed_this_daemons_before_its_rename(journal: Journal) -> None:
    one = journal.claim(key(), layout_version="l", mapping_version="m").record
    journal.confirm(one.id)  # raises LeaseLost where another daemon took it over


def test_a_backup_is_a_journal_or_says_how_to_make_one(journal: Journal, tmp_path: Path) -> None:
    """SQLite copies itself (WAL included); PostgreSQL says to use the server's tools."""
    journal.claim(key(), layout_version="l", mapping_version="m")
    dest = tmp_path / "copy.sqlite"
    if journal.shared:
        with pytest.raises(JournalError, match="pg_dump"):
            journal.backup(dest)
        return
    journal.backup(dest)
    with SQLiteJournal(dest) as copy:
        assert [r.path for r in copy.query()] == ["orders_1.csv"]


def test_the_contract_suite_calls_every_public_member_of_the_journal() -> None:
    """A method a backend offers that no contract test calls is one whose two backends
    may say different things: each is called here (on both)."""
    import ast

    from xchange.journal import ledgers
    from xchange.journal.base import Journal as Protocol

    called = {
        node.attr
        for node in ast.walk(ast.parse(Path(__file__).read_text("utf-8")))
        if isinstance(node, ast.Attribute)
    }
    members = {n for n in dir(Protocol) if not n.startswith("_")} | {
        n for n in Protocol.__annotations__ if not n.startswith("_")
    }
    for ledger in ledgers.Ledger.__subclasses__():
        members |= {n for n, v in vars(ledger).items() if callable(v) and n[0] != "_"}
    assert sorted(members - called) == []
