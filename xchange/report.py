"""Validation reports: every problem in a file, with place, field, rule and value."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from xchange.errors import REASON_LIMIT, one_line


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule at one place in one file."""

    file: str
    location: str  # "line 7", "record 3", "$.orders[2]", "/Orders/Order[3]"
    field: str
    rule: str  # "required", "type", "pattern", "length", "min", "max", "enum", "unique", ...
    value: str | None
    message: str

    def line(self, limit: int | None = None) -> str:
        """The problem as one line; cut to ``limit`` characters (with "...") if given."""
        shown = "" if self.value is None else f" (value: {self.value!r})"
        where = f"{self.file}: {self.location}"
        text = f"{where}: field {self.field}: {self.rule}: {self.message}{shown}"
        return text if limit is None else _flat(text, limit)


def _flat(text: str, limit: int) -> str:
    """Every line of ``text`` on one line, cut to ``limit`` (``one_line`` keeps the first
    line only: right for a reason, not for a problem whose message has several)."""
    return one_line(" ".join(text.split()), limit)


def _position(problem: Problem) -> int:
    match = re.match(r"line (\d+)", problem.location)
    return int(match.group(1)) if match else 0


@dataclass(slots=True)
class Report:
    """Collects problems up to a cap, and counts the ones beyond it."""

    file: str
    cap: int = 100
    problems: list[Problem] = field(default_factory=list)
    dropped: int = 0
    #: The text encoding the reader used (declared, or detected for ``auto``).
    encoding: str | None = None
    #: What may be wrong but does not stop the file (e.g. text that looks like mojibake).
    warnings: list[str] = field(default_factory=list)
    #: Records and lines the mapping's filters did not keep, by kind ("documents",
    #: "rows", "lines").
    skipped: dict[str, int] = field(default_factory=dict)

    #: Warnings beyond ``cap``, counted (not listed).
    warnings_dropped: int = 0
    #: Problems of input the layout does not read (rule "unknown"): they do not stop a
    #: record's own values from being mapped (and their problems reported).
    unread: int = 0

    def warn(self, message: str) -> None:
        if message in self.warnings:
            return
        if len(self.warnings) < self.cap:
            self.warnings.append(message)
        else:
            self.warnings_dropped += 1

    def add(self, location: str, field_name: str, rule: str, value: Any, message: str) -> None:
        if rule == "unknown":
            self.unread += 1
        if len(self.problems) >= self.cap:
            self.dropped += 1
            return
        shown = None if value is None else str(value)
        if shown is not None and len(shown) > 200:
            shown = shown[:200] + "..."
        self.problems.append(Problem(self.file, location, field_name, rule, shown, message))

    def __bool__(self) -> bool:
        return bool(self.problems)

    @property
    def total(self) -> int:
        return len(self.problems) + self.dropped

    def summary(self) -> str:
        """One line of bounded length: how many problems, and the first."""
        first = self.ordered()[0].line(REASON_LIMIT) if self.problems else ""
        more = f" (+{self.total - 1} more)" if self.total > 1 else ""
        return f"{self.total} problem(s) in {self.file}; first: {first}{more}"

    def ordered(self) -> list[Problem]:
        """Problems in file order (they are found in streaming order)."""
        return sorted(self.problems, key=_position)

    def text(self, limit: int | None = None) -> str:
        """Every problem and warning, one a line (each cut to ``limit`` if given: a
        terminal's view; the report file has them whole)."""
        lines = [p.line(limit) for p in self.ordered()]
        if self.dropped:
            lines.append(f"... and {self.dropped} more problem(s) not listed (cap {self.cap})")
        warnings = (f"{self.file}: warning: {w}" for w in self.warnings)
        lines.extend(w if limit is None else _flat(w, limit) for w in warnings)
        if self.warnings_dropped:
            lines.append(
                f"... and {self.warnings_dropped} more warning(s) not listed (cap {self.cap})"
            )
        return "\n".join(lines)

    def cut(self, limit: int) -> bool:
        """Whether :meth:`text` at ``limit`` leaves anything out."""
        return self.text(limit) != self.text()

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "total": self.total,
            "problems": [asdict(p) for p in self.ordered()],
            "not_listed": self.dropped,
            "warnings": list(self.warnings),
        }
