"""Markup stripping in one linear pass: tags of real HTML elements, comments, doctypes and
CDATA sections are removed, script and style elements with their bodies; everything else is
the user's text and stays as it is (`3 < 5 && x > 1`, `Vec<T>`, `git checkout <branch>`,
`&lt;`).

Where a tag ends is decided as the HTML tokenizer that bleach uses (html5lib) decides it: at
the first `>` outside a quoted attribute value, a quote opening a value only after `=`. That
is a finite automaton of eight states over the characters after the tag's name (`_NEXT`),
also written as a regular expression (`_TAG`). A tag that never ends (`<a href to link`, or
`"<a " * N`) is not markup but the user's text: it stays, and the search goes on after its
`<` (html5lib would swallow the rest of the message, or return it, depending on the state
the end of the text finds it in).

Why not bleach: html5lib compares each attribute with all earlier ones of its tag, so an
unclosed opener followed by N more (`"<a " * N`: one tag with N attributes) costs N squared;
and even where linear it cleans about 0.5 MB/s of dense markup, where 128 KB must cost well
under 100 ms.

Why this is linear:
- a tag that ends is read once, and the search resumes after it: by `_OPENER` itself when it
  has no quote and no `<` before its `>` (that try stops at the next `<`, so the tries of all
  openers read each character about once), else by `_TAG`, else by the automaton;
- a tag cannot end after the last `>` of the text, so openers after it are not read at all
  (`"<a " * N`, `"<script " * N`);
- a `_TAG` try that fails has read to the end of the text; it happens once, and from then on
  openers go to the automaton, whose walk from an opener that turns out to be text stops
  where it meets the path of an earlier walk in the same state at the same position (from
  there on it is that walk, which failed): each (position, state) pair is visited at most
  once, at most eight steps a character, whatever the input. A quoted value is jumped over
  with one `find` (only its own opening quote, which is marked, leads into it);
- comments, script bodies and doctypes end at the first of a fixed string, found once.
"""

from __future__ import annotations

import re

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
# A start tag of these, once an earlier tag was removed, leaves a line break (as bleach did,
# and as a browser shows it), so that `<p>one</p><p>two</p>` reads "one\ntwo".
BLOCK_ELEMENTS = frozenset(
    "address article aside blockquote details dialog dd div dl dt fieldset figcaption figure "
    "footer form h1 h2 h3 h4 h5 h6 header hgroup hr li main nav ol p pre section table ul".split()
)

# What can start markup: a start or end tag whose name is followed by what ends a tag name
# (the tokenizer's whitespace, `/` or `>`), a comment, a doctype or CDATA section. A tag with
# no quote and no `<` before its `>`, which ends at that `>`, is read here at once (group 3);
# the try stops at the next `<`, so the tries of all openers read each character once.
_OPENER = re.compile(
    r"<(?:(/?)([A-Za-z][A-Za-z0-9-]*)(?=[\t\n\f\r />])(?:[^<>\"']{0,256}+(>))?+"
    r"|(!--)|!(?i:doctype|\[cdata\[))"
)
_COMMENT_END = re.compile(r"--!?>")
_BODY_END = {
    "script": re.compile(r"</script\s*>", re.IGNORECASE),
    "style": re.compile(r"</style\s*>", re.IGNORECASE),
}

# The rest of a tag after its name, up to its `>`: the automaton below as a regular
# expression. Possessive quantifiers only, and no two ways to read any character, so a try
# never backtracks; `(?!=)` makes an `=` whose value does not parse (an unclosed quote) fail
# the tag rather than start another attribute.
_WS = r"[\t\n\f\r ]"
_VALUE = r"""(?:"[^"]*+"|'[^']*+'|[^\t\n\f\r >"'][^\t\n\f\r >]*+|(?=>))"""
_ATTRIBUTE = rf"[^\t\n\f\r />][^\t\n\f\r />=]*+{_WS}*+(?:={_WS}*+{_VALUE}|(?!=))"
_TAG = re.compile(rf"(?:[\t\n\f\r /]++|{_ATTRIBUTE})*+>")

# The tokenizer's states inside a tag (html5lib names): tag name, before attribute name
# (also after a quoted value and after a `/`: they move alike), attribute name, after
# attribute name, before attribute value, unquoted value, double- and single-quoted value.
_T, _B, _N, _A, _V, _U, _DQ, _SQ = range(8)
_END = -1
# Character classes: whitespace, `/`, `>`, `=`, `"`, `'`, anything else; as a table for
# bytes.translate over the text encoded to Latin-1 (anything beyond it is "anything else").
_CLASSES = {"\t\n\f\r ": 0, "/": 1, ">": 2, "=": 3, '"': 4, "'": 5}
_CLASS_OF = bytes(
    next((cls for chars, cls in _CLASSES.items() if chr(code) in chars), 6) for code in range(256)
)
_NEXT: tuple[tuple[int, ...], ...] = (
    # ws  /   >     =   "    '    other
    (_B, _B, _END, _T, _T, _T, _T),  # tag name
    (_B, _B, _END, _N, _N, _N, _N),  # before attribute name
    (_A, _B, _END, _V, _N, _N, _N),  # attribute name
    (_A, _B, _END, _V, _N, _N, _N),  # after attribute name
    (_V, _U, _END, _U, _DQ, _SQ, _U),  # before attribute value
    (_B, _U, _END, _U, _U, _U, _U),  # unquoted value
    (_DQ, _DQ, _DQ, _DQ, _B, _DQ, _DQ),  # double-quoted value
    (_SQ, _SQ, _SQ, _SQ, _SQ, _B, _SQ),  # single-quoted value
)
# The same, flat for the walk: entry 8 * state + class is 8 * the next state (or -1).
_FLAT = tuple(8 * state if state >= 0 else -1 for row in _NEXT for state in (*row, _END))


