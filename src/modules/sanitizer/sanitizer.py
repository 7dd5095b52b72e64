"""Sanitizer for every message that reaches the model.

Rules, in order (each reports an action name when it changed something):
  invalid_unicode_removed     lone surrogates and Unicode non-characters dropped
  unicode_normalized          NFKC normalization
  control_characters_removed  C0/C1 controls dropped (newline and tab kept, CRLF -> LF)
  invisible_characters_removed zero-width, bidi-override and tag characters dropped
                              (a zero-width joiner inside an emoji sequence is kept)
  markup_stripped             HTML tags of real elements, comments, doctypes removed, script
                              and style bodies too (see `markup`); text inside Markdown code
                              spans and fences is left alone
  whitespace_collapsed        runs of blank lines or spaces that serve no reader
  control_tokens_removed      strings that spell a special token of the model's vocabulary

The prompt builder additionally tokenizes user text with special-token parsing off, so even
a string this list does not know cannot become a control token.

Every rule is linear in the text: one regular-expression pass without backtracking, or one
walk over the characters that does a bounded amount of work at each. The length limit is
checked before any of them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from modules.sanitizer.markup import HTML_ELEMENTS, strip_markup

__all__ = [
    "DEFAULT_CONTROL_TOKENS",
    "HTML_ELEMENTS",
    "SanitizationError",
    "SanitizedText",
    "Sanitizer",
]

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

# A fence runs to the next fence (or the end); a span to the next backtick on its line.
_CODE_SEGMENT = re.compile(r"(```.*?(?:```|\Z)|`[^`\n]+`)", re.DOTALL)
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*){3,}")
_LONG_SPACES = re.compile(r"[ \t]{33,}")

# Lone surrogates, U+FDD0..U+FDEF and the last two code points of every plane. (Classes are
# written as few ranges: sre tests a class item by item, and one with astral ranges for every
# character, so the astral non-characters are looked for only in text that has astral ones.)
_INVALID_BMP = re.compile(r"[\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
_ASTRAL = re.compile(r"[\U00010000-\U0010ffff]")
_INVALID_ASTRAL = re.compile(
    "[" + "".join(rf"\U{plane:04x}fffe-\U{plane:04x}ffff" for plane in range(1, 17)) + "]"
)
# Category Cc, less newline and tab (carriage returns are turned into newlines first).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ZWJ = "\u200d"
# Zero-width, bidi-override, tag and other invisible characters; the zero-width joiner (U+200D)
# is judged by its neighbours (`_stray_joiner`).
_INVISIBLE = re.compile(
    r"[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u3164\ufeff\uffa0"
    r"\u200b\u200c\u200e\u200f"  # zero-width space and non-joiner, LRM/RLM
    r"\u202a-\u202e"  # bidi embeddings and overrides
    r"\u2060-\u206f"  # word joiner, invisible operators, bidi isolates
    r"\U000e0000-\U000e007f"  # tag characters (invisible "ASCII smuggling")
    r"\ufff9-\ufffb]"  # interlinear annotations
)


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
        # The characters a token can end with: where the removal pass has work to do.
        last_chars = "".join(sorted({re.escape(t[-1]) for t in self._control_tokens}))
        self._token_ends = re.compile(f"[{last_chars}]" if last_chars else "(?!)")

    @property
    def control_tokens(self) -> tuple[str, ...]:
        return self._control_tokens

    def clean(
        self, text: str, *, field_name: str = "message", allow_empty: bool = False
    ) -> SanitizedText:
        """Clean one message; raises SanitizationError when it is over the limit (checked
        before any cleaning, and again after: NFKC can lengthen text) or, unless
        `allow_empty` (a string inside JSON), when nothing usable is left."""
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
        text = step("markup_stripped", text, self._outside_code(text, strip_markup))
        text = step("whitespace_collapsed", text, self._collapse(text))
        text = step("control_tokens_removed", text, self._drop_control_tokens(text))

        if not text.strip() and not allow_empty:
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
        text = _INVALID_BMP.sub("", text)
        return _INVALID_ASTRAL.sub("", text) if _ASTRAL.search(text) else text

    @staticmethod
    def _drop_controls(text: str) -> str:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        return _CONTROLS.sub("", text)

    @staticmethod
    def _drop_invisible(text: str) -> str:
        if _ZWJ in text:
            # Keep the joiner only where it glues an emoji sequence together, as judged by
            # its neighbours in the text as it came (other invisibles still in place). The
            # plain cases first (next to ASCII or to another joiner, which go whatever the
            # other side is): they take only joiners, so the others keep their neighbours.
            text = _PLAIN_STRAY_JOINER.sub("", text)
            if _ZWJ in text:
                text = _stray_joiner().sub("", text)
        return _INVISIBLE.sub("", text)

    @staticmethod
    def _outside_code(text: str, rule: _Rule) -> str:
        """Apply a rule to the prose only: Markdown code is the user's data, kept verbatim."""
        if "`" not in text:
            return rule(text)
        parts = _CODE_SEGMENT.split(text)
        # split() with one group alternates prose, code, prose, ...
        return "".join(part if index % 2 else rule(part) for index, part in enumerate(parts))

    def _collapse(self, text: str) -> str:
        if _BLANK_LINES.search(text) is None and _LONG_SPACES.search(text) is None:
            return text
        return self._outside_code(text, _collapse_prose)

    def _drop_control_tokens(self, text: str) -> str:
        if self._control_pattern is None or not self._control_pattern.search(text):
            return text
        return _remove_nested(text, self._reversed_tokens, self._token_ends)


