"""Benchmark 14: what a host costs one PostgreSQL journal, and how many hosts it carries.

    python tests/bench/bench_pg_capacity.py [--clients 1,2,4,8,16,32] [--seconds 8]
        [--ways batched,shared,alone] [--rounds 3] [--history 100000] [--files 2000]
        [--parts cost,clients,explain] [--wal-compression off|pglz|lz4|zstd]

PostgreSQL 15 runs durable (fsync, synchronous commit, full page writes), with
pg_stat_statements, track_io_timing and track_wal_io_timing on. Three parts:

cost     What one file costs the server, per file: transactions, statements, server time
         (pg_stat_statements), server CPU (every server process, from /proc), WAL bytes,
         full-page images and fsyncs (pg_stat_wal). First a real daemon: ``run --once`` of
         FILES small files, SFTP drop -> SFTP target (the local sshd), a copy route
         archiving its sources;
         then the journal calls of a file's life in-process, batched (256 files a batch,
         as the daemon's small-file batches) and alone (five transactions a file), each
         right after a checkpoint and again in the same database.
clients  Claims per second one server gives 1, 2, 4, ... concurrent clients: each client a
         process with its own ``PostgresJournal`` (its own connections, leases, renewer),
         looping over the journal calls of whole file lives (claim, delivering, output +
         delivered, archive announced, archived) for SECONDS, the client counts
         alternating, ROUNDS rounds. Three ways: ``batched`` (256 files a batch, each client
         files of its own: hosts sharing the route, not the files), ``shared`` (one folder
         of FOLDER files every client goes round once from its own place, looking up the
         names first, as daemons sharing a drop folder do; each file taken once, checked)
         and ``alone`` (one file's life, five transactions). For each run: files per
         second, the server's CPU and the clients' CPU (cores busy in the window), the whole
         machine's, WAL fsyncs per second, and what the server's backends were doing
         (pg_stat_activity sampled every 20 ms: on the CPU, waiting for the client, or
         waiting on a lock, the WAL, I/O). The commits counted include the sampler's
         read-only queries (about 50 a second).
explain  EXPLAIN (ANALYZE, BUFFERS) of the claim and the hot statements, in a journal
         holding HISTORY delivered files (each run in a transaction rolled back).

The database starts from a template holding HISTORY archived files (their outputs and
five transitions each), so that indexes have the depth of a journal in use.

On a 2-core machine the clients and the server share the cores: the figures that carry
to a dedicated server are the server's CPU per file and its waits, not the files per
second (see RESULTS.md, "How many hosts one PostgreSQL carries").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import ROOT, sshd_server  # type: ignore[import-not-found]

sys.path.insert(0, str(ROOT))

import psycopg

from tests import pg
from tests.procs import xchange_argv, xchange_env
from tests.sftp_routes import endpoint_toml
from xchange.journal import FileKey, OutputRecord, State, Step
from xchange.journal.postgres import PostgresJournal
from xchange.journal.sql import HELD_STATES
from xchange.journal.states import DONE_STATES

BATCH = 256
#: The files of the shared drop folder (the ``shared`` way).
FOLDER = 64 * BATCH
#: Where the shared folder's files are numbered from (apart from every client's own).
SHARED = 10**15
TICKS = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------- the journal calls


def key(n: int) -> FileKey:
    sha = hashlib.sha256(f"file {n}".encode()).hexdigest()
    return FileKey("r", "drop", f"f{n}.dat", 2048, n, sha)


def one_life(journal: PostgresJournal, n: int) -> None:
    """The journal calls of one file taken alone (the daemon's path for a converted or a
    big file): five transactions."""
    k = key(n)
    claim = journal.claim(k, layout_version="l", mapping_version="m")
    fid = claim.record.id
    journal.transition(fid, State.DELIVERING, note=f"f{n}.out")
    output = OutputRecord("inbox", f"f{n}.out", 2048, k.sha256, claim.record.created_at)
    journal.record_steps([Step(fid, State.DELIVERED, output=output)])
    journal.record_steps([Step(fid, State.ARCHIVED, "archive into archive", "archive")])
    journal.record_steps([Step(fid, State.ARCHIVED, f"archive/f{n}.dat", f"archive/f{n}.dat")])


def batched_lives(journal: PostgresJournal, n0: int, count: int) -> None:
    """The journal calls of ``count`` small files taken through as one batch (the daemon's
    small-file batch: claims + delivering, delivered + archive announced, archived)."""
    keys = [key(n) for n in range(n0, n0 + count)]
    with journal.batch():
        claims = journal.claim_many(keys, layout_version="l", mapping_version="m")
        journal.record_steps([Step(c.record.id, State.DELIVERING, "out") for c in claims])
    steps = []
    for c in claims:
        output = OutputRecord("inbox", c.record.path, 2048, c.record.sha256, c.record.created_at)
        steps += [
            Step(c.record.id, State.DELIVERED, output=output),
            Step(c.record.id, State.ARCHIVED, "archive into archive", "archive"),
        ]
    with journal.batch():
        journal.record_steps(steps)
    journal.record_steps(
        [Step(c.record.id, State.ARCHIVED, "moved", f"archive/{c.record.path}") for c in claims]
    )


def shared_chunk(journal: PostgresJournal, n0: int, count: int) -> int:
    """A daemon's batch over a listing other daemons look at too: what the journal knows
    of the names first (files another holds or finished are not read), then the claims
    (a content another daemon took meanwhile is held or delivered), then the lives of the
    files this one got. Returns the files it took through."""
    keys = [key(n) for n in range(n0, n0 + count)]
    known = journal.lookup_many("r", "drop", [(k.path, k.size, k.mtime_ns) for k in keys])
    now = datetime.now(UTC)
    wanted = []
    for k in keys:
        r = known.get((k.path, k.size, k.mtime_ns))
        if r is None or not (
            r.state in DONE_STATES
            or (
                r.owner not in (None, journal.owner)
                and r.lease_until is not None
                and r.lease_until > now
                and str(r.state) in HELD_STATES
            )
        ):
            wanted.append(k)
    if not wanted:
        return 0
    with journal.batch():
        claims = journal.claim_many(wanted, layout_version="l", mapping_version="m")
        claims = [c for c in claims if c.held_by is None and not c.already_delivered]
        journal.record_steps([Step(c.record.id, State.DELIVERING, "out") for c in claims])
    if not claims:
        return 0
    steps = []
    for c in claims:
        output = OutputRecord("inbox", c.record.path, 2048, c.record.sha256, c.record.created_at)
        steps += [
            Step(c.record.id, State.DELIVERED, output=output),
            Step(c.record.id, State.ARCHIVED, "archive into archive", "archive"),
        ]
    with journal.batch():
        journal.record_steps(steps)
    journal.record_steps(
        [Step(c.record.id, State.ARCHIVED, "moved", f"archive/{c.record.path}") for c in claims]
    )
    return len(claims)


# ---------------------------------------------------------------------- the server


def start_server(wal_compression: str = "off") -> pg.PgServer:
    server = pg.start_postgres(durable=True)
    try:
        configure(server, wal_compression)
    except BaseException:
        server.stop("immediate")
        shutil.rmtree(server.base, ignore_errors=True)
        raise
    return server


def configure(server: pg.PgServer, wal_compression: str) -> None:
    for setting in (
        f"wal_compression = '{wal_compression}'",
        "shared_preload_libraries = 'pg_stat_statements'",
        "track_io_timing = on",
        "track_wal_io_timing = on",
        "shared_buffers = '256MB'",
    ):
        server.psql(f"ALTER SYSTEM SET {setting}")
    server.restart()


def connect(server: pg.PgServer, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(server.dsn(database), autocommit=True)


def fill_history(server: pg.PgServer, database: str, history: int) -> None:
    """HISTORY archived files of an earlier host, each with its output and transitions."""
    url = server.url(database)
    PostgresJournal(url, password=server.password).close()  # the schema
    with connect(server, database) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        db.execute(
            "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, layout_version, "
            "mapping_version, state, attempts, archive_path, created_at, updated_at, owner, "
            "lease_until) SELECT 'r', 'drop', 'h' || g || '.dat', 2048, g, "
            "md5('h' || g) || md5('i' || g), 'l', 'm', 'archived', 1, "
            "'archive/h' || g || '.dat', now() - interval '30 days' + g * interval '10 ms', "
            "now() - interval '30 days' + g * interval '10 ms', 'oldhost:1:abcdef', "
            "now() - interval '29 days' FROM generate_series(1, %s) g",
            (history,),
        )
        db.execute(
            "INSERT INTO outputs (file_id, endpoint, path, size, sha256, delivered_at) "
            "SELECT id, 'inbox', 'h' || id || '.out', 2048, sha256, updated_at FROM files"
        )
        db.execute(
            "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
            "SELECT id, updated_at, s.f, s.t, path FROM files, (VALUES (NULL, 'processing'), "
            "('processing', 'delivering'), ('delivering', 'delivered'), "
            "('delivered', 'archived'), ('archived', 'archived')) AS s(f, t)"
        )
        db.execute("VACUUM ANALYZE")


def pg_pids(server: pg.PgServer) -> list[int]:
    """The postmaster and every process it started (backends, WAL writer, ...)."""
    first = (server.data / "postmaster.pid").read_text().split()[0]
    master = int(first)
    pids = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (and of their children that ended)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime (fields 14-17 of the stat line)
        total += sum(int(f) for f in fields[11:15])
    return total / TICKS


def machine_busy() -> tuple[float, float]:
    """Seconds of CPU the whole machine spent busy, and stolen by its hypervisor."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / TICKS, steal / TICKS


