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


#: The benchmark's GBK order export (tests/bench/formats/shop-order-lines.toml): its
#: header, a good row, and edge values of each column.
HEADER = [
    "订单号",
    "下单时间",
    "渠道",
    "收货人",
    "手机",
    "省份",
    "城市",
    "区县",
    "详细地址",
    "商品编码",
    "商品名称",
    "数量",
    "单价",
    "发货仓",
    "买家留言",
]
GOOD = [
    "EC20261121001",
    "2026-11-21 09:15:02",
    "天猫",
    "张三",
    "13800138000",
    "上海市",
    "上海市",
    "浦东新区",
    "世纪大道100号",
    "SKU-1001",
    "T恤",
    "2",
    "59.90",
    "上海仓",
    "",
]

POOLS = [
    [
        "EC20261121001",
        "EC20261121002",
        " EC20261121003 ",
        "EC2026112100",
        "X1",
        "",
        "EC２０２６１１２１００１",  # \d is 0-9 (the invisible characters GBK cannot
        # carry are in test_field_values and test_columnar_xml)
    ],
    [
        "2026-11-21 09:15:02",
        "2026/11/21 11:30",
        "2026/11/21 11:30:05",
        "2026-1-2 3:04:05",
        "2026-11-31 00:00:00",
        "2026-02-29 10:00:00",
        "2024-02-29 23:59:59",
        "0999-01-01 00:00:00",
        "2300-01-01 00:00:00",
        "2026-11-21 24:00:00",
        "2026-11-21 09:15:60",
        "21.11.2026",
        "",
        "2026-11-21  09:15:02",  # whitespace as the format writes it
        "2026-11-21\u300009:15:02",
        "２０２６-11-21 09:15:02",
        "2026-11-21 9:15:02",  # each number its width
        "2026/11/21 1:30",
    ],
    ["天猫", "京东", "官网", "抖音", " 天猫 "],
    [
        "张三",
        " 李 四 ",
        "王" * 60,
        "",
        'O\'Neil, "Jr"',
        "张\x00三",
        "张\x1b三",  # control characters: a problem as invisible ones are
        "Li\x7fSi",
        "\u3000张三",
        "李\u3000四",
    ],
    ["13800138000", "1380013800", "138 0013 8000"],
    ["上海市"],
    ["上海市"],
    ["浦东新区", ""],
    ["世纪大道100号", "天河路385号, 太古汇", "a\nb", "  "],
    ["SKU-1001", "sku-2002", "SK", "SKU_1", "SKU-１００１", "\u3000"],
    ["T恤", "保温杯 500ml"],
    [
        "1",
        "007",
        "+3",
        "0",
        "00",
        "9999",
        "10000",
        "x",
        "１２",
        "-1",
        "9" * 18,
        "1" + "0" * 18,
        "",
        "1_000",
        "1,200",
        "-0",
        "+0",
    ],
    [
        "59.90",
        "1,299.00",
        "0.5",
        ".5",
        "5.",
        "-0",
        "1.999",
        "00.10",
        "99999999",
        "1e3",
        "￥12.30",
        "0.0000001",
        "0.000000",
        "0.00",
        "0.05",
        "10.5",
        "12.30",
        "100.000",
        "123456789012345678.99",
        "",
        "-0.00",
        "-0.000",
        "59.",
        "-.5",
        "+5",
        "1_000",
        "１.５",
        "1,500",
    ],
    ["上海仓", "广州仓", "北京仓", "深圳仓"],
    ["", "请周末送货", "NA", "\u3000", "ＮＡ"],
]
