"""Bytes to text and back, in the encodings legacy systems really use.

**One GB18030 for every route.** GB18030 text is decoded and encoded by one codec,
whatever the route's format: Python's ``gb18030`` codec with the mapping corrected to
GB18030-2022 as the WHATWG Encoding Standard's index has it (Python still maps 20
two-byte codes to private-use code points: the vertical forms U+FE10-FE19, U+9FB4-9FBB,
U+1E3F and U+3000 for A3A0). XML goes through the same codec (see the XML codec), never
through libxml2's own converters, which map 7 of those codes differently again. The
one code this leaves apart from the WHATWG index is the four-byte 81 35 F4 37, read as
U+1E3F (GB18030-2000's code for it) rather than a private-use code point.

**``auto``** is: a byte-order mark (UTF-8, UTF-32, UTF-16: UTF-32's FF FE 00 00 is
looked for before UTF-16's FF FE), UTF-32 or UTF-16 without one (judged from their NUL
bytes, and said so), strict UTF-8, then GB18030 (a superset of GBK and GB2312). GB18030
is tried last because nearly every UTF-8 byte sequence is also valid GB18030: trying it
first would silently garble UTF-8 files.

**A weak guess is a problem, not a choice.** Big5, Shift_JIS, EUC-JP, EUC-KR and EUC-TW
bytes are valid GB18030 too. ``auto`` takes the GB18030 reading only when it is
confident, judged on characters (whatever the file's length):

- each reading's characters are common or not: for GB, GB2312's punctuation rows and
  its level 1 (3755 frequent hanzi) and the level 2 hanzi given names favour; for the
  rivals, Big5 level 1, JIS level 1 with kana, EUC-KR's Hangul (not its hanja);
- a rival reading (Python's codec, strict, holding its script: hanzi, kana, Hangul)
  with fewer uncommon characters than GB's, or as many and more than half of its
  characters frequent in its language (charset-normalizer's tables; for Korean a list
  of about 220 syllables), makes the guess weak;
- so do characters no Chinese text holds in the GB reading (private use, kana,
  Hangul), and rare hanzi (GB2312 level 2, not name ones) making up half of them, two
  at least: what EUC-TW, which Python cannot read, gives;
- and, from 20 CJK characters on, charset-normalizer's reading clearly better than GB
  (lower chaos) when the characters agree (the rival reading has fewer uncommon ones).

A weak guess is a problem naming the candidates ("encoding = auto cannot tell this
file's encoding: it reads as gb18030 or euc-kr (...); set encoding in the layout"): the
layout settles it. Limits: EUC-JP kanji without kana, and EUC-TW made of common
characters, read as GB2312 hanzi row for row and cannot be told apart by characters;
they are read as GB18030.

A **declared** GB encoding is trusted in a tie: only a rival reading of common
characters only against a GB reading with uncommon ones (under 20 CJK characters), or
charset-normalizer's clear verdict as above, is a problem naming the likely encoding.

**Mojibake** (text that went through a wrong decoding and was saved again, such as
``Ã¤Â¸Â­`` for 中 or ``ÍË»õÖÊÁ¿ÎÊÌâ`` for 退货质量问题) is found on lines that hold
Latin-1 characters side by side: by undoing it (the stretch's Latin-1 / Windows-1252
bytes are UTF-8, or are GBK for hanzi and CJK punctuation only, two GB2312 hanzi at
least, from four characters up: genuine accented Latin comes one or two at a time), else
by ftfy's badness measure. The message gives the text it probably was; a warning when
the layout says ``mojibake = "warn"``, a problem when ``"reject"``.
"""

from __future__ import annotations

import codecs
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

from xchange.errors import DecodeError, MappingError
from xchange.report import Report

#: GB18030's byte-order mark (U+FEFF in GB18030), which some Windows tools write.
GB18030_BOM = b"\x84\x31\x95\x33"
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (GB18030_BOM, "gb18030"),
    # UTF-32 first: its little-endian mark FF FE 00 00 starts with UTF-16's FF FE.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# --------------------------------------------------------------------------- GB18030-2022

