"""A policy file read into plain text that still knows where every character came from.

``read_policy`` decodes a file (plain text, Markdown, HTML) and ``parse_policy`` turns its
text into a :class:`Document`: the source as read, a plain text without markup, a map from
every plain character back to its span of the source, the blocks (paragraphs, list items,
headings) and their sentences. The extractor classifies sentences of the plain text and
cites the source: ``Document.source_span`` turns a plain span into the exact source span,
so ``Evidence.text == source_text[start:end]`` holds for HTML and Markdown too.

Sentences follow the rules of the gold labels' reference splitter
(``../shared/importer-gold/validate.py``): a block is split after ``.``, ``!`` or ``?``
(plus closing quotes or brackets) when whitespace and an upper-case letter, digit, opening
quote, bracket or bullet follow, except after ``e.g.``, ``i.e.``, ``Inc.`` and similar.
One difference, on purpose: a paragraph hard-wrapped over several lines is one block here
(the reference splitter makes each line a block), so a sentence is not cut at a line end.
"""

from __future__ import annotations

import codecs
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Final, Literal

Format = Literal["text", "markdown", "html"]
BlockKind = Literal["heading", "paragraph", "list_item"]

SUFFIXES: Final[dict[str, Format]] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
}


class PolicyTextError(ValueError):
    """A policy that cannot be read as text; the message says what and where."""


@dataclass(frozen=True, slots=True)
class Block:
    """A paragraph, list item or heading: ``plain[start:end]``."""

    kind: BlockKind
    start: int
    end: int
    level: int = 0  # heading level 1-6; 0 for other blocks


@dataclass(frozen=True, slots=True)
class Sentence:
    index: int
    start: int  # offsets into Document.plain
    end: int
    text: str
    block: int  # index into Document.blocks
    kind: BlockKind  # the kind of its block
    section: str | None  # the text of the heading it sits under
    lead_in: str | None  # list items: the sentence that introduces the list


@dataclass(frozen=True, slots=True)
class Document:
    source_text: str
    plain: str
    starts: tuple[int, ...]  # source offset where each plain character starts
    ends: tuple[int, ...]  # ... and ends (an HTML entity is one character of several)
    blocks: tuple[Block, ...]
    sentences: tuple[Sentence, ...]
    fmt: Format
    title: str | None = None  # HTML <title>

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """The source span of ``plain[start:end]`` (a non-empty span); a Markdown link
        cut by the span is taken whole (``[text](url)``) so the quote reads right."""
        if not 0 <= start < end <= len(self.plain):
            raise ValueError(f"plain span {start}:{end} outside 0:{len(self.plain)}")
        s, e = self.starts[start], self.ends[end - 1]
        if self.fmt == "html":
            return s, e
        src = self.source_text
        if s > 0 and src[s - 1] == "[" and _deleted_before(self, start):
            s -= 1
        if src.count("[", s, e) > src.count("]", s, e):
            m = _LINK_TAIL.match(src, e)
            if m:
                e = m.end()
        return s, e


def _deleted_before(doc: Document, start: int) -> bool:
    """True when the source character before plain[start] was dropped as markup."""
    return start == 0 or doc.ends[start - 1] < doc.starts[start]


_LINK_TAIL = re.compile(r"[^\[\]\n]*\]\([^)\n]*\)")

# ------------------------------------------------------------------ reading files


