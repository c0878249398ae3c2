"""Routes converted by the columnar path and by the row path."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from xchange.config import RouteConfig
from xchange.errors import XchangeError
from xchange.pipeline import Pipeline

NOW = datetime(2026, 11, 21, 12, 0)


def route_config(source: str, mapping: str, target: str, name: str) -> RouteConfig:
    """A route of these layouts and mapping (its endpoints are never reached)."""
    return RouteConfig.model_validate(
        {
            "name": "t",
            "source": {"endpoint": "x"},
            "source_layout": source,
            "mapping": mapping,
            "target_layout": target,
            "target": {"endpoint": "y", "name": name},
        }
    )


def fast_and_slow(route: RouteConfig, formats: Path) -> tuple[Pipeline, Pipeline]:
    """The route's pipeline twice: with its columnar plan, and with the row path only."""
    fast, slow = Pipeline(route, formats), Pipeline(route, formats)
    slow._plan = None
    return fast, slow


def outcome(pipeline: Pipeline, data: bytes, name: str = "in.csv") -> object:
    """The outputs (names, bytes, counts), or the error and every problem reported (in
    file order; problems of one line in any order: the paths find them at other times)."""
    try:
        return [(o.name, o.data, o.documents) for o in pipeline.convert(data, name, NOW)]
    except XchangeError as exc:
        report = getattr(exc, "report", None)
        problems = (
            sorted(
                ((p.location, p.field, p.rule, p.value, p.message) for p in report.problems),
                key=lambda p: (int(p[0].split()[1]) if p[0].startswith("line ") else 0, p),
            )
            if report
            else None
        )
        return (type(exc).__name__, problems or str(exc))