#: What Python's gb18030 codec gives (private use) -> what GB18030-2022 (WHATWG) says.
_GB_FIXES = {
    0xE5E5: 0x3000,  # A3A0
    0xE78D: 0xFE10,  # A6D9
    0xE78E: 0xFE12,  # A6DA
    0xE78F: 0xFE11,  # A6DB
    0xE790: 0xFE13,  # A6DC
    0xE791: 0xFE14,  # A6DD
    0xE792: 0xFE15,  # A6DE
    0xE793: 0xFE16,  # A6DF
    0xE794: 0xFE17,  # A6EC
    0xE795: 0xFE18,  # A6ED
    0xE796: 0xFE19,  # A6F3
    0xE7C7: 0x1E3F,  # A8BC
    0xE81E: 0x9FB4,  # FE59
    0xE826: 0x9FB5,  # FE61
    0xE82B: 0x9FB6,  # FE66
    0xE82C: 0x9FB7,  # FE67
    0xE832: 0x9FB8,  # FE6D
    0xE843: 0x9FB9,  # FE7E
    0xE854: 0x9FBA,  # FE90
    0xE864: 0x9FBB,  # FEA0
}
_GB_DECODE = dict(_GB_FIXES)
#: Writing: U+3000 stays A1A1 (its own code); the others go back to their two-byte code.
_GB_ENCODE = {new: old for old, new in _GB_FIXES.items() if new != 0x3000}
_GB_DECODED = re.compile("[" + "".join(map(chr, _GB_DECODE)) + "]")
_GB_ENCODED = re.compile("[" + "".join(map(chr, _GB_ENCODE)) + "]")


def _gb_fix(text: str) -> str:
    """Python's reading -> GB18030-2022 (a scan first: the fixes are rare in real text)."""
    return text.translate(_GB_DECODE) if _GB_DECODED.search(text) else text


def _gb_unfix(text: str) -> str:
    return text.translate(_GB_ENCODE) if _GB_ENCODED.search(text) else text


GB18030_CODEC = "xchange_gb18030_2022"


class _GbIncrementalDecoder(codecs.IncrementalDecoder):
    def __init__(self, errors: str = "strict") -> None:
        super().__init__(errors)
        self._inner = codecs.getincrementaldecoder("gb18030")(errors)

    def decode(self, input: ReadableBuffer, final: bool = False) -> str:
        return _gb_fix(str(self._inner.decode(input, final)))

    def reset(self) -> None:
        self._inner.reset()

    def getstate(self) -> tuple[bytes, int]:
        return self._inner.getstate()

    def setstate(self, state: tuple[bytes, int]) -> None:
        self._inner.setstate(state)


class _GbIncrementalEncoder(codecs.IncrementalEncoder):
    def __init__(self, errors: str = "strict") -> None:
        super().__init__(errors)
        self._inner = codecs.getincrementalencoder("gb18030")(errors)

    def encode(self, input: str, final: bool = False) -> bytes:
        return bytes(self._inner.encode(_gb_unfix(input), final))

    def reset(self) -> None:
        self._inner.reset()


def _gb_encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
    return codecs.encode(_gb_unfix(text), "gb18030", errors), len(text)


def _gb_decode(data: ReadableBuffer, errors: str = "strict") -> tuple[str, int]:
    data = bytes(data)
    return _gb_fix(codecs.decode(data, "gb18030", errors)), len(data)


class _GbStreamReader(codecs.StreamReader):
    def decode(self, input: bytes, errors: str = "strict") -> tuple[str, int]:
        # Bytes of an incomplete character at the end are kept for the next read.
        decoder = codecs.getincrementaldecoder("gb18030")(errors)
        text = decoder.decode(bytes(input), False)
        return _gb_fix(str(text)), len(input) - len(decoder.getstate()[0])


class _GbStreamWriter(codecs.StreamWriter):
    def encode(self, input: str, errors: str = "strict") -> tuple[bytes, int]:
        return _gb_encode(input, errors)


def _search(name: str) -> codecs.CodecInfo | None:
    if name.replace("-", "_") != GB18030_CODEC:
        return None
    return codecs.CodecInfo(
        name=GB18030_CODEC,
        encode=_gb_encode,
        decode=_gb_decode,
        incrementalencoder=_GbIncrementalEncoder,
        incrementaldecoder=_GbIncrementalDecoder,
        streamreader=_GbStreamReader,
        streamwriter=_GbStreamWriter,
    )


codecs.register(_search)


def python_codec(encoding: str) -> str:
    """The Python codec that reads and writes ``encoding`` (GB18030 -> GB18030-2022).

    Raises:
        LookupError: an unknown encoding.
    """
    name = codecs.lookup(encoding).name
    return GB18030_CODEC if name == "gb18030" else encoding


_GB_FAMILY = {"gb18030", "gbk", "gb2312", "hz", GB18030_CODEC}


