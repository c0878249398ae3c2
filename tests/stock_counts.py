"""Random WMS stock counts (XML) for the property tests of the XML codec's readings:
mostly lines of the usual shape, some with odd values, others drawn from what a real
export gets wrong."""

from __future__ import annotations

from hypothesis import strategies as st

NS = "urn:example:wms:stockcount:1"

HEADER = (
    "<{p}Header><{p}CountNo>SC20261121001</{p}CountNo>"
    "<{p}Warehouse code='WH-SH-01'>上海仓</{p}Warehouse>"
    "<{p}CountDate>2026-11-21</{p}CountDate></{p}Header>"
)
#: Headers with a problem, or with what no field reads (the usual one is drawn most).
HEADERS = [
    # a count number against its pattern, a missing warehouse code, an impossible date
    "<{p}Header><{p}CountNo>SC2026</{p}CountNo><{p}Warehouse>仓</{p}Warehouse>"
    "<{p}CountDate>2026-11-21</{p}CountDate></{p}Header>",
    "<{p}Header><{p}CountNo>SC20261121001</{p}CountNo><{p}Warehouse code='W'/>"
    "<{p}CountDate>2026-02-30</{p}CountDate></{p}Header>",
    # the count number twice: which one is unclear
    "<{p}Header><{p}CountNo>SC20261121001</{p}CountNo><{p}CountNo>SC20261121002</{p}CountNo>"
    "<{p}Warehouse code='W'>仓</{p}Warehouse><{p}CountDate>2026-11-21</{p}CountDate></{p}Header>",
    "<{p}Header><{p}Warehouse code='W'>仓</{p}Warehouse>"
    "<{p}CountDate>2026-11-21</{p}CountDate></{p}Header>",
    # an element in the header that no field reads; a remark (read by one layout below)
    "<{p}Header><{p}CountNo>SC20261121001</{p}CountNo><{p}Warehouse code='W'>仓</{p}Warehouse>"
    "<{p}CountDate>2026-11-21</{p}CountDate><{p}Counter>张三</{p}Counter></{p}Header>",
    "<{p}Header><{p}CountNo>SC20261121001</{p}CountNo><{p}Warehouse code='W'>仓</{p}Warehouse>"
    "<{p}CountDate>2026-11-21</{p}CountDate><{p}Remark>复盘</{p}Remark></{p}Header>",
]
#: The children of a usual line, in the order the WMS writes them.
USUAL = [
    "<{p}Sku>sku-1</{p}Sku>",
    "<{p}Name> 纯棉T恤 白色 L </{p}Name>",
    "<{p}Batch>B0001</{p}Batch>",
    "<{p}BookQty>12.000</{p}BookQty>",
    "<{p}CountQty>11</{p}CountQty>",
    "<{p}Unit>件</{p}Unit>",
]
#: Children of an unusual line: values of every kind, and what no field reads.
CHILDREN = [
    *USUAL,
    "<{p}Sku></{p}Sku>",
    "<{p}Sku>a<!-- c -->b</{p}Sku>",
    "<{p}Sku><x>1</x></{p}Sku>",
    "<{p}Sku><![CDATA[s<1>]]></{p}Sku>",
    "<{p}Sku>x<![CDATA[y]]>z</{p}Sku>",
    "<{p}Sku a='1'>s</{p}Sku>",
    "<{p}Sku>sku\u200b1</{p}Sku>",
    '<{p}Name>&amp;&lt;,"</{p}Name>',
    "<{p}Name>\n  two\n  lines\n</{p}Name>",
    "<{p}Name>\u3000名\u00a0</{p}Name>",
    "<{p}Name/>",
    "<{p}Batch/>",
    "<{p}Batch>B<?pi x?>1</{p}Batch>",
    "<{p}BookQty>x</{p}BookQty>",
    "<{p}BookQty>1.5</{p}BookQty>",
    "<{p}BookQty>-0</{p}BookQty>",
    "<{p}CountQty>-1</{p}CountQty>",
    "<{p}CountQty> 4 </{p}CountQty>",
    "<{p}Unit xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xsi:nil='false'>件</{p}Unit>",
    "<o:Unit xmlns:o='urn:other'>u</o:Unit>",
    "<{p}Note>n</{p}Note>",
    "<!-- a comment -->",
    "<?pi x?>",
    "stray text",
    "\n      ",
]
ATTRIBUTES = [
    ' no="1"',
    ' no="42"',
    ' no="x"',
    "",
    ' no="1" extra="e"',
    ' no="2" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="t"',
    ' no="3" {p}no="4"',
]
#: Values a line of the usual shape may hold instead of its usual ones: line ends, tabs,
#: wide spaces, quotes, the output's delimiter, characters a reference stands for,
#: invisible characters, values that break the fields' rules.
ODD_VALUES = [
    "\n  two\n  lines\n",
    "a&#13;b",
    "a\tb",
    "\t x \t",
    "\u3000名\u00a0",
    "a,b",
    'a"b',
    "&amp;&lt;&gt;",
    "sku\u200b1",
    "",
    " ",
    "x",
    "-1",
    "1.5",
    "１",
    "007",
    "12.0000",
    "SC2026",
]
#: What may stand between two lines.
BETWEEN = ["", "\n    ", "\n", "<!-- between -->", "<?pi between?>", "<{p}Stray/>", "loose"]


