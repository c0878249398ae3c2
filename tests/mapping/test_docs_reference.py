"""docs/formats.md cannot rot: its layout and mapping examples load as written, and every
function an expression may call is in it."""

from __future__ import annotations

from tests.conftest import REPO
from xchange.layout import Layout


def test_the_format_reference_examples_are_valid_files() -> None:
    """docs/formats.md's layout and mapping examples load as they are written (every key
    they show exists and has a valid value), so the reference cannot rot."""
    import re
    import tomllib

    from xchange.mapping import Mapping

    text = (REPO / "docs" / "formats.md").read_text(encoding="utf-8")
    (
        layout_block,
        options_block,
        mapping_block,
        expressions_block,
        document_block,
        groups_block,
        group_rules_block,
        totals_block,
        totals_by_block,
        target_manifest_block,
        source_manifest_block,
        *later,
    ) = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if not b.startswith("[xlsx]")]
    layout = tomllib.loads(layout_block)
    # (the CSV example reads rows; its [[line_fields]] are for the nested ones below)
    Layout.model_validate({k: v for k, v in layout.items() if k != "line_fields"})
    options = tomllib.loads(options_block)
    others = {k: v for k, v in layout.items() if k != "csv"}  # [csv] is for CSV layouts
    # ([xml] and [json] show where lines are: for a nested layout)
    others.update(shape="nested")
    Layout.model_validate({**others, "codec": "xml", "xml": options["xml"]})
    Layout.model_validate({**others, "codec": "json", "json": options["json"]})
    base = tomllib.loads(mapping_block)
    Mapping.model_validate(base)
    extra = tomllib.loads(expressions_block)
    Mapping.model_validate(
        {
            **base,
            **{k: v for k, v in extra.items() if k not in ("header", "lines")},
            "header": {**base["header"], **extra["header"]},
            "lines": {**base["lines"], **extra["lines"]},
        }
    )
    document = tomllib.loads(document_block)
    Mapping.model_validate({**base, **document, "lines": {**base["lines"], **document["lines"]}})
    # Groups: a JSON layout's, and the rules of a mapping's group.
    groups = tomllib.loads(groups_block)
    Layout.model_validate({**others, "codec": "json", **groups})
    Mapping.model_validate({**base, **tomllib.loads(group_rules_block)})
    Mapping.model_validate({**base, **tomllib.loads(totals_block)})
    Mapping.model_validate({**base, **tomllib.loads(totals_by_block)})
    from xchange.config import SourceManifest, TargetManifest

    TargetManifest.model_validate(
        tomllib.loads(target_manifest_block)["routes"]["target"]["manifest"]
    )
    SourceManifest.model_validate(
        tomllib.loads(source_manifest_block)["routes"]["source"]["manifest"]
    )
    from xchange.config import PgpConfig, SourcePgp, TargetPgp

    (pgp_block,) = [b for b in later if b.startswith("[pgp]")]
    pgp = tomllib.loads(pgp_block)
    PgpConfig.model_validate(pgp["pgp"])
    SourcePgp.model_validate(pgp["routes"][0]["source"]["pgp"])
    TargetPgp.model_validate(pgp["routes"][0]["target"]["pgp"])
    (xlsx_block,) = [
        b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if b.startswith("[xlsx]")
    ]
    from xchange.layout import XlsxOptions

    XlsxOptions.model_validate(tomllib.loads(xlsx_block)["xlsx"])
    from xchange.config import ArchiveSpec, UnpackSpec

    (unpack_block,) = [b for b in later if b.startswith("[routes.source.unpack]")]
    (archive_block,) = [b for b in later if b.startswith("[routes.target.archive]")]
    UnpackSpec.model_validate(tomllib.loads(unpack_block)["routes"]["source"]["unpack"])
    ArchiveSpec.model_validate(tomllib.loads(archive_block)["routes"]["target"]["archive"])
    from xchange.expressions import functions_reference

    for name in functions_reference():
        assert f"`{name}(" in text, f"{name}() is not in docs/formats.md"
