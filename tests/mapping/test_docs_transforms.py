"""docs/transforms-compared.md shows what xchange really does: each xchange example on the page
(its layouts, mapping and input) is converted by `xchange convert`, and the result must be the
output printed under it, byte for byte.

The page marks each block with an HTML comment before its fence:
``<!-- xchange: example-N KIND [FILE] -->``, KIND one of layout, mapping, input, output,
bad-input, report (input and bad-input name the file the block is saved as).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGE = REPO / "docs" / "transforms-compared.md"

BLOCK = re.compile(
    r"^<!-- xchange: (?P<example>example-\d+) (?P<kind>[a-z-]+)(?: (?P<file>\S+))? -->\n"
    r"```[a-z]*\n(?P<text>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


@dataclass
class Example:
    name: str
    layouts: list[str] = field(default_factory=list)
    mapping: str = ""
    input: tuple[str, str] = ("", "")
    output: str = ""
    bad_input: tuple[str, str] | None = None
    report: str = ""


def examples() -> dict[str, Example]:
    found: dict[str, Example] = {}
    for match in BLOCK.finditer(PAGE.read_text(encoding="utf-8")):
        ex = found.setdefault(match["example"], Example(match["example"]))
        kind, text = match["kind"], match["text"]
        if kind == "layout":
            ex.layouts.append(text)
        elif kind == "mapping":
            ex.mapping = text
        elif kind == "input":
            ex.input = (match["file"], text)
        elif kind == "output":
            ex.output = text
        elif kind == "bad-input":
            ex.bad_input = (match["file"], text)
        elif kind == "report":
            ex.report = text
        else:
            raise AssertionError(f"{PAGE.name}: unknown block kind {kind!r} in {ex.name}")
    return found


EXAMPLES = examples()


def convert(ex: Example, tmp_path: Path, source: tuple[str, str]) -> subprocess.CompletedProcess:
    """Run `xchange convert` on ``source`` with the example's layouts and mapping."""
    formats = tmp_path / "formats"
    formats.mkdir(exist_ok=True)
    for text in [*ex.layouts, ex.mapping]:
        name = tomllib.loads(text)["name"]
        (formats / f"{name}.toml").write_text(text, encoding="utf-8")
    mapping = tomllib.loads(ex.mapping)
    config = tmp_path / "xchange.toml"
    config.write_text(
        f"""formats = "formats"
[journal]
path = "var/journal.sqlite"
[quarantine]
path = "var/quarantine"
[endpoints.drop]
type = "local"
path = "var/drop"
[[routes]]
name = "page"
source = {{ endpoint = "drop", pattern = "*" }}
source_layout = "{mapping["source"]}"
mapping = "{mapping["name"]}"
target_layout = "{mapping["target"]}"
target = {{ endpoint = "drop", name = "out" }}
""",
        encoding="utf-8",
    )
    file = tmp_path / source[0]
    file.write_text(source[1], encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "xchange",
            "convert",
            "--config",
            str(config),
            "--route",
            "page",
            str(file),
        ],
        capture_output=True,
        env=env,
        timeout=120,
    )


def test_the_page_has_five_complete_xchange_examples() -> None:
    """Five examples, each with its two layouts, a mapping, an input and an output."""
    assert sorted(EXAMPLES) == [f"example-{n}" for n in range(1, 6)]
    for ex in EXAMPLES.values():
        assert len(ex.layouts) == 2, ex.name
        assert ex.mapping and ex.input[0] and ex.input[1] and ex.output, ex.name


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_example_converts_to_the_output_printed_under_it(name: str, tmp_path: Path) -> None:
    """`xchange convert` on the page's input writes exactly the page's output."""
    ex = EXAMPLES[name]
    result = convert(ex, tmp_path, ex.input)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode("utf-8") == ex.output


def test_the_bad_values_on_the_page_are_reported_as_it_says(tmp_path: Path) -> None:
    """The page's bad file is refused (exit 1), and every problem line it quotes is reported."""
    with_report = [ex for ex in EXAMPLES.values() if ex.bad_input is not None]
    assert with_report, "the page shows no bad input"
    for ex in with_report:
        assert ex.bad_input is not None and ex.report
        folder = tmp_path / ex.name
        folder.mkdir()
        result = convert(ex, folder, ex.bad_input)
        assert result.returncode == 1, result.stdout.decode()
        said = result.stderr.decode("utf-8").splitlines()
        for line in ex.report.splitlines():
            assert line in said, f"{ex.name}: not reported: {line}\n{result.stderr.decode()}"
