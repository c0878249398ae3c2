"""The package's shape: each third-party library used from one place, no private name used
across modules, the control plane split by job, no import cycle between its modules."""

from __future__ import annotations

import ast
from pathlib import Path

import xchange

PACKAGE = Path(xchange.__file__).parent

#: library -> the only modules allowed to import it
OWNERS = {
    "paramiko": {"remote/sftp.py"},  # the wire protocol (remote/sftp_wire.py) needs none
    "lxml": {"codecs/xml_codec.py"},
    "pandas": {"codecs/csv_codec.py", "codecs/columnar.py"},  # the CSV codec; the fast path
    "pyarrow": {"codecs/arrow.py"},  # CSV blocks read and mapped as Arrow columns
    "click": {"cli/__init__.py", "cli/main.py", "cli/records.py"},
    "tenacity": {"retry.py"},
    "sqlite3": {"journal/sqlite.py"},
    "psycopg": {"journal/postgres.py"},
    "psycopg_pool": {"journal/postgres.py"},
    "prometheus_client": {"metrics.py"},
    "tomllib": {"config.py", "layout.py"},
    "watchdog": {"watcher.py"},
    "apscheduler": {"daemon.py"},
    "dotenv": {"secrets.py"},
    # Archives in and out: names, links and limits judged in one place.
    # (and a workbook's package of parts, opened with limits of its own by the xlsx codec)
    "zipfile": {"archives.py", "codecs/xlsx_codec.py"},
    "tarfile": {"archives.py"},
    "gzip": {"archives.py"},
}


#: Programs xchange runs -> the only module that runs them (GnuPG: its status lines are
#: read in one place), and config.py for the setting's default.
PROGRAM_OWNERS = {"gpg": {"pgp.py", "config.py"}, "gpgconf": {"pgp.py"}}


def test_each_program_xchange_runs_has_one_home() -> None:
    """gpg and gpgconf are started from xchange/pgp.py alone (no other module names them
    as a program, or imports subprocess for them)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in PROGRAM_OWNERS
                and rel not in PROGRAM_OWNERS[node.value]
            ):
                offenders.append(f"{rel}:{node.lineno} names {node.value}")
    assert offenders == []


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_each_third_party_library_has_one_home() -> None:
    """paramiko, lxml, pandas, click, ... are each imported only by their owning module."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for lib in imported_roots(path) & OWNERS.keys():
            if rel not in OWNERS[lib]:
                offenders.append(f"{rel} imports {lib}")
    assert offenders == []


