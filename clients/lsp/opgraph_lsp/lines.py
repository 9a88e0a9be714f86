"""Following a document's edits: which line of the saved file each line of the buffer is.

A graph's nodes name the lines of the file as it was when the script ran, that is, as it was
last saved. While the user edits, `LineTracker` keeps, for every line of the buffer, the line of
that *baseline* it comes from (or none, for a line typed since), and whether its text is still
the same. Values are shown only on lines whose text is unchanged: a changed line describes code
that no longer exists, and an undo that restores the text brings its values back.

Positions here are in Python string indices (code points); `LineTracker.apply` takes them so,
and `to_index` converts an LSP position's character from the client's units.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

NO_LINE = -1  # the origin of a line typed after the baseline


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` without their endings (``\\n``, ``\\r\\n`` or ``\\r``).

    A text ending with a line break has an empty last line, as an editor shows it: ``"a\\n"``
    is ``["a", ""]``, and the empty text is one empty line.
    """
    lines = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def unit_length(text: str, encoding: str) -> int:
    """The length of ``text`` in the code units of an LSP position encoding."""
    if encoding == "utf-32":
        return len(text)
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)  # utf-16: pairs above the BMP


def to_index(line: str, units: int, encoding: str) -> int:
    """The string index in ``line`` of the position ``units`` code units in (clamped)."""
    if encoding == "utf-32":
        return max(0, min(units, len(line)))
    count = 0
    for i, c in enumerate(line):
        if count >= units:
            return i
        o = ord(c)
        if encoding == "utf-8":
            count += 1 if o < 0x80 else 2 if o < 0x800 else 3 if o < 0x10000 else 4
        else:
            count += 2 if o > 0xFFFF else 1
    return len(line)


class LineTracker:
    """The lines of a buffer, each with the baseline line it comes from.

    ``origin[i]`` is the baseline line of buffer line ``i``, or `NO_LINE`. A line keeps its
    origin through edits inside it (then it is *dirty* until its text equals the baseline's
    again), through insertions and deletions of other lines (it moves), and through a line
    break typed at its start or end.
    """

    def __init__(self, text: str) -> None:
        self.baseline: list[str] = split_lines(text)
        self.lines: list[str] = list(self.baseline)
        self.origin: list[int] = list(range(len(self.lines)))
        self._where: dict[int, int] | None = None

    def __len__(self) -> int:
        return len(self.lines)

    # --- edits ------------------------------------------------------------------------------

    def apply(self, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        """Replace the text from ``start`` to ``end`` (``(line, index)``, clamped) by ``text``."""
        n = len(self.lines)
        sl, sc = self._clamp(*start)
        el, ec = self._clamp(*end)
        if (el, ec) < (sl, sc):
            (sl, sc), (el, ec) = (el, ec), (sl, sc)
        old_first, old_last = self.lines[sl], self.lines[el]
        pieces = split_lines(text)
        pieces[0] = old_first[:sc] + pieces[0]
        pieces[-1] = pieces[-1] + old_last[ec:]
        k = len(pieces)
        origins = [NO_LINE] * k
        # Which new line carries on an old one: the last, when it is old line `el` unchanged
        # (lines inserted above it, or the lines before it deleted); else the first, when it
        # is old line `sl` unchanged (a line break typed at its end); else the first, changed
        # (an edit inside the line), unless the edit only added whole lines before it.
        if pieces[-1] == old_last and (k > 1 or sl != el or pieces[0] == old_first):
            origins[-1] = self.origin[el]
        elif pieces[0] == old_first or sc > 0 or k == 1:
            origins[0] = self.origin[sl]
        else:
            origins[-1] = self.origin[el]
        self.lines[sl:el + 1] = pieces
        self.origin[sl:el + 1] = origins
        self._where = None
        assert len(self.lines) == n - (el - sl + 1) + k

    def replace_all(self, text: str) -> None:
        """The whole buffer replaced (a client syncing full documents): lines matched by diff."""
        new = split_lines(text)
        origins = [NO_LINE] * len(new)
        matcher = difflib.SequenceMatcher(None, self.lines, new, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
                origins[j1:j2] = self.origin[i1:i2]  # replaced one for one: edited in place
        self.lines = new
        self.origin = origins
        self._where = None

    def _clamp(self, line: int, index: int) -> tuple[int, int]:
        if line >= len(self.lines):
            return len(self.lines) - 1, len(self.lines[-1])
        line = max(0, line)
        return line, max(0, min(index, len(self.lines[line])))

    # --- reading ----------------------------------------------------------------------------

    def source_line(self, line: int) -> int | None:
        """The baseline line buffer line ``line`` shows unchanged, or None."""
        if not 0 <= line < len(self.lines):
            return None
        o = self.origin[line]
        if o == NO_LINE or self.lines[line] != self.baseline[o]:
            return None
        return o

    def buffer_line(self, source: int) -> int | None:
        """The buffer line that shows baseline line ``source`` unchanged, or None."""
        if self._where is None:
            self._where = {o: i for i, o in enumerate(self.origin) if o != NO_LINE}
        i = self._where.get(source)
        if i is None or self.lines[i] != self.baseline[source]:
            return None
        return i

    def clean_lines(self, first: int = 0, last: int | None = None) -> Iterable[tuple[int, int]]:
        """``(buffer line, baseline line)`` of the unchanged lines from ``first`` to ``last``."""
        last = len(self.lines) - 1 if last is None else min(last, len(self.lines) - 1)
        for i in range(max(0, first), last + 1):
            o = self.source_line(i)
            if o is not None:
                yield i, o

    @property
    def modified(self) -> bool:
        """Whether the buffer differs from the baseline."""
        return self.lines != self.baseline

    def rebase(self, text: Sequence[str] | str | None = None) -> dict[int, int]:
        """Make the buffer (or ``text``, the file as saved) the new baseline.

        Returns the map from old baseline lines to new ones, for the lines that survived
        unchanged, so what was known about the old baseline can be carried over.
        """
        if text is not None:
            lines = split_lines(text) if isinstance(text, str) else list(text)
            if lines != self.lines:
                self.replace_all("\n".join(lines))
        moved = {o: i for i, o in self.clean_lines()}
        self.baseline = list(self.lines)
        self.origin = list(range(len(self.lines)))
        self._where = None
        return moved