class ServerWatch:
    """The server's side of a window: CPU of its processes, WAL, transactions, statements,
    and what its backends were doing (sampled)."""

    def __init__(self, server: pg.PgServer, database: str, sample: float = 0.02) -> None:
        self.server, self.database, self.sample = server, database, sample
        self.db = connect(server, database)
        self.waits: Counter[str] = Counter()
        self._stop = threading.Event()

    def _read(self) -> dict[str, float]:
        wal = self.db.execute(
            "SELECT wal_records, wal_bytes, wal_sync, wal_sync_time, wal_fpi FROM pg_stat_wal"
        ).fetchone()
        assert wal is not None
        xact = self.db.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert xact is not None
        lsn = self.db.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
        assert lsn is not None
        return {
            "wal_written": float(lsn[0]),
            "wal_records": float(wal[0]),
            "wal_bytes": float(wal[1]),
            "wal_sync": float(wal[2]),
            "wal_sync_ms": float(wal[3]),
            "wal_fpi": float(wal[4]),
            "commits": float(xact[0]),
        }

    def _sampler(self) -> None:
        db = connect(self.server, self.database)
        db.execute("SET application_name = 'watch'")
        row = db.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        mine = int(row[0])
        query = (
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend' "
            "AND pid <> pg_backend_pid() AND application_name <> 'watch'"
        )
        while not self._stop.wait(self.sample):
            for state, kind, event in db.execute(query).fetchall():
                if state == "active":
                    what = "on CPU" if kind is None else f"{kind}:{event}"
                elif state == "idle in transaction":
                    what = "idle in transaction (client working)"
                else:
                    what = "idle (client working)"
                self.waits[what] += 1
        self.sampler_cpu = cpu_seconds([mine])  # (taken out of the server's CPU)
        db.close()

    def __enter__(self) -> ServerWatch:
        self.db.execute("SET application_name = 'watch'")
        self.db.execute("SELECT pg_stat_statements_reset()")
        self.db.execute("SELECT pg_stat_reset_shared('wal')")
        self.db.execute("SELECT pg_stat_clear_snapshot()")
        self.pids = pg_pids(self.server)
        self.before = self._read()
        self.cpu0 = cpu_seconds(pg_pids(self.server))
        self.machine0 = machine_busy()
        self.t0 = time.perf_counter()
        self.thread = threading.Thread(target=self._sampler, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        machine = machine_busy()
        self.machine = machine[0] - self.machine0[0]
        self.steal = machine[1] - self.machine0[1]
        self._stop.set()
        self.thread.join()
        self.cpu = cpu_seconds(pg_pids(self.server)) - self.cpu0 - self.sampler_cpu
        self.db.execute("SELECT pg_stat_clear_snapshot()")
        time.sleep(0.6)  # the statistics collector's flush (at most every 500 ms)
        after = self._read()
        self.delta = {k: after[k] - self.before[k] for k in after}
        self.statements = self.db.execute(
            "SELECT calls, total_exec_time, rows, shared_blks_hit, shared_blks_read, "
            "shared_blks_dirtied, wal_bytes, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) "
            "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) AND query NOT LIKE '%%pg_stat%%' "
            "ORDER BY total_exec_time DESC"
        ).fetchall()
        self.db.close()

    def waits_said(self, top: int = 6) -> str:
        total = sum(self.waits.values()) or 1
        return ", ".join(f"{what} {n / total:.0%}" for what, n in self.waits.most_common(top))

    def statements_said(self, files: int, top: int = 8) -> list[str]:
        lines = []
        for calls, ms, rows, hit, read, dirtied, wal, query in self.statements[:top]:
            lines.append(
                f"    {calls / files:6.2f} calls/file {ms / files * 1000:7.1f} us/file "
                f"{ms / max(calls, 1) * 1000:7.1f} us/call rows {rows / max(calls, 1):6.1f} "
                f"blks {(hit + read) / max(calls, 1):6.1f} dirtied {dirtied / files:5.2f}/file "
                f"WAL {int(wal) / files:6.0f} B/file  {query}"
            )
        return lines

    def per_file(self, files: int) -> str:
        d = self.delta
        ms = sum(s[1] for s in self.statements)
        calls = sum(s[0] for s in self.statements)
        return (
            f"{d['commits'] / files:.3f} commits, {calls / files:.2f} statements, "
            f"server time {ms / files * 1000:.0f} us (statements), server CPU "
            f"{self.cpu / files * 1e6:.0f} us, WAL {d['wal_written'] / files:,.0f} B "
            f"({d['wal_records'] / files:.1f} records, {d['wal_fpi'] / files:.2f} full pages), "
            f"{d['wal_sync'] / files:.3f} WAL fsyncs"
        )


# ---------------------------------------------------------------------- part 1: cost


CONFIG = """
[journal]
path = "{state}/journal.sqlite"
url = "{url}"
password_env = "XCHANGE_PG_PASSWORD"

[quarantine]
path = "{state}/quarantine"
{drop}
{target}
[[routes]]
name = "r"
source = {{ endpoint = "drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "inbox", name = "{{source_stem}}.out" }}
after = {{ action = "archive", folder = "archive" }}
ready = {{ settle = 0 }}
"""


def part_cost(server: pg.PgServer, template: str, args: argparse.Namespace) -> None:
    print(f"\n14a. what one file costs the server (history of {args.history:,} files)")
    with sshd_server() as sshd:
        for round_ in range(args.rounds):
            database = clone(server, template)
            work = Path(tempfile.mkdtemp(prefix="xchange-bench-pgcost-"))
            drop = sshd.folder(f"drop-{round_}")
            target = sshd.folder(f"inbox-{round_}")
            for i in range(args.files):
                (drop / f"f{i:05d}.dat").write_bytes(os.urandom(2048))
            config = work / "xchange.toml"
            config.write_text(
                CONFIG.format(
                    state=work,
                    url=server.url(database),
                    drop=endpoint_toml("drop", sshd, drop),
                    target=endpoint_toml("inbox", sshd, target),
                )
            )
            env = xchange_env(XCHANGE_PG_PASSWORD=server.password)
            with ServerWatch(server, database) as watch:
                proc = subprocess.run(
                    xchange_argv(config, "run", "--once"), capture_output=True, env=env
                )
            assert proc.returncode == 0, proc.stderr[-2000:]
            delivered = len([n for n in os.listdir(target) if n.endswith(".out")])
            assert delivered == args.files, delivered
            print(
                f"  daemon, run --once, {args.files:,} files, round {round_ + 1}: "
                f"{watch.per_file(args.files)} per file; {watch.seconds:.2f} s"
            )
            if round_ == 0:
                print("\n".join(watch.statements_said(args.files, top=12)))
            shutil.rmtree(work, ignore_errors=True)
            drop_database(server, database)
    # Each way twice in one database: right after a checkpoint (the clone makes one: each
    # page's first change writes the whole page to the WAL), then again (pages changed
    # since the checkpoint: as between checkpoints on a busy server).
    for how in ("batched", "alone"):
        for round_ in range(args.rounds):
            database = clone(server, template)
            files = args.files if how == "batched" else args.files // 4
            files -= files % BATCH if how == "batched" else 0
            for when, n0 in (("after a checkpoint", 0), ("again", 10**12)):
                journal = PostgresJournal(server.url(database), password=server.password)
                with ServerWatch(server, database) as watch:
                    start = time.perf_counter()
                    if how == "batched":
                        for n in range(n0, n0 + files, BATCH):
                            batched_lives(journal, n, BATCH)
                    else:
                        for n in range(n0, n0 + files):
                            one_life(journal, n)
                    seconds = time.perf_counter() - start
                    journal.close()  # (its server processes end: their statistics flushed)
                print(
                    f"  journal calls, {how}, {files:,} files, {when}, round {round_ + 1}: "
                    f"{watch.per_file(files)} per file; {files / seconds:,.0f} files/s"
                )
                if round_ == 0 and when == "again":
                    print("\n".join(watch.statements_said(files)))
            drop_database(server, database)


# ---------------------------------------------------------------------- part 2: clients


def client_main(argv: list[str]) -> None:
    """One client process: its own journal; waits for 'go <deadline>' on stdin, runs file
    lives until the deadline, prints what it did as JSON."""
    url, password, how, index, count = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    journal = PostgresJournal(url, password=password, pool_size=2)
    n = index * 1_000_000_000
    # Warm: a connection open, the statements planned.
    if how == "alone":
        one_life(journal, n)
        n += 1
    else:
        batched_lives(journal, n, 8)
        n += 8
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    deadline = float(line[1])
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    files, latencies = 0, []
    # Shared: one listing of FOLDER files, each client starting at its own place in it and
    # going round once, as daemons sharing a drop folder do.
    chunks = FOLDER // BATCH
    order = [(index * chunks // count + i) % chunks for i in range(chunks)]
    while time.monotonic() < deadline:
        start = time.monotonic()
        if how == "shared":
            if not order:
                break
            files += shared_chunk(journal, SHARED + order.pop(0) * BATCH, BATCH)
        elif how == "batched":
            batched_lives(journal, n, BATCH)
            n += BATCH
            files += BATCH
        else:
            one_life(journal, n)
            n += 1
            files += 1
        latencies.append(time.monotonic() - start)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"files": files, "cpu": cpu, "latencies": latencies}), flush=True)
    sys.stdin.readline()  # the window is closed: the goodbye is not counted
    journal.close()