def test_no_host_key_auto_add_and_no_entity_resolution() -> None:
    """The package never trusts unknown host keys nor resolves XML entities."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    assert "AutoAddPolicy" not in text and "WarningPolicy" not in text
    assert "resolve_entities=True" not in text


#: Private names of other libraries that are their documented API.
FOREIGN_PRIVATE = {("os", "_exit"), ("etree", "_Element")}


def defined_private(tree: ast.Module) -> set[str]:
    """Private names a module defines: functions, classes, methods, module and instance
    attributes (``self._x = ...``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_")}


def test_no_module_uses_a_private_name_of_another() -> None:
    """``from xchange.x import _y`` and ``obj._y`` (where ``_y`` is not this module's own)
    are offences: what another module needs is public, with a docstring."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = defined_private(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xchange"):
                offenders += [
                    f"{rel}:{node.lineno} imports {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                and node.attr not in own
            ):
                base = node.value.id if isinstance(node.value, ast.Name) else ""
                if (base, node.attr) not in FOREIGN_PRIVATE:
                    offenders.append(f"{rel}:{node.lineno} uses {ast.unparse(node)}")
    assert offenders == []


def module_imports(path: Path) -> set[str]:
    """The xchange modules a module imports at its top level (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xchange"):
            found.add(node.module or "")
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("xchange"))
    return found


CONTROL_PLANE = [
    "cli",
    "daemon",
    "runner",
    "scan",
    "healing",
    "batch",
    "transfer",
    "delivery",
    "after",
    "quarantine",
    "sessions",
]


def test_data_flows_one_way_through_the_control_plane() -> None:
    """cli -> daemon -> runner -> {scan, healing, batch} -> transfer -> {delivery, after,
    quarantine} -> {pipeline, remote, journal}: no module imports one before it."""
    order = {name: i for i, name in enumerate(CONTROL_PLANE)}
    backwards = []
    for name in CONTROL_PLANE[1:]:
        path = PACKAGE / f"{name}.py"
        for imported in module_imports(path):
            parts = imported.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if target in order and order[target] < order[name] and target != name:
                backwards.append(f"{name} imports {imported}")
    assert backwards == []


def test_the_runner_only_orders_the_work() -> None:
    """runner.py stays a few hundred lines: each step lives in its own module."""
    lines = (PACKAGE / "runner.py").read_text(encoding="utf-8").count("\n")
    assert lines < 400, f"runner.py has {lines} lines"


def test_the_journals_rules_are_written_once_not_in_a_backend() -> None:
    """Claims, transitions, look-ups and the small ledgers live in journal/sql.py and
    journal/ledgers.py; a backend keeps its connection, migrations and leases only."""
    from xchange.journal.base import Journal

    rules = {n for n in dir(Journal) if not n.startswith("_")} - {
        # What differs by backend: leases, the store, its upkeep.
        "batch",
        "take",
        "confirm",
        "journal_id",
        "checkpoint",
        "check",
        "backup",
        "close",
        "owner",
    }
    for backend in ("journal/sqlite.py", "journal/postgres.py"):
        tree = ast.parse((PACKAGE / backend).read_text(encoding="utf-8"))
        defined = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        assert sorted(defined & rules) == [], backend
        # (nor its SQL: no backend writes a transition or an alert window)
        text = (PACKAGE / backend).read_text(encoding="utf-8")
        assert "INSERT INTO transitions" not in text and "INSERT INTO alerts" not in text


def test_what_a_server_can_do_is_read_from_its_capabilities() -> None:
    """Code that needs a capability asks ``Capabilities``: only the SFTP backend, which
    learns them, touches what it learned of a server (its traits); the metrics read
    sessions through the backends' registry, not a module's global."""
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        reads = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
        }
        if rel != "remote/sftp.py":
            assert "traits" not in reads, rel
    metrics = (PACKAGE / "metrics.py").read_text(encoding="utf-8")
    assert "remote.sftp" not in metrics


def test_no_test_module_imports_another() -> None:
    """Tests share helpers (tests/*.py beside the folders) and fixtures (conftest.py),
    never each other's modules."""
    tests = Path(__file__).parent
    offenders = []
    for path in tests.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[-1].startswith("test_")
            ):
                offenders.append(f"{path.relative_to(tests)} imports {node.module}")
    assert offenders == []


def test_each_kind_of_endpoint_is_declared_once() -> None:
    """config.ENDPOINT_KINDS is the one registry: its configuration model, and the remote
    class that serves it, which can be made from that configuration and counts its
    sessions; no other module keeps a table of endpoint types."""
    import importlib

    from xchange.config import ENDPOINT_KINDS

    for kind, declared in ENDPOINT_KINDS.items():
        module, _, name = declared.remote.partition(":")
        remote = getattr(importlib.import_module(module), name)
        assert callable(remote.from_config) and callable(remote.sessions_opened), kind
        assert declared.model.model_fields["type"].default == kind
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "config.py":
            assert '"local": ' not in text or '"sftp": ' not in text, path


def test_no_class_overrides_a_private_method_of_a_library() -> None:
    """A class built on a library's class (paramiko's SFTP client, say) overrides none of
    its private methods: what xchange needs of the wire it reads itself."""
    import importlib
    import inspect

    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py":
            continue  # (runs the CLI)
        module_name = "xchange." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        module = importlib.import_module(module_name.removesuffix(".__init__"))
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            foreign = [b for b in cls.__mro__[1:] if not b.__module__.startswith("xchange")]
            for name, value in vars(cls).items():
                if not name.startswith("_") or name.startswith("__") or name.endswith("_"):
                    continue  # (public, dunder, or an enum's documented _sunder_ hook)
                if not inspect.isfunction(value):
                    continue  # (what a metaclass sets: _abc_impl, pydantic's)
                if any(name in vars(base) for base in foreign if base is not object):
                    offenders.append(f"{module_name}.{cls.__name__}.{name}")
    assert offenders == []