def strip_markup(text: str) -> str:
    """The text without its markup; linear in its length."""
    if "<" not in text:
        return text
    return _Stripper(text).run()


class _Stripper:
    def __init__(self, text: str) -> None:
        self.text = text
        # Bit s of visited[k]: a walk was in state s after reading character k.
        self.visited: bytearray | None = None
        self.classes = b""  # the class of each character (`_CLASS_OF`), once a walk needs it

    def run(self) -> str:
        text = self.text
        size = len(text)
        last_gt = text.rfind(">")
        kept: list[str] = []
        copied = 0  # text[:copied] is decided
        removed_a_tag = False
        # A `_TAG` try that fails has read to the end of the text, and so has the walk that
        # follows it; later openers are walked at once, and their walks are cut short where
        # they meet that one (more failing tries would each read to the end again).
        walked_to_the_end = False
        # No match holds a `<` but at its start, so none that starts in what a removal took
        # hides an opener after it: matches before `copied` are skipped.
        for opener in _OPENER.finditer(text):
            start, end = opener.span()
            if start < copied:
                continue
            if start > last_gt:
                # Nothing can end here any more; a comment still runs to the end.
                unclosed = text.find("<!--", start)
                if unclosed >= 0:
                    kept.append(text[copied:unclosed])
                    copied = size
                break
            slash, tag_name, fast, comment = opener.groups()
            if tag_name is None:
                if comment:  # unclosed, it runs to the end (as in HTML)
                    end = _comment_end(text, end)
                else:  # doctype or CDATA: up to the first `>`
                    end = text.find(">", end) + 1
                    if end == 0:
                        continue
            elif (name := tag_name.lower()) not in HTML_ELEMENTS:
                continue  # `<T>`, `<branch>`: text
            else:
                if fast is None:  # quotes, a `<` or a long way to the `>`
                    tag = None if walked_to_the_end else _TAG.match(text, end)
                    end = tag.end() if tag is not None else self._walk(end)
                    if end < 0:
                        walked_to_the_end = True
                        continue  # the tag never ends: the `<` is text
                if not slash and name in _BODY_END:
                    body_end = _BODY_END[name].search(text, end)  # the element goes whole
                    end = body_end.end() if body_end else size
                elif removed_a_tag and not slash and name in BLOCK_ELEMENTS:
                    kept += (text[copied:start], "\n")
                    copied = end
                    continue
                else:
                    removed_a_tag = True
            kept.append(text[copied:start])
            copied = end
        kept.append(text[copied:])
        return "".join(kept)

    def _walk(self, position: int) -> int:
        """The automaton from the end of a tag's name: the position after the tag's `>`, or
        -1 if there is none, or if the walk meets an earlier walk in the same state."""
        text = self.text
        size = len(text)
        if self.visited is None:
            self.visited = bytearray(size)
            self.classes = text.encode("latin-1", "replace").translate(_CLASS_OF)
        visited, classes, table = self.visited, self.classes, _FLAT
        state = 8 * _T
        while position < size:
            state = table[state + classes[position]]
            if state < 0:
                return position + 1
            bit = 1 << (state >> 3)
            seen = visited[position]
            if seen & bit:
                return -1  # an earlier walk was here in this state, and found no end
            visited[position] = seen | bit
            if state >= 8 * _DQ:
                # A quoted value: only its opening quote (just marked) leads into it, and only
                # the same quote closes it, so no other walk can be inside; jump over it.
                position = text.find('"' if state == 8 * _DQ else "'", position + 1)
                if position < 0:
                    return -1
                state = 8 * _B
                if visited[position] & (1 << _B):
                    return -1
                visited[position] |= 1 << _B
            position += 1
        return -1


def _comment_end(text: str, start: int) -> int:
    """The end of a comment that opens before `start`: after its `-->` (or `--!>`), or the
    end of the text. `<!-->` and `<!--->` are (empty) comments too."""
    if text.startswith(">", start):
        return start + 1
    if text.startswith("->", start):
        return start + 2
    closing = _COMMENT_END.search(text, start)
    return closing.end() if closing else len(text)