# ASCII but `^` and `` ` `` (modifier symbols, Sk), or a joiner: never one side of a kept joiner.
_PLAIN = r"[\x00-\x5d\x5f\x61-\x7f\u200d]"
_PLAIN_STRAY_JOINER = re.compile(rf"(?<={_PLAIN})\u200d|\u200d(?={_PLAIN}|\Z)|\A\u200d")


@functools.cache
def _stray_joiner() -> re.Pattern[str]:
    """A zero-width joiner that does not join two pictographs (or a pictograph's modifier
    and a pictograph): not after a pictograph or a combining mark, or not before a pictograph.
    Pictographs are the symbols (So, Sk) and everything from U+1F000; the classes are built
    once, from this Python's Unicode tables, so the rule is one pass with no callback."""
    symbols = [code for code in range(0x1F000) if unicodedata.category(chr(code)) in ("So", "Sk")]
    marks = [code for code in range(0x1F000) if unicodedata.category(chr(code)) == "Mn"]
    # The emoji block first: a class is tested item by item.
    pictograph = r"\U0001f000-\U0010ffff" + _ranges(symbols)
    before = r"\U0001f000-\U0010ffff" + _ranges(sorted(symbols + marks))
    return re.compile(rf"(?<![{before}])\u200d|\u200d(?![{pictograph}])")


def _ranges(codes: list[int]) -> str:
    """Sorted code points as the inside of a character class, runs written as ranges."""
    parts: list[str] = []
    index = 0
    while index < len(codes):
        first = last = codes[index]
        while index + 1 < len(codes) and codes[index + 1] == last + 1:
            index += 1
            last = codes[index]
        parts.append(re.escape(chr(first)) + ("-" + re.escape(chr(last)) if last > first else ""))
        index += 1
    return "".join(parts)


def _collapse_prose(text: str) -> str:
    text = _BLANK_LINES.sub("\n\n\n", text)
    return _LONG_SPACES.sub(" ", text)


_END = ""  # key of a reversed-trie node where a whole token ends


def _reversed_trie(tokens: Iterable[str]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for token in tokens:
        node = root
        for char in reversed(token):
            node = node.setdefault(char, {})
        node[_END] = len(token)
    return root


def _remove_nested(text: str, trie: dict[str, Any], token_ends: re.Pattern[str]) -> str:
    """Remove control tokens, including those that removing others would join together
    (`<|im_<|im_end|>end|>`), in one pass: each character is appended once, and whenever
    the kept text ends with a token, the token is dropped. Only a token's last character
    starts a backward walk (the text between two such characters is copied at once), which
    stops at the first character no token has there, so the cost is linear in the input
    (times the longest token, at worst)."""
    kept: list[str] = []
    copied = 0
    for end in token_ends.finditer(text):
        kept.extend(text[copied : end.end()])
        copied = end.end()
        position = len(kept) - 1
        node = trie.get(kept[position])
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
    kept.extend(text[copied:])
    return "".join(kept)
