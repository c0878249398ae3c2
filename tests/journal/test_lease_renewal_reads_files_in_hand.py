"""A daemon's lease renewal (every third of the lease) and its goodbye read the files it
holds, not every file it ever delivered: a daemon keeps its name on the files it
delivered, and a long-lived one delivers millions. Against a real PostgreSQL server."""

from __future__ import annotations

import secrets
import time
from typing import Any

from xchange.journal import FileKey
from xchange.journal.postgres import PostgresJournal

HISTORY = 20_000


def tuples_read(postgres: Any, database: str) -> int:
    """Rows of ``files`` read so far, through its indexes and by whole-table scans."""
    out = postgres.psql(
        "SELECT coalesce(sum(idx_tup_read), 0) + (SELECT coalesce(seq_tup_read, 0) "
        "FROM pg_stat_user_tables WHERE relname = 'files') "
        "FROM pg_stat_user_indexes WHERE relname = 'files'",
        database,
    )
    return int(out.strip())


def test_renewing_leases_reads_the_files_in_hand_not_the_history(postgres: Any) -> None:
    database = f"r_{secrets.token_hex(6)}"
    url = postgres.create_database(database)
    # Autovacuum off for this table: the planner sees it as a daemon just started does
    # (its name, new, in no statistics yet), whenever the server's autovacuum runs.
    journal = PostgresJournal(url, password=postgres.password, lease=600)
    postgres.psql("ALTER TABLE files SET (autovacuum_enabled = false)", database)
    # The history this daemon delivered, written at once (its name kept on each file;
    # the name is the journal's own: host, pid and a token).
    postgres.psql(
        "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, state, attempts, "  # noqa: S608
        "created_at, updated_at, owner, lease_until) SELECT 'r', 'drop', 'h' || g, 1, g, "
        "md5('h' || g) || md5('i' || g), 'archived', 1, now(), now(), "
        f"'{journal.owner}', now() FROM generate_series(1, {HISTORY}) g",
        database,
    )
    for n in range(3):
        key = FileKey("r", "drop", f"f{n}.csv", 10, n, f"{n:064d}")
        assert journal.claim(key, layout_version="l", mapping_version="m").held_by is None
    before = tuples_read(postgres, database)
    assert journal.renew_leases() == 3
    journal.close()  # (goodbye: its files in hand free at once; its statistics flushed)
    read = tuples_read(postgres, database) - before
    deadline = time.monotonic() + 10
    while read == 0 and time.monotonic() < deadline:  # the ended sessions' counts
        time.sleep(0.1)
        read = tuples_read(postgres, database) - before
    assert 0 < read <= 20, f"{read} rows read to renew and free 3 files"