def read_policy(path: str | Path, *, encoding: str | None = None) -> tuple[str, Format]:
    """The decoded text of a policy file and its format (from the suffix, else sniffed).

    Raises :class:`PolicyTextError` for a missing file, a directory, a binary file (PDF,
    Word, images, anything with NUL bytes) and bytes that are not in the file's encoding
    (UTF-8 unless a byte-order mark, an HTML ``charset`` or ``encoding`` says otherwise).
    """
    p = Path(path)
    if not p.exists():
        raise PolicyTextError(f"{p}: no such file")
    if p.is_dir():
        raise PolicyTextError(f"{p}: is a directory, not a policy file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PolicyTextError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    text = decode(data, where=str(p), encoding=encoding)
    fmt = SUFFIXES.get(p.suffix.lower()) or sniff_format(text)
    return text, fmt


_BINARY_MAGIC: Final = (
    (b"%PDF-", "a PDF document; export its text first (e.g. pdftotext)"),
    (b"PK\x03\x04", "a ZIP archive (Word .docx, OpenDocument, ...); save it as text or HTML first"),
    (b"\xd0\xcf\x11\xe0", "an OLE document (Word .doc); save it as text or HTML first"),
    (b"{\\rtf", "an RTF document; save it as text or HTML first"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
)
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_DECLARED = re.compile(rb"""(?:charset|encoding)\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)


def decode(data: bytes, *, where: str = "<bytes>", encoding: str | None = None) -> str:
    """Bytes of a policy -> str, or a :class:`PolicyTextError` saying why not."""
    if encoding is not None:
        return _decode_as(data, encoding, where, "given")
    for magic, what in _BINARY_MAGIC:
        if data.startswith(magic):
            raise PolicyTextError(f"{where}: binary file ({what}), not a policy text")
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _decode_as(data, codec, where, "byte-order mark")
    nul = data.find(b"\x00", 0, 65536)
    if nul >= 0:
        raise PolicyTextError(f"{where}: binary file (NUL byte at offset {nul}), not a policy text")
    declared = _DECLARED.search(data[:4096])
    if declared:
        name = declared.group(1).decode("ascii")
        try:
            codecs.lookup(name)
        except LookupError:
            raise PolicyTextError(
                f"{where}: declares the unknown encoding {name!r} (offset {declared.start(1)}); "
                "name the real one (--encoding, or encoding= from Python)"
            ) from None
        return _decode_as(data, name, where, "declared")
    text = _decode_as(data, "utf-8", where, "default")
    controls = sum(1 for ch in text[:65536] if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    if controls > max(8, len(text[:65536]) // 100):
        raise PolicyTextError(f"{where}: binary file ({controls} control characters), not a policy text")
    return text


def _decode_as(data: bytes, codec: str, where: str, why: str) -> str:
    try:
        return data.decode(codec)
    except LookupError:
        raise PolicyTextError(f"{where}: unknown encoding {codec!r}") from None
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        hint = "" if why == "given" else "; name its encoding (--encoding, or encoding= from Python)"
        raise PolicyTextError(
            f"{where}: not valid {codec} ({why}): byte 0x{bad} at offset {exc.start}{hint}"
        ) from None


_HTML_SNIFF = re.compile(r"<(?:!doctype\s+html|html|body|head|p|div|h[1-6]|ul|ol|li|br)\b", re.I)


def sniff_format(text: str) -> Format:
    head = text[:2048].lstrip()
    if head.startswith("<") and _HTML_SNIFF.search(head):
        return "html"
    if len(_HTML_SNIFF.findall(text[:20000])) >= 3:
        return "html"
    return "markdown"


# ------------------------------------------------------------------ building plain text


class _Builder:
    """Plain text with a source span per character, whitespace collapsed, in blocks."""

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.blocks: list[Block] = []
        self._open: tuple[BlockKind, int, int] | None = None  # kind, plain start, level

    def open(self, kind: BlockKind, level: int = 0) -> None:
        self.close()
        if self.chars:
            self._put("\n", self.ends[-1], self.ends[-1])
        self._open = (kind, len(self.chars), level)

    def close(self) -> None:
        if self._open is None:
            return
        kind, start, level = self._open
        self._open = None
        while len(self.chars) > start and self.chars[-1] == " ":
            self._pop()
        if len(self.chars) == start:
            if start and self.chars[-1] == "\n":
                self._pop()
            return
        self.blocks.append(Block(kind, start, len(self.chars), level))

    def set_kind(self, kind: BlockKind, level: int = 0) -> None:
        if self._open is not None:
            self._open = (kind, self._open[1], level)

    @property
    def block_text(self) -> str:
        return "" if self._open is None else "".join(self.chars[self._open[1] :])

    def add(self, ch: str, start: int, end: int) -> None:
        if self._open is None:
            self.open("paragraph")
        assert self._open is not None
        if ch.isspace():
            if len(self.chars) == self._open[1] or self.chars[-1] == " ":
                return
            ch = " "
        self._put(ch, start, end)

    def add_run(self, text: str, start: int) -> None:
        for i, ch in enumerate(text):
            self.add(ch, start + i, start + i + 1)

    def _put(self, ch: str, start: int, end: int) -> None:
        self.chars.append(ch)
        self.starts.append(start)
        self.ends.append(end)

    def _pop(self) -> None:
        self.chars.pop()
        self.starts.pop()
        self.ends.pop()


# Markdown (and the Markdown-ish text that scraped policies are): inline markup dropped.
_MD_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")
# link text may hold an image (a linked logo): the image is dropped, the link with it
_MD_LINK = re.compile(r"\[((?:!\[[^\]\n]*\]\([^)\n]*\)|[^\[\]\n])*)\]\([^)\n]*\)")
_MD_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_MD_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_MD_EM_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_MD_EM_UNDER = re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
_MD_CODE = re.compile(r"`([^`\n]+)`")
_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])")
_MD_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>\n]*)?/?>")

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_BULLET = re.compile(r"^[ \t]*(?:[-*+•·▪●◦‣–]|\(\s*(?:\d{1,3}|[a-zA-Z]|[ivxIVX]{1,5})\s*\))[ \t]+(?=\S)")
_QUOTE = re.compile(r"^[ \t]{0,3}>[ \t]?")
_BOLD_LINE = re.compile(r"^[ \t]*(\*\*|__)(?=\S)([^*_\n]+?)(?<=\S)\1[ \t]*:?[ \t]*$")
_NUMBERED = re.compile(r"^\d{1,2}(?:\.\d{1,2})*\\?\.?\s+\S")
_END_PUNCT = re.compile(r"""[.!?:;]["'”’)\]]*$""")


def _inline_keep(line: str) -> list[bool]:
    """Which characters of a Markdown line are text (True) and which are markup."""
    keep = [True] * len(line)

    def drop(a: int, b: int) -> None:
        for i in range(a, b):
            keep[i] = False

    for m in _MD_IMAGE.finditer(line):
        drop(m.start(), m.end())
    for m in _MD_LINK.finditer(line):
        if not keep[m.start()]:
            continue
        drop(m.start(), m.start(1))
        drop(m.end(1), m.end())
    for m in _MD_AUTOLINK.finditer(line):
        drop(m.start(), m.start(1))
        drop(m.end(1), m.end())
    for m in _MD_TAG.finditer(line):
        drop(m.start(), m.end())
    for m in _MD_CODE.finditer(line):
        drop(m.start(), m.start() + 1)
        drop(m.end() - 1, m.end())
    for m in _MD_ESCAPE.finditer(line):
        drop(m.start(), m.start() + 1)
    for rx in (_MD_STRONG, _MD_EM_STAR, _MD_EM_UNDER):
        for m in rx.finditer(line):
            inner = m.start(2) if rx is _MD_STRONG else m.start(1)
            end = m.end(2) if rx is _MD_STRONG else m.end(1)
            if keep[m.start()] and keep[end]:
                drop(m.start(), inner)
                drop(end, m.end())
    return keep


def _heading_like(text: str) -> bool:
    """A one-line block that reads as a heading: short, and numbered, upper-case or
    Title Case without a closing full stop."""
    words = text.split()
    if not words or len(words) > 12 or text.endswith((",", ";")):
        return False
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    if _NUMBERED.match(text) and len(words) <= 10:
        return True
    if len(letters) >= 4 and all(c.isupper() for c in letters):
        return True
    if text[-1] in ".!:" or not text[0].isupper():
        return False
    small = {"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with"}
    capital = sum(1 for w in words if w[0].isupper() or not w[0].isalpha() or w.lower() in small)
    return capital == len(words) and len(words) <= 8


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(offset, line without its line break), on the line breaks str.splitlines knows."""
    offset = 0
    for raw in text.splitlines(keepends=True):
        stripped = raw.rstrip("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
        yield offset, stripped
        offset += len(raw)


def _build_markdown(source: str) -> _Builder:
    b = _Builder()
    pending: list[tuple[int, str, int]] = []  # one block's lines: (offset, text, column)
    pending_kind: BlockKind = "paragraph"
    pending_level = 0

    def flush() -> None:
        nonlocal pending, pending_kind, pending_level
        if not pending:
            return
        kind = pending_kind
        if kind == "paragraph" and len(pending) == 1:
            off, line, col = pending[0]
            keep = _inline_keep(line[col:])
            visible = "".join(ch for ch, k in zip(line[col:], keep, strict=True) if k).strip()
            if _BOLD_LINE.match(line[col:]) or _heading_like(visible):
                kind = "heading"
        b.open(kind, pending_level if kind == "heading" else 0)
        for off, line, col in pending:
            keep = _inline_keep(line[col:])
            if b.block_text:
                b.add(" ", max(off - 1, 0), off)
            for i, ch in enumerate(line[col:]):
                if keep[i]:
                    b.add(ch, off + col + i, off + col + i + 1)
        b.close()
        pending = []
        pending_kind = "paragraph"
        pending_level = 0

    for off, line in _lines(source):
        col = 0
        q = _QUOTE.match(line)
        while q:  # block quotes: their text counts, the markers do not
            col = q.end()
            q = _QUOTE.match(line, col) if line[col:].lstrip().startswith(">") else None
        body = line[col:]
        if not body.strip():
            flush()
            continue
        if _SETEXT.match(body) and len(pending) == 1 and pending_kind == "paragraph":
            pending_kind, pending_level = "heading", 1 if "=" in body else 2
            flush()
            continue
        if _RULE.match(body):
            flush()
            continue
        atx = _ATX.match(body)
        if atx:
            flush()
            if atx.group(2):
                # the closing hashes are not text: the line is cut after the heading's text
                pending = [(off, line[: col + atx.end(2)], col + atx.start(2))]
                pending_kind, pending_level = "heading", len(atx.group(1))
                flush()
            continue
        bullet = _BULLET.match(body)
        if bullet:
            flush()
            pending = [(off, line, col + bullet.end())]
            pending_kind = "list_item"
            continue
        if pending:
            prev = pending[-1][1].rstrip()
            # a hard-wrapped paragraph continues; a line after a finished sentence or a
            # short line (a heading) starts a new block
            wrapped = not _END_PUNCT.search(prev) and (
                body.lstrip()[:1].islower() or len(prev) - pending[-1][2] >= 50
            )
            if wrapped:
                pending.append((off, line, col + len(body) - len(body.lstrip())))
                continue
            flush()
        pending = [(off, line, col + len(body) - len(body.lstrip()))]
    flush()
    return b


_BLOCK_TAGS: Final = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "caption",
        "center",
        "dd",
        "details",
        "dialog",
        "dir",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hr",
        "html",
        "legend",
        "li",
        "main",
        "menu",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
    ]
)
# scripts and styles are not text; navigation bars and footers wrap the policy, never say it
_SKIP_TAGS: Final = frozenset(
    [
        "script",
        "style",
        "noscript",
        "template",
        "svg",
        "math",
        "head",
        "iframe",
        "object",
        "select",
        "nav",
        "footer",
    ]
)
_VOID_TAGS: Final = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)


class _HTMLReader(HTMLParser):
    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=False)
        self.source = source
        self.b = _Builder()
        self.line_starts = [0] + [i + 1 for i, ch in enumerate(source) if ch == "\n"]
        self.skip = 0
        self.in_title = False
        self.title: list[str] = []
        self.bold = 0
        self.block_all_bold = True
        self.stack: list[str] = []

    def _offset(self) -> int:
        line, col = self.getpos()
        return self.line_starts[line - 1] + col

    def _open(self, kind: BlockKind, level: int = 0) -> None:
        self._close()
        self.b.open(kind, level)
        self.block_all_bold = True

    def _close(self) -> None:
        if self.b._open is not None and self.b.block_text.strip() and self.block_all_bold:
            kind = self.b._open[0]
            if kind == "paragraph":
                self.b.set_kind("heading", 6)
        self.b.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            if tag not in _VOID_TAGS:
                self.skip += 1
            return
        if tag == "title":
            self.in_title = True
            return
        if tag in ("b", "strong"):
            self.bold += 1
        if tag == "br":
            kind = self.b._open[0] if self.b._open else "paragraph"
            self._open(kind if kind != "heading" else "paragraph")
        elif tag in _BLOCK_TAGS:
            if tag[0] == "h" and tag[1:].isdigit():
                self._open("heading", int(tag[1]))
            elif tag == "li":
                self._open("list_item")
            else:
                self._open("paragraph")
        if tag not in _VOID_TAGS:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
            return
        if tag == "title":
            self.in_title = False
            return
        if tag in ("b", "strong"):
            self.bold = max(0, self.bold - 1)
        if tag in _BLOCK_TAGS:
            self._close()

    def _text(self, text: str, start: int, end: int | None = None) -> None:
        if self.in_title:
            self.title.append(text)
            return
        if self.skip:
            return
        if text.strip() and not self.bold:
            self.block_all_bold = False
        if end is None:
            self.b.add_run(text, start)
        else:
            for ch in text:
                self.b.add(ch, start, end)

    def handle_data(self, data: str) -> None:
        self._text(data, self._offset())

    def handle_entityref(self, name: str) -> None:
        self._reference("&" + name)

    def handle_charref(self, name: str) -> None:
        self._reference("&#" + name)

    def _reference(self, ref: str) -> None:
        """``&name`` or ``&#nn``, with or without its ``;`` in the source: the character
        it stands for, spanning the reference as written."""
        start = self._offset()
        raw = ref + ";" if self.source.startswith(ref + ";", start) else ref
        self._text(html.unescape(ref + ";"), start, start + len(raw))


# ------------------------------------------------------------------ sentences

# The reference splitter's boundary and abbreviations (validate.py), a few more added.
_BOUNDARY = re.compile(r"[.!?][\"”’)\]]*\s+(?=[\"“‘(\[•*#A-Z0-9])")
ABBREVIATIONS: Final = frozenset(
    [
        "e.g.",
        "i.e.",
        "inc.",
        "vs.",
        "ltd.",
        "co.",
        "corp.",
        "st.",
        "no.",
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "u.s.",
        "u.k.",
        "approx.",
        "cf.",
        "viz.",
    ]
)


def split_sentences(block: str) -> list[tuple[int, int]]:
    """Sentence spans of one block of whitespace-normalised text."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BOUNDARY.finditer(block):
        end_word = block[: m.start() + 1].rsplit(" ", 1)[-1].lstrip('("“').lower()
        if end_word in ABBREVIATIONS:
            continue
        end = m.end()
        while end > start and block[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
        start = m.end()
    tail_end = len(block.rstrip())
    if tail_end > start:
        spans.append((start, tail_end))
    return spans


def parse_policy(source_text: str, fmt: Format = "markdown") -> Document:
    """The :class:`Document` of a policy's text (``fmt`` "text" reads as Markdown: scraped
    policies carry Markdown links and headings)."""
    title: str | None = None
    if fmt == "html":
        reader = _HTMLReader(source_text)
        reader.feed(source_text)
        reader.close()
        reader._close()
        b = reader.b
        title = " ".join("".join(reader.title).split()) or None
    else:
        b = _build_markdown(source_text)
    b.close()
    plain = "".join(b.chars)
    sentences: list[Sentence] = []
    section: str | None = None
    lead: str | None = None
    for bi, block in enumerate(b.blocks):
        text = plain[block.start : block.end]
        spans = split_sentences(text)
        if block.kind == "heading":
            section = text.strip().rstrip(":")
            lead = None
        for s, e in spans:
            sentences.append(
                Sentence(
                    index=len(sentences),
                    start=block.start + s,
                    end=block.start + e,
                    text=text[s:e],
                    block=bi,
                    kind=block.kind,
                    section=section if block.kind != "heading" else None,
                    lead_in=lead if block.kind == "list_item" else None,
                )
            )
        if block.kind == "paragraph" and spans:
            s, e = spans[-1]
            lead = text[s:e]
    return Document(
        source_text=source_text,
        plain=plain,
        starts=tuple(b.starts),
        ends=tuple(b.ends),
        blocks=tuple(b.blocks),
        sentences=tuple(sentences),
        fmt=fmt,
        title=title,
    )


def load_policy(path: str | Path, *, encoding: str | None = None) -> Document:
    """Read and parse a policy file (see :func:`read_policy` for the errors)."""
    text, fmt = read_policy(path, encoding=encoding)
    return parse_policy(text, fmt)