def said(proc: subprocess.Popen[str], start: str) -> str:
    """The client's next line starting with ``start`` (its log lines skipped)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(start):
            return line
    raise SystemExit(f"a client ended without saying {start!r}")


def run_clients(
    server: pg.PgServer, database: str, how: str, count: int, seconds: float
) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--client",
                server.url(database),
                server.password,
                how,
                str(i),
                str(count),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(count)
    ]
    for proc in procs:
        said(proc, "ready")
    with ServerWatch(server, database) as watch:
        # The shared way ends when every client has gone round the folder (a minute at most).
        deadline = time.monotonic() + (seconds if how != "shared" else 60)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"go {deadline}\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            results.append(json.loads(said(proc, "{")))
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("bye\n")
        proc.stdin.flush()
    for proc in procs:
        proc.wait(timeout=60)
    files = sum(r["files"] for r in results)
    if how == "shared":
        # Every file of the folder taken through once, by one client or another.
        assert files == FOLDER, (files, FOLDER)
    latencies = sorted(x for r in results for x in r["latencies"])
    return {
        "files": files,
        "seconds": watch.seconds,
        "rate": files / watch.seconds,
        "server_cores": watch.cpu / watch.seconds,
        "machine_cores": watch.machine / watch.seconds,
        "steal_cores": watch.steal / watch.seconds,
        "client_cores": sum(r["cpu"] for r in results) / watch.seconds,
        "server_us_per_file": watch.cpu / max(files, 1) * 1e6,
        "client_us_per_file": sum(r["cpu"] for r in results) / max(files, 1) * 1e6,
        "fsyncs_per_s": watch.delta["wal_sync"] / watch.seconds,
        "fsync_ms": watch.delta["wal_sync_ms"] / max(watch.delta["wal_sync"], 1),
        "commits_per_s": watch.delta["commits"] / watch.seconds,
        "wal_per_file": watch.delta["wal_written"] / max(files, 1),
        "fpi_per_file": watch.delta["wal_fpi"] / max(files, 1),
        "p50": latencies[len(latencies) // 2] if latencies else 0.0,
        "p99": latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        "waits": watch.waits_said(),
        "statements": watch.statements_said(max(files, 1), top=6),
    }


def part_clients(server: pg.PgServer, template: str, args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.clients.split(",")]
    for how in args.ways.split(","):
        runs: dict[int, list[dict[str, Any]]] = {c: [] for c in counts}
        for round_ in range(args.rounds):
            for count in counts:
                database = clone(server, template)
                run = run_clients(server, database, how, count, args.seconds)
                runs[count].append(run)
                drop_database(server, database)
                print(
                    f"  [{how} round {round_ + 1}] {count:>2} clients: {run['rate']:,.0f} files/s, "
                    f"server {run['server_cores']:.2f} cores, clients {run['client_cores']:.2f} "
                    f"cores, the whole machine {run['machine_cores']:.2f} cores (stolen "
                    f"{run['steal_cores']:.2f}); waits: {run['waits']}",
                    flush=True,
                )
        unit = "a file's life" if how == "alone" else f"a batch of {BATCH}"
        print(
            f"\n14b. {how}: concurrent clients on one PostgreSQL (each its own PostgresJournal "
            f"and files), {args.seconds:g} s a run, median (min) of {args.rounds} rounds"
        )
        print(
            "  clients  files/s (min)     commits/s  server cores  client cores  "
            f"server us/file  client us/file  WAL B/file (full pages)  fsyncs/s (ms each)  "
            f"{unit} p50 / p99"
        )
        for count in counts:
            rs = runs[count]

            def med(name: str, rs: list[dict[str, Any]] = rs) -> float:
                return statistics.median(r[name] for r in rs)

            print(
                f"  {count:>7}  {med('rate'):>7,.0f} ({min(r['rate'] for r in rs):>6,.0f})  "
                f"{med('commits_per_s'):>9,.0f}  {med('server_cores'):>12.2f}  "
                f"{med('client_cores'):>12.2f}  {med('machine_cores'):>13.2f}  "
                f"{med('server_us_per_file'):>14.0f}  "
                f"{med('client_us_per_file'):>14.0f}  {med('wal_per_file'):>10,.0f} "
                f"({med('fpi_per_file'):>4.2f})      "
                f"{med('fsyncs_per_s'):>8,.0f} ({med('fsync_ms'):.2f})  "
                f"{med('p50') * 1000:8.1f} / {med('p99') * 1000:.1f} ms"
            )
        for count in counts:
            print(f"  waits, {count} clients (round 1): {runs[count][0]['waits']}")
        top = counts[-1]
        print(f"  statements, {top} clients (round 1), per file:")
        print("\n".join(runs[top][0]["statements"]))


# ---------------------------------------------------------------------- part 3: explain


def part_explain(server: pg.PgServer, template: str, args: argparse.Namespace) -> None:
    database = clone(server, template)
    url = server.url(database)
    journal = PostgresJournal(url, password=server.password)
    # Files in hand: 256 being delivered by this host, as in a batch.
    batched_lives(journal, 0, 2 * BATCH)
    with journal.batch():
        claims = journal.claim_many(
            [key(n) for n in range(10_000, 10_000 + BATCH)],
            layout_version="l",
            mapping_version="m",
        )
        journal.record_steps([Step(c.record.id, State.DELIVERING, "out") for c in claims])
    owner = journal.owner
    some = claims[0].record
    held = key(10_000)
    new = key(99_999_999)
    ids = [c.record.id for c in claims]
    now = datetime.now(UTC)
    paths = [f"h{i}.dat" for i in range(1, 500 * 97, 97)]
    plans: list[tuple[str, str, tuple[Any, ...]]] = [
        (
            "claim, a new content (INSERT ... ON CONFLICT DO NOTHING RETURNING)",
            "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, layout_version, "
            "mapping_version, state, attempts, created_at, updated_at, owner, lease_until) "
            "VALUES (%s,%s,%s,%s,%s,%s,'l','m','processing',1,%s,%s,%s,now()+interval '120 s') "
            "ON CONFLICT (route, sha256) DO NOTHING RETURNING id",
            (
                new.route,
                new.endpoint,
                new.path,
                new.size,
                new.mtime_ns,
                new.sha256,
                now,
                now,
                owner,
            ),
        ),
        (
            "claim, a content the journal holds (the insert that conflicts)",
            "INSERT INTO files (route, endpoint, path, size, mtime_ns, sha256, layout_version, "
            "mapping_version, state, attempts, created_at, updated_at, owner, lease_until) "
            "VALUES (%s,%s,%s,%s,%s,%s,'l','m','processing',1,%s,%s,%s,now()+interval '120 s') "
            "ON CONFLICT (route, sha256) DO NOTHING RETURNING id",
            (
                held.route,
                held.endpoint,
                held.path,
                held.size,
                held.mtime_ns,
                held.sha256,
                now,
                now,
                owner,
            ),
        ),
        (
            "claim again: the row, locked unless another claim holds it",
            "SELECT *, lease_until > now() AS lease_runs FROM files WHERE route=%s AND sha256=%s "
            "FOR UPDATE SKIP LOCKED",
            (held.route, held.sha256),
        ),
        (
            "lookup_many: what the journal knows of 500 listed names",
            "SELECT * FROM files WHERE route=%s AND endpoint=%s AND path = ANY(%s) ORDER BY id",
            ("r", "drop", paths),
        ),
        (
            "record_steps: the states of a batch's files, locked",
            "SELECT id, state FROM files WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (ids,),
        ),
        (
            "record_steps: one file's new state",
            "UPDATE files SET state='delivered', updated_at=now(), next_retry_at=NULL, "
            "archive_path=coalesce(NULL, archive_path) WHERE id=%s",
            (some.id,),
        ),
        (
            "record_steps: a transition",
            "INSERT INTO transitions (file_id, at, from_state, to_state, note) "
            "VALUES (%s, now(), 'delivering', 'delivered', NULL)",
            (some.id,),
        ),
        (
            "record_steps: an output still waiting under the same name, replaced",
            "UPDATE outputs SET pickup='replaced' WHERE endpoint=%s AND path=%s "
            "AND pickup='waiting' AND file_id<>%s",
            ("inbox", some.path, some.id),
        ),
        (
            "record_steps: an output",
            "INSERT INTO outputs (file_id, endpoint, path, size, sha256, delivered_at, pickup) "
            "VALUES (%s, 'inbox', %s, 2048, %s, now(), NULL)",
            (some.id, some.path, some.sha256),
        ),
        (
            "records: the outputs of 256 files",
            "SELECT * FROM outputs WHERE file_id = ANY(%s) ORDER BY id",
            (ids,),
        ),
        (
            "renew_leases: this host's files in hand (every lease / 3)",
            "UPDATE files SET lease_until=now()+interval '120 s' WHERE owner=%s "
            "AND state = ANY(%s)",
            (owner, ["processing", "delivering"]),
        ),
        (
            "renew_leases, a host that delivered the whole history (owner kept on done files)",
            "UPDATE files SET lease_until=now()+interval '120 s' WHERE owner=%s "
            "AND state = ANY(%s)",
            ("oldhost:1:abcdef", ["processing", "delivering"]),
        ),
        (
            "reconsider: files that may heal on a route",
            "SELECT * FROM files WHERE route=%s AND quarantine_path IS NOT NULL AND "
            "state IN ('quarantined', 'processing', 'delivering', 'retrying') ORDER BY id "
            "LIMIT 100",
            ("r",),
        ),
    ]
    print(f"\n14c. EXPLAIN (ANALYZE, BUFFERS), a journal holding {args.history:,} files")
    with connect(server, database) as db:
        for title, sql, params in plans:
            db.execute("BEGIN")
            rows = db.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params).fetchall()
            db.execute("ROLLBACK")
            print(f"\n  -- {title}")
            for (line,) in rows:
                print(f"  {line}")
    journal.close()
    drop_database(server, database)


# ---------------------------------------------------------------------- main


def clone(server: pg.PgServer, template: str) -> str:
    name = f"c_{secrets.token_hex(4)}"
    server.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    return name


def drop_database(server: pg.PgServer, name: str) -> None:
    server.psql(f'DROP DATABASE "{name}" WITH (FORCE)')


def main() -> None:
    if sys.argv[1:2] == ["--client"]:
        client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="1,2,4,8,16,32")
    parser.add_argument("--ways", default="batched,shared,alone")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--parts", default="cost,clients,explain")
    parser.add_argument("--wal-compression", default="off", help="off, pglz, lz4 or zstd")
    args = parser.parse_args()
    server = start_server(args.wal_compression)
    try:
        version = server.psql("SHOW server_version").strip()
        print(
            f"PostgreSQL {version}, durable (fsync, synchronous_commit, full_page_writes on), "
            f"wal_compression {args.wal_compression}; "
            f"{os.cpu_count()} cores shared by the server and its clients"
        )
        server.psql('CREATE DATABASE "hist"')
        start = time.perf_counter()
        fill_history(server, "hist", args.history)
        print(
            f"template: {args.history:,} archived files filled in "
            f"{time.perf_counter() - start:.1f} s"
        )
        parts = args.parts.split(",")
        if "explain" in parts:
            part_explain(server, "hist", args)
        if "cost" in parts:
            part_cost(server, "hist", args)
        if "clients" in parts:
            part_clients(server, "hist", args)
    finally:
        server.stop("immediate")
        shutil.rmtree(server.base, ignore_errors=True)


if __name__ == "__main__":
    main()