def usual_with(child: str, value: str) -> str:
    """A usual child element holding ``value`` instead."""
    tag = child[1 : child.index(">")]
    return f"<{tag}/>" if not value else f"<{tag}>{value}</{tag}>"


#: Odd texts that break no rule of the text fields (SKU, name, batch).
ODD_TEXTS = [
    "\n  two\n  lines\n",
    "a&#13;b",
    "a&#10;b",
    "a\tb",
    "\t x \t",
    "\u3000名\u00a0",
    "a,b",
    'a"b',
    "&amp;&lt;&gt;",
    " x ",
    "ß",
]


def clean_counts() -> st.SearchStrategy[bytes]:
    """Stock counts of usual lines only, whose text fields are often odd but break no
    rule: whole chunks for the columnar plans to map."""
    return stock_counts(unusual=False, odd=ODD_TEXTS, fields=3)


@st.composite
def stock_counts(
    draw: st.DrawFn,
    trailers: bool = False,
    unusual: bool = True,
    odd: list[str] | None = None,
    fields: int = len(USUAL),
) -> bytes:
    """A GB18030 stock count, mostly of usual lines, in the default namespace or a prefix
    (with ``trailers``, its header is sometimes after its lines, or between them; without
    ``unusual``, every line is of the usual shape). One value in six of a usual line's
    first ``fields`` is one of ``odd`` (by default, any of :data:`ODD_VALUES`)."""
    odd = odd or ODD_VALUES
    prefixed = draw(st.booleans())
    p = "w:" if prefixed else ""
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        if not unusual or draw(st.integers(0, 3)):  # (three in four: a usual line)
            space = draw(st.sampled_from(["", "\n      "]))
            usual = [
                c
                if i >= fields or draw(st.integers(0, 5))
                else usual_with(c, draw(st.sampled_from(odd)))
                for i, c in enumerate(USUAL)
            ]
            children = [space + c for c in usual] + [space[:-2]] if space else usual
            attrs = ATTRIBUTES[draw(st.integers(0, 1))]
        else:
            children = draw(st.lists(st.sampled_from(CHILDREN), max_size=9))
            attrs = draw(st.sampled_from(ATTRIBUTES))
        line = f"<{p}Line{attrs}>" + "".join(children) + f"</{p}Line>"
        lines.append(line.replace("{p}", p) + draw(st.sampled_from(BETWEEN)).replace("{p}", p))
    declare = f'xmlns:w="{NS}"' if prefixed else f'xmlns="{NS}" xmlns:w="{NS}"'
    header = (draw(st.sampled_from(HEADERS)) if draw(st.integers(0, 3)) == 0 else HEADER).replace(
        "{p}", p
    )
    # (with ``trailers``, the header may come after the lines, or between two lists of
    # them: header values are then found only once the parser has read that far)
    where = draw(st.sampled_from(["before", "after", "between"])) if trailers else "before"
    half = len(lines) // 2 if where == "between" else len(lines)
    body = f"<{p}Lines>\n" + "".join(lines[:half]) + f"</{p}Lines>"
    rest = f"<{p}Lines>\n" + "".join(lines[half:]) + f"</{p}Lines>"
    parts = {
        "before": header + body,
        "after": body + header,
        "between": body + header + rest,
    }
    text = (
        f'<?xml version="1.0" encoding="GB18030"?>\n<{p}StockCount {declare}>'
        + parts[where]
        + f"</{p}StockCount>\n"
    )
    return text.encode("gb18030")
