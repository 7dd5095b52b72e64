"""Sanitizer for every message that reaches the model.

Rules, in order (each reports an action name when it changed something):
  invalid_unicode_removed     lone surrogates and Unicode non-characters dropped
  unicode_normalized          NFKC normalization
  control_characters_removed  C0/C1 controls dropped (newline and tab kept, CRLF -> LF)
  invisible_characters_removed zero-width, bidi-override and tag characters dropped
                              (a zero-width joiner inside an emoji sequence is kept)
  markup_stripped             HTML/XML tags removed with bleach (script/style bodies too);
                              text inside Markdown code spans and fences is left alone
  whitespace_collapsed        runs of blank lines or spaces that serve no reader
  control_tokens_removed      strings that spell a special token of the model's vocabulary

The prompt builder additionally tokenizes user text with special-token parsing off, so even
a string this list does not know cannot become a control token.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import bleach

_Rule = Callable[[str], str]

# Control tokens of the common chat templates; the loaded model's own vocabulary is added.
DEFAULT_CONTROL_TOKENS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<s>",
    "</s>",
    "<start_of_turn>",
    "<end_of_turn>",
)

_CODE_SEGMENT = re.compile(r"(```.*?(?:```|\Z)|`[^`\n]+`)", re.DOTALL)
_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b[^>]*>.*?(</\1\s*>|\Z)", re.IGNORECASE | re.DOTALL)
# Only real HTML elements count as markup: `git checkout <branch>` or `Vec<T>` are honest text.
HTML_ELEMENTS = frozenset(
    "a abbr address area article aside audio b base bdi bdo blockquote body br button canvas "
    "caption cite code col colgroup data datalist dd del details dfn dialog div dl dt em embed "
    "fieldset figcaption figure font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hr "
    "html i iframe img input ins kbd label legend li link main map mark marquee math menu meta "
    "meter nav noscript object ol optgroup option output p param picture pre progress q rp rt "
    "ruby s samp script section select slot small source span strong style sub summary sup svg "
    "table tbody td template textarea tfoot th thead time title tr track u ul var video wbr".split()
)
_TAG_OPEN = re.compile(r"<(?:!--|/?([A-Za-z][A-Za-z0-9-]*)(?=[\s/>]))")
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*){3,}")
_LONG_SPACES = re.compile(r"[ \t]{33,}")

_INVISIBLE = frozenset(
    [
        *(0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0),
        *range(0x200B, 0x2010),  # zero-width space/joiners, LRM/RLM
        *range(0x202A, 0x202F),  # bidi embeddings and overrides
        *range(0x2060, 0x2070),  # word joiner, invisible operators, bidi isolates
        *range(0xE0000, 0xE0080),  # tag characters (invisible "ASCII smuggling")
        *range(0xFFF9, 0xFFFC),  # interlinear annotations
    ]
)
_ZWJ = 0x200D


def _is_markup(match: re.Match[str]) -> bool:
    name = match.group(1)
    return name is None or name.lower() in HTML_ELEMENTS


class SanitizationError(ValueError):
    """The text cannot be sent to the model (empty after cleaning, or over a limit)."""


@dataclass(frozen=True, slots=True)
class SanitizedText:
    """Clean text and the names of the rules that changed it."""

    text: str
    actions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def _is_pictographic(char: str) -> bool:
    return unicodedata.category(char) in ("So", "Sk") or ord(char) >= 0x1F000


class Sanitizer:
    """Cleans user text; configured once with the limits and the model's control tokens."""

    def __init__(self, *, max_chars: int = 32000, control_tokens: Iterable[str] = ()) -> None:
        self.max_chars = max_chars
        tokens = {t for t in (*DEFAULT_CONTROL_TOKENS, *control_tokens) if t and t.strip()}
        # Longest first, so `<|im_start|>` is removed whole before any shorter token inside it.
        self._control_tokens = tuple(sorted(tokens, key=len, reverse=True))
        self._reversed_tokens = _reversed_trie(self._control_tokens)
        self._control_pattern = (
            re.compile("|".join(re.escape(t) for t in self._control_tokens))
            if self._control_tokens
            else None
        )

    @property
    def control_tokens(self) -> tuple[str, ...]:
        return self._control_tokens

    def clean(self, text: str, *, field_name: str = "message") -> SanitizedText:
        """Clean one message; raises SanitizationError when it is over the limit (checked
        before any cleaning, and again after: NFKC can lengthen text) or when nothing usable
        is left."""
        self._check_length(text, field_name)
        actions: list[str] = []

        def step(name: str, before: str, after: str) -> str:
            if after != before:
                actions.append(name)
            return after

        text = step("invalid_unicode_removed", text, self._drop_invalid_unicode(text))
        text = step("unicode_normalized", text, unicodedata.normalize("NFKC", text))
        text = step("control_characters_removed", text, self._drop_controls(text))
        text = step("invisible_characters_removed", text, self._drop_invisible(text))
        text = step("markup_stripped", text, self._outside_code(text, self._strip_markup))
        text = step("whitespace_collapsed", text, self._outside_code(text, self._collapse))
        text = step("control_tokens_removed", text, self._drop_control_tokens(text))

        if not text.strip():
            raise SanitizationError(f"{field_name} is empty after sanitization")
        self._check_length(text, field_name)
        return SanitizedText(text=text, actions=tuple(actions))

    def _check_length(self, text: str, field_name: str) -> None:
        if len(text) > self.max_chars:
            raise SanitizationError(
                f"{field_name} is {len(text)} characters long; the limit is {self.max_chars}"
            )

    def contains_control_token(self, text: str) -> bool:
        return self._control_pattern is not None and bool(self._control_pattern.search(text))

    # Rules -------------------------------------------------------------------------------

    @staticmethod
    def _drop_invalid_unicode(text: str) -> str:
        return "".join(
            c
            for c in text
            if not (0xD800 <= ord(c) <= 0xDFFF)
            and not (0xFDD0 <= ord(c) <= 0xFDEF)
            and (ord(c) & 0xFFFE) != 0xFFFE
        )

    @staticmethod
    def _drop_controls(text: str) -> str:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")

    @staticmethod
    def _drop_invisible(text: str) -> str:
        kept: list[str] = []
        for index, char in enumerate(text):
            code = ord(char)
            if code == _ZWJ:
                # Keep the joiner only where it glues an emoji sequence together.
                before = text[index - 1] if index > 0 else ""
                after = text[index + 1] if index + 1 < len(text) else ""
                if (
                    before
                    and after
                    and _is_pictographic(after)
                    and (_is_pictographic(before) or unicodedata.category(before) == "Mn")
                ):
                    kept.append(char)
                continue
            if code in _INVISIBLE:
                continue
            kept.append(char)
        return "".join(kept)

    @staticmethod
    def _outside_code(text: str, rule: _Rule) -> str:
        """Apply a rule to the prose only: Markdown code is the user's data, kept verbatim."""
        parts = _CODE_SEGMENT.split(text)
        # split() with one group alternates prose, code, prose, ...
        return "".join(part if index % 2 else rule(part) for index, part in enumerate(parts))

    @staticmethod
    def _strip_markup(text: str) -> str:
        text = _SCRIPT_OR_STYLE.sub("", text)
        if not any(_is_markup(m) for m in _TAG_OPEN.finditer(text)):
            return text
        # Escape `&` first so that only what is escaped here is unescaped afterwards: a literal
        # "&lt;script&gt;" stays literal instead of turning into a tag. A `<` that opens no
        # real element is escaped too, so bleach leaves `<branch>` alone.
        protected = _TAG_OPEN.sub(
            lambda m: m.group(0) if _is_markup(m) else "&lt;" + m.group(0)[1:],
            text.replace("&", "&amp;"),
        )
        protected = re.sub(r"<(?![!/A-Za-z])", "&lt;", protected)
        cleaned = bleach.clean(
            protected, tags=set(), attributes={}, strip=True, strip_comments=True
        )
        return html.unescape(cleaned)

    @staticmethod
    def _collapse(text: str) -> str:
        text = _BLANK_LINES.sub("\n\n\n", text)
        return _LONG_SPACES.sub(" ", text)

    def _drop_control_tokens(self, text: str) -> str:
        if self._control_pattern is None or not self._control_pattern.search(text):
            return text
        return _remove_nested(text, self._reversed_tokens)


_END = ""  # key of a reversed-trie node where a whole token ends


def _reversed_trie(tokens: Iterable[str]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for token in tokens:
        node = root
        for char in reversed(token):
            node = node.setdefault(char, {})
        node[_END] = len(token)
    return root


def _remove_nested(text: str, trie: dict[str, Any]) -> str:
    """Remove control tokens, including those that removing others would join together
    (`<|im_<|im_end|>end|>`), in one pass: each character is appended once, and whenever
    the kept text ends with a token, the token is dropped. Only a token's last character
    starts a backward walk, which stops at the first character no token has there, so the
    cost is linear in the input (times the longest token, at worst)."""
    kept: list[str] = []
    for char in text:
        kept.append(char)
        node = trie.get(char)
        if node is None:
            continue
        position = len(kept) - 1
        match = 0
        while node is not None:
            if _END in node:
                match = node[_END]  # the longest token that ends here wins
            position -= 1
            if position < 0:
                break
            node = node.get(kept[position])
        if match:
            del kept[-match:]
    return "".join(kept)