def is_gb(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name in _GB_FAMILY
    except LookupError:
        return False


def decode(data: bytes, encoding: str, origin: str) -> tuple[str, str]:
    """Decode ``data``; return the text and the encoding actually used.

    Raises:
        DecodeError: naming the line and the offending bytes.
    """
    if encoding.lower() == "auto":
        found = resolve_encoding(io.BytesIO(data), encoding, origin)
        return _strict(data, found, origin), found
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and data.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    return _strict(data, encoding, origin), encoding


def _strict(data: bytes, encoding: str, origin: str) -> str:
    try:
        return data.decode(python_codec(encoding))
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise DecodeError(
            f"{origin}: line {line}: bytes {bad} are not valid {encoding} "
            f"(the file is not in the encoding its layout declares{_likely(data[:SAMPLE])})"
        ) from None
    except LookupError:
        raise DecodeError(f"{origin}: unknown encoding {encoding!r}") from None


def encode(text: str, encoding: str, origin: str) -> bytes:
    """Encode for output; a character the target encoding lacks is a mapping error."""
    try:
        return text.encode(python_codec(encoding))
    except UnicodeEncodeError as exc:
        char = exc.object[exc.start : exc.end]
        line = exc.object.count("\n", 0, exc.start) + 1
        raise MappingError(
            f"{origin}: line {line}: character {char!r} (U+{ord(char[0]):04X}) "
            f"cannot be written in {encoding}"
        ) from None


# --------------------------------------------------------------------------- detection

#: How much of a file the encoding checks look at.
SAMPLE = 256 * 1024


def _likely(sample: bytes) -> str:
    """'; it looks like Big5 (Chinese)', from charset-normalizer, or ''."""
    guess = _guess(sample)
    if guess is None:
        return ""
    name, language = guess
    return f"; it looks like {name}" + (f" ({language})" if language else "")


def _guess(sample: bytes) -> tuple[str, str] | None:
    """charset-normalizer's best reading of ``sample``: (encoding, language)."""
    best = _readings(sample)
    return best[0][:2] if best else None


def _readings(sample: bytes) -> list[tuple[str, str, float]]:
    """charset-normalizer's readings of ``sample``, best first: (encoding, language,
    chaos)."""
    import charset_normalizer  # the only place it is used; imported when needed

    out = []
    for match in charset_normalizer.from_bytes(sample):
        language = match.language if match.language and match.language != "Unknown" else ""
        out.append((match.encoding.replace("_", "-"), language, float(match.chaos)))
    return out


def _utf32_without_bom(sample: bytes) -> str | None:
    """'utf-32-le' or 'utf-32-be' when, in every four bytes, the highest one is NUL and
    the next nearly always (text in UTF-32: NUL in 2 or 3 of 4 positions); None
    otherwise."""
    size = len(sample) & ~3
    if size < 8 or b"\x00" not in sample:
        return None
    columns = [sample[i:size:4] for i in range(4)]
    nul = [column.count(0) / len(column) for column in columns]
    for name, top, next_, low in (("utf-32-le", 3, 2, 0), ("utf-32-be", 0, 1, 3)):
        if nul[top] == 1.0 and nul[next_] > 0.9 and nul[low] < 0.05:
            try:
                codecs.decode(sample[:size], name)
            except UnicodeDecodeError:
                return None
            return name
    return None


def _utf16_without_bom(sample: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' when NUL bytes fill one of the two byte positions of
    most characters (ASCII and Latin text in UTF-16); None otherwise."""
    if len(sample) < 8 or b"\x00" not in sample:
        return None
    even, odd = sample[0::2], sample[1::2]
    even_nul, odd_nul = even.count(0) / len(even), odd.count(0) / len(odd)
    for name, zeros, other in (("utf-16-le", odd_nul, even_nul), ("utf-16-be", even_nul, odd_nul)):
        if zeros > 0.3 and other < 0.05:
            try:
                codecs.getincrementaldecoder(name)("strict").decode(sample[: len(sample) & ~1])
            except UnicodeDecodeError:
                return None
            return name
    return None


#: Other East Asian multi-byte encodings whose bytes are valid GB18030 too.
_OTHER_CJK = {
    "big5",
    "big5hkscs",
    "cp950",
    "shift_jis",
    "cp932",
    "shift_jis_2004",
    "shift_jisx0213",
    "euc_jp",
    "euc_jis_2004",
    "euc_jisx0213",
    "euc_kr",
    "cp949",
    "johab",
}


#: The encodings whose two-byte codes GB18030 reads too (a GB guess's rivals), each
#: with the codes of its common characters, (first, last): Big5's symbols and its 5401
#: frequent characters (level 1); Shift_JIS's and EUC-JP's symbols, kana and JIS level
#: 1 kanji; EUC-KR's symbols, jamo and Hangul syllables (its hanja are not common).
_RIVALS: dict[str, tuple[tuple[int, int], ...]] = {
    "big5": ((0xA140, 0xA3BF), (0xA440, 0xC67E)),
    "shift_jis": ((0x8140, 0x84BE), (0x889F, 0x9872)),
    "euc_jp": ((0xA1A1, 0xA8FE), (0xB0A1, 0xCFD3)),
    "euc_kr": ((0xA1A1, 0xA4FE), (0xB0A1, 0xC8FE)),
}
#: What a rival's reading must hold to be text in it at all. EUC-JP needs kana: its
#: kanji read as GB2312 hanzi row for row, so kanji alone cannot be told apart.
_SCRIPT = {
    "big5": re.compile(r"[\u3400-\u9fff]"),
    "shift_jis": re.compile(r"[\u3040-\u30ff\u3400-\u9fff]"),
    "euc_jp": re.compile(r"[\u3040-\u30ff]"),
    "euc_kr": re.compile(r"[\uac00-\ud7a3]"),
}
#: Hangul syllables frequent in Korean text (about 220: particles, endings, common
#: words, surnames and name syllables). Only a tie is judged by them: EUC-KR Hangul
#: reads as GB2312 level 1 hanzi, so a rival EUC-KR reading with no more uncommon
#: characters than the GB one is Korean only when at least half of its Hangul are here
#: (Chinese read as EUC-KR gives Hangul spread over all 2350 of KS X 1001).
_KOREAN = (
    "이다는의에하고가을지기로서한리사도를대시자어인정수아나일으적보여상부전주라구장제성내해게"
    "있만우들소신연무방원경관동문중오면것미위세과화비조마치분국개선생물유간진산교회공실발계학말"
    "모야행명식결요단통바안터표차드본트스데르외입불심거저후운감목알했력건체현품급점업호번량년월"
    "금액합날짜코름객배송격처래였습니까녕울특별남북광역군읍길층김박최강윤임권황류홍양손백허노곽"
    "민엄채천함변염추석설반왕옥육맹탁은편용예봉복태형피두음빈온범좌택영희철숙순혜준재훈"
)


def _frequent(encoding: str) -> frozenset[str]:
    """The characters frequent in the language of ``encoding`` (charset-normalizer's
    frequency tables; Korean: the list above)."""
    if encoding == "euc_kr":
        return frozenset(_KOREAN)
    from charset_normalizer.constant import FREQUENCIES

    return frozenset(FREQUENCIES["Chinese" if encoding == "big5" else "Japanese"])


#: GB's common characters: GB2312's punctuation rows (A1-A3) and its level 1, the 3755
#: frequent hanzi. Its level 2 (3008 rarer hanzi) is where EUC-TW text mostly lands.
_GB_COMMON = ((0xA1A1, 0xA3FE), (0xB0A1, 0xD7F9))
_GB_LEVEL2 = ((0xD8A1, 0xF7FE),)
#: GB2312 level 2 characters that given names favour (琪, 婷, 昊, 梓, ...): common in
#: the customer lists GB files carry, so counted as common too.
_GB_NAMES = frozenset(
    "琪婷雯妍昊睿钰晗萱怡梓璐昕婧瑜琦琛瑾璇琰珂珏芮菁茜倩婕姝娅娴嫣媛岚峥嵘骁煜烨炜焱熠晟晔暄曦"
    "皓翊羿弈奕骐麒麟祺琨珩淼沐泓瀚濠灏鑫淇铮铎恺憬懿昀昱晖昶姣妤姗嫦苓芊芷茗荟蓓薇瑛璋玮珉珑"
    "瑭瑗璨诩琬婵馨宸楠榕骞"
)
#: In a GB reading, characters no Chinese text holds: private use (GBK's user-defined
#: rows, where Big5 and EUC-TW bytes land), kana (Big5's, EUC-JP's) and Hangul.
_FOREIGN = re.compile(r"[\ue000-\uf8ff\u3040-\u30ff\uff66-\uff9f\u3130-\u318f\uac00-\ud7a3]")


def _count_in(chars: Counter[str], encoding: str, codes: tuple[tuple[int, int], ...]) -> int:
    """How many of ``chars`` (with their counts) have a two-byte code in ``codes``."""
    out = 0
    for char, count in chars.items():
        try:
            data = char.encode(encoding)
        except UnicodeEncodeError:
            continue
        code = int.from_bytes(data, "big")
        if len(data) == 2 and any(low <= code <= high for low, high in codes):
            out += count
    return out


class Reading:
    """A reading of a sample in one encoding: its text, how many non-ASCII characters
    it has and how many of them are outside the encoding's common set."""

    def __init__(
        self,
        encoding: str,
        text: str,
        codec: str,
        common: tuple[tuple[int, int], ...],
        also: frozenset[str] = frozenset(),
    ) -> None:
        self.encoding = encoding
        self.text = text
        chars = Counter(c for c in text if c > "\x7f")
        self.chars = chars
        self.total = chars.total()
        others = Counter({c: n for c, n in chars.items() if c not in also})
        self.uncommon = others.total() - _count_in(others, codec, common)
        self.frequent = False  # for rivals: half its script's characters frequent ones

    def excerpt(self) -> str:
        start = next((i for i, c in enumerate(self.text) if c > "\x7f"), 0)
        return repr(self.text[start : start + 12].splitlines()[0])

    def describe(self) -> str:
        return f"as {self.encoding} {self.excerpt()}, {self.uncommon} of {self.total} uncommon"


def _gb_reading(sample: bytes, encoding: str) -> Reading:
    text = codecs.getincrementaldecoder(python_codec(encoding))("replace").decode(sample)
    return Reading(codecs.lookup(encoding).name, text, "gb2312", _GB_COMMON, _GB_NAMES)


def _rival_readings(sample: bytes) -> list[Reading]:
    """The rivals that read ``sample`` strictly and as text in their script."""
    out = []
    for name, common in _RIVALS.items():
        try:
            text = codecs.getincrementaldecoder(name)("strict").decode(sample)
        except UnicodeDecodeError:
            continue
        if _SCRIPT[name].search(text):
            reading = Reading(name.replace("_", "-"), text, name, common)
            script = [c for c in reading.chars if _SCRIPT[name].match(c)]
            frequent = _frequent(name)
            reading.frequent = 2 * sum(reading.chars[c] for c in script if c in frequent) > sum(
                reading.chars[c] for c in script
            )
            out.append(reading)
    return out


#: charset-normalizer's names for the rivals' relatives -> the rival whose common set
#: judges their readings.
_FAMILY = {
    "big5hkscs": "big5",
    "cp950": "big5",
    "cp932": "shift_jis",
    "shift_jis_2004": "shift_jis",
    "shift_jisx0213": "shift_jis",
    "euc_jis_2004": "euc_jp",
    "euc_jisx0213": "euc_jp",
    "cp949": "euc_kr",
    "johab": "euc_kr",
}


def _fewer_uncommon(sample: bytes, name: str, gb: Reading) -> bool:
    """Whether ``sample`` read as ``name`` (a rival or a relative of one) has fewer
    characters outside the rival's common set than the GB reading ``gb``."""
    codec = codecs.lookup(name).name
    base = _FAMILY.get(codec, codec)
    if base not in _RIVALS:
        return True  # no common set to judge by: charset-normalizer's word stands
    text = codecs.getincrementaldecoder(codec)("replace").decode(sample)
    return Reading(name, text, base, _RIVALS[base]).uncommon < gb.uncommon


def _as_good(rival: Reading, gb: Reading) -> bool:
    """A rival reading as good as the GB one: fewer uncommon characters, or as many and
    at least half of its characters frequent in its language."""
    return rival.uncommon < gb.uncommon or (rival.uncommon == gb.uncommon and rival.frequent)


def gb_guess_problem(sample: bytes) -> str | None:
    """Why ``auto`` cannot take the GB18030 reading of ``sample`` with confidence, or
    None. The rule (the module docstring has it in words): a rival reading with no more
    uncommon characters, a character Chinese text does not hold, or rare hanzi making
    up half of them (EUC-TW) are each a problem."""
    gb = _gb_reading(sample, "gb18030")
    if not gb.total:
        return None
    head = "encoding = auto cannot tell this file's encoding: it reads as gb18030"
    tail = "; set encoding in the layout"
    rivals = [r for r in _rival_readings(sample) if _as_good(r, gb)]
    if rivals:
        names = " or ".join(r.encoding for r in rivals)
        facts = "; ".join(r.describe() for r in (gb, *rivals))
        return f"{head} or {names} ({facts}){tail}"
    foreign = "".join(sorted({c for c in gb.chars if _FOREIGN.match(c)}))
    if foreign:
        return (
            f"{head} only with characters Chinese text does not hold ({foreign[:10]!r}: "
            f"kana, Hangul or private use){_likely(sample)}{tail}"
        )
    rare = _count_in(
        Counter({c: n for c, n in gb.chars.items() if c not in _GB_NAMES}), "gb2312", _GB_LEVEL2
    )
    hanzi = sum(n for c, n in gb.chars.items() if "\u3400" <= c <= "\u9fff")
    if rare >= 2 and rare * 2 >= hanzi:
        return (
            f"{head} or EUC-TW ({rare} of its {hanzi} Chinese characters as gb18030 are rare "
            f"ones, GB2312 level 2, as EUC-TW text read as GB gives: {gb.excerpt()}){tail}"
        )
    return None


def _rival_better(sample: bytes, encoding: str) -> str | None:
    """A declared GB encoding: why a rival reads ``sample`` better (all its characters
    common, the GB reading's not), or None."""
    gb = _gb_reading(sample, encoding)
    if not gb.uncommon:
        return None
    rivals = [r for r in _rival_readings(sample) if r.uncommon == 0]
    if not rivals:
        return None
    best = rivals[0]
    return (
        f"the text does not look like Chinese in {encoding} ({gb.describe()}); it looks like "
        f'{best.encoding} ({best.describe()}): set encoding = "{best.encoding}" in the '
        "layout if that is right"
    )


def gb_implausible(sample: bytes, encoding: str) -> str | None:
    """Why text read as ``encoding`` (a GB encoding) does not look like Chinese in it,
    or None. Big5, Shift_JIS, EUC-JP or EUC-KR bytes read as GB18030 are valid, but
    charset-normalizer reads them better as what they are; EUC-TW (which it does not
    know) gives mostly characters outside the common GB2312 set, which real GB text
    keeps to."""
    text = codecs.getincrementaldecoder(python_codec(encoding))("ignore").decode(sample)
    cjk = "".join(re.findall(r"[\u3400-\u9fff\uf900-\ufaff]", text))
    if len(cjk) < 20:
        return _rival_better(sample, encoding)
    rare = cjk.encode("gb2312", errors="replace").count(b"?") / len(cjk)
    readings = _readings(sample)
    if readings and is_gb(readings[0][0]):
        return None
    facts = f"{rare:.0%} of its {len(cjk)} CJK characters are outside the common GB2312 set"
    gb_chaos = min((chaos for name, _, chaos in readings if is_gb(name)), default=1.0)
    if readings and codecs.lookup(readings[0][0]).name in _OTHER_CJK:
        name, language, chaos = readings[0]
        # Only a clearly better reading counts (short or repetitive text reads as
        # several encodings equally well); so does a high share of rare characters, but
        # only among enough different ones (a name like 三喆 written ten times is not
        # Korean).
        # And only when its characters say so too: the reading in that codec has fewer
        # characters outside its common set than the GB reading (charset-normalizer
        # alone reads Chinese names as Shift_JIS-2004 or UHC now and then).
        clearly = gb_chaos - chaos >= 0.05 or (rare > 0.2 and len(set(cjk)) >= 10)
        if clearly and _fewer_uncommon(sample, name, _gb_reading(sample, encoding)):
            return (
                f"the text does not look like Chinese in {encoding} ({facts}); it looks like "
                f'{name}{f" ({language})" if language else ""}: set encoding = "{name}" in '
                "the layout if that is right"
            )
    if rare > 0.5 and len(cjk) >= 50:
        return (
            f"the text does not look like Chinese in {encoding} ({facts}); its encoding "
            "could not be told (EUC-TW, say)"
        )
    return None


class Notes:
    """What reading a file's text found beside its content: problems (the file is not
    what its layout says) and warnings (it may not be)."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def into(self, report: Report) -> None:
        """Hand what was found so far to a report (once: the notes are emptied)."""
        for message in self.problems:
            location, sep, rest = message.partition(": ")
            if sep and location.startswith("line "):
                report.add(location, "(text)", "encoding", None, rest)
            else:
                report.add("file", "(text)", "encoding", None, message)
        for message in self.warnings:
            report.warn(message)
        self.problems.clear()
        self.warnings.clear()


def text_reading(
    stream: BinaryIO,
    encoding: str,
    mojibake: str,
    origin: str,
    report: Report,
    *,
    plausible: bool = True,
) -> tuple[str, Callable[[str, int], None]]:
    """The encoding to read ``stream`` with and the check for its decoded text; what
    either finds goes to ``report`` (the encoding used too). ``plausible`` = False skips
    the check that GB text looks like Chinese (a layout's ``check_text = false``)."""
    notes = Notes()
    used = resolve_encoding(stream, encoding, origin, notes, plausible=plausible)
    report.encoding = used
    notes.into(report)
    mojibake_check = MojibakeCheck(notes, reject=mojibake == "reject")

    def check(text: str, line: int) -> None:
        mojibake_check(text, line)
        notes.into(report)

    return used, check


def resolve_encoding(
    stream: BinaryIO,
    encoding: str,
    origin: str,
    notes: Notes | None = None,
    *,
    plausible: bool = True,
) -> str:
    """The encoding to read ``stream`` with (``auto`` detected by a full strict pass).

    ``notes`` receives what the checks found: UTF-16 without a byte-order mark where
    the layout declares another encoding, GB text that is not plausible Chinese.

    Raises:
        DecodeError: an unknown encoding, or bytes no candidate of ``auto`` can read.
    """
    notes = notes if notes is not None else Notes()
    start = stream.tell()
    sample = stream.read(SAMPLE)
    stream.seek(start)
    head = sample[:4]
    if encoding.lower() != "auto":
        if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and head.startswith(
            codecs.BOM_UTF8
        ):
            return "utf-8-sig"
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise DecodeError(f"{origin}: unknown encoding {encoding!r}") from None
        name = codecs.lookup(encoding).name
        bom = bom_encoding(head)
        if bom == "utf-32" and not name.startswith("utf-32"):
            notes.problems.append(
                f"the file starts with a UTF-32 byte-order mark, not {encoding} as its layout "
                "declares"
            )
            return encoding
        if name.startswith(("utf-16", "utf-32")) or bom:
            return encoding
        utf32 = _utf32_without_bom(sample)
        utf16 = _utf16_without_bom(sample)
        if utf32 is not None:
            notes.problems.append(
                f"the file looks like {utf32.upper()} without a byte-order mark (NUL bytes in "
                f"three of every four), not {encoding} as its layout declares"
            )
        elif utf16 is not None:
            notes.problems.append(
                f"the file looks like {utf16.upper()} without a byte-order mark (NUL bytes in "
                f"every other byte), not {encoding} as its layout declares"
            )
        elif plausible and is_gb(encoding) and (why := gb_implausible(sample, encoding)):
            notes.problems.append(why)
        return encoding
    found = bom_encoding(head)
    if found:
        return found
    utf32 = _utf32_without_bom(sample)
    if utf32 is not None:
        notes.warnings.append(
            f"read as {utf32.upper()}: the file has no byte-order mark; its NUL bytes say so"
        )
        return utf32
    utf16 = _utf16_without_bom(sample)
    if utf16 is not None:
        notes.warnings.append(
            f"read as {utf16.upper()}: the file has no byte-order mark; its NUL bytes say so"
        )
        return utf16
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        while chunk := stream.read(CHUNK):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    finally:
        stream.seek(start)
    try:
        codecs.getincrementaldecoder(GB18030_CODEC)("strict").decode(sample, final=False)
    except UnicodeDecodeError:
        raise DecodeError(
            f"{origin}: encoding = auto: the file is neither UTF-8 nor GB18030"
            f"{_likely(sample)}; set the layout's encoding"
        ) from None
    if plausible:
        if why := gb_implausible(sample, "gb18030"):
            notes.problems.append(
                f"encoding = auto cannot tell this file's encoding: it read the file as "
                f"gb18030, but {why}"
            )
        elif why := gb_guess_problem(sample):
            notes.problems.append(why)
    return "gb18030"


#: Two Latin-1 characters side by side: where mojibake of UTF-8 or GBK shows.
#: Two Latin-1 characters in a row: where the mojibake check starts looking.
LATIN_PAIR = re.compile(r"[\u0080-\u00ff][\u0080-\u00ff\u0152-\u02dc\u2013-\u2122]")

#: Each character that reading a byte 80-FF as Latin-1 or Windows-1252 gives -> the byte.
_HIGH_BYTE = {chr(b): b for b in range(0x80, 0x100)} | {
    bytes([b]).decode("cp1252"): b
    for b in range(0x80, 0xA0)
    if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
}
_HIGH_RUN = re.compile("[" + re.escape("".join(_HIGH_BYTE)) + "]{2,}")
#: What GBK mojibake decodes back to: hanzi and CJK punctuation (GB2312 rows A1, A3).
_CJK_TEXT = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff01-\uff5e\u2014-\u2026\u00b7]+")


def _undo(piece: str) -> tuple[str, str, str] | None:
    """The mojibake in ``piece`` undone: (the garbled stretch, the text it was, what
    the text was encoded in), or None. GBK: a stretch of four or more Latin-1 / 1252
    characters whose bytes are GBK for hanzi and CJK punctuation only, two GB2312 hanzi
    at least (genuine Latin text has its accented letters one or two at a time).
    UTF-8: a stretch whose bytes are valid UTF-8 for characters beyond ASCII."""
    for match in _HIGH_RUN.finditer(piece):
        run = match.group()
        data = bytes(_HIGH_BYTE[c] for c in run)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return run, text, "UTF-8"
        if len(run) < 4:
            continue
        try:
            text = data.decode("gbk")
        except UnicodeDecodeError:
            continue
        hanzi = sum(1 for c in text if _count_in(Counter(c), "gb2312", ((0xB0A1, 0xF7FE),)))
        if _CJK_TEXT.fullmatch(text) and hanzi >= 2:
            return run, text, "GBK"
    return None


class MojibakeCheck:
    """Looks at decoded text for mojibake, line by line, where Latin-1 pairs appear:
    UTF-8 or GBK bytes read as Latin-1 (or Windows-1252) and saved again, found by
    undoing it (see ``_undo``) or by ftfy's badness measure."""

    LIMIT = 3

    def __init__(self, notes: Notes, reject: bool) -> None:
        self.notes = notes
        self.reject = reject
        self.found = 0

    def __call__(self, text: str, line: int) -> None:
        """``text`` starts on ``line``."""
        if self.found >= self.LIMIT or LATIN_PAIR.search(text) is None:
            return
        from ftfy import badness, fix_text  # the only place ftfy is used

        for offset, piece in enumerate(text.splitlines()):
            if LATIN_PAIR.search(piece) is None:
                continue
            undone = _undo(piece)
            if undone is not None:
                around, fixed, original = undone
                around, fixed = around[:24], fixed[:12]
            elif badness.is_bad(piece):
                snippet = LATIN_PAIR.search(piece)
                assert snippet is not None
                around = piece[max(0, snippet.start() - 4) : snippet.start() + 16]
                fixed, original = fix_text(around), "UTF-8 or GBK"
            else:
                continue
            self.found += 1
            guess = f" (probably {fixed!r})" if fixed != around else ""
            message = (
                f"line {line + offset}: the text looks double-encoded (mojibake): "
                f"{around!r}{guess}; the exporting system read {original} as Latin-1 and "
                "saved it again"
            )
            (self.notes.problems if self.reject else self.notes.warnings).append(message)
            if self.found >= self.LIMIT:
                return


CHUNK = 1 << 20


def bom_encoding(head: bytes) -> str | None:
    """The encoding a byte-order mark at the start of ``head`` says (None: no mark);
    UTF-32's mark is looked for before UTF-16's, which it starts with."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return None


def decoded_chunks(
    stream: BinaryIO,
    encoding: str,
    origin: str,
    check: Callable[[str, int], None] | None = None,
) -> Iterator[str]:
    """Decode a stream strictly, chunk by chunk; an error names its line. ``check`` is
    given each decoded chunk and the line it starts on.

    Raises:
        DecodeError: bytes that are not valid in ``encoding``.
    """
    decoder = codecs.getincrementaldecoder(python_codec(encoding))("strict")
    lines_before = 0
    first = b""
    fresh = True
    while True:
        chunk = stream.read(CHUNK)
        if not first:
            first = chunk[:SAMPLE]
        final = not chunk
        try:
            text = decoder.decode(chunk, final=final)
        except UnicodeDecodeError as exc:
            # exc.object is this chunk, preceded by any bytes the decoder held back
            # (an incomplete character, so never a newline): count lines up to the error.
            line = lines_before + exc.object.count(b"\n", 0, exc.start) + 1
            bad = exc.object[exc.start : exc.end].hex(" ")
            raise DecodeError(
                f"{origin}: line {line}: bytes {bad} are not valid {encoding} "
                f"(the file is not in the encoding its layout declares{_likely(first)})"
            ) from None
        if fresh and text:
            fresh = False
            if text.startswith("\ufeff") and is_gb(encoding):
                text = text[1:]  # GB18030's byte-order mark, not text
        if check is not None and text:
            check(text, lines_before + 1)
        lines_before += text.count("\n")
        if text:
            yield text
        if final:
            return


class Encoder:
    """Incremental encoding for output (a BOM, if any, only once)."""

    def __init__(self, encoding: str, origin: str) -> None:
        self._enc = codecs.getincrementalencoder(python_codec(encoding))("strict")
        self.encoding = encoding
        self.origin = origin

    def __call__(self, text: str, final: bool = False) -> bytes:
        try:
            return bytes(self._enc.encode(text, final))
        except UnicodeEncodeError:
            # Locate the character with the one-shot encoder for a precise message.
            encode(text, self.encoding.replace("-sig", ""), self.origin)
            raise  # pragma: no cover - encode() raised already


#: The longest line read (CSV, NDJSON): a runaway line is refused, not held in memory.
MAX_LINE = 16 * 1024 * 1024


def split_lines(chunks: Iterable[str], origin: str = "") -> Iterator[str]:
    """Split decoded text into lines the way ``open(newline="")`` does (ends kept).

    Raises:
        DecodeError: a line longer than ``MAX_LINE`` characters.
    """
    pieces: list[str] = []  # the line in progress, kept in pieces (no quadratic copying)
    pending = 0
    count = 0
    for chunk in chunks:
        if "\n" not in chunk and "\r" not in chunk and not (pieces and pieces[-1].endswith("\r")):
            pieces.append(chunk)
            pending += len(chunk)
            if pending > MAX_LINE:
                raise DecodeError(
                    f"{origin}: line {count + 1} is longer than {MAX_LINE // (1024 * 1024)} MiB;"
                    " refused (a runaway field or a file without line breaks)"
                )
            continue
        pieces.append(chunk)
        lines = io.StringIO("".join(pieces), newline="").readlines()
        pieces, pending = [], 0
        rest = lines.pop() if lines else ""
        if rest.endswith("\n"):
            lines.append(rest)
        elif rest:
            # An incomplete last line, or one ending in "\r" that may be half of "\r\n".
            pieces, pending = [rest], len(rest)
        count += len(lines)
        yield from lines
    if pieces:
        yield "".join(pieces)
