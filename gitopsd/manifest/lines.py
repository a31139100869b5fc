"""Line numbers as an editor shows them, for every `file:line` a manifest problem names.

PyYAML follows YAML 1.1 and counts U+0085 (NEL), U+2028 and U+2029 as line breaks besides
`\\n`, `\\r\\n` and `\\r`; editors (VS Code, vim, less), `cat -n` and YAML 1.2 do not, so
PyYAML's `Mark.line` is one off for every such character above the mark. We count only
`\\n`, `\\r\\n` and a lone `\\r` (YAML 1.2's line breaks; a lone `\\r` is how VS Code and
YAML itself read classic Mac files) and map PyYAML's character offsets onto those lines.

A position past the last line break (the end of a file that ends with a newline) is reported
on the file's last line, so a problem never names a line the file does not have.
"""

from __future__ import annotations

import bisect
import re

_BREAK = re.compile(r"\r\n|\r|\n")
_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")
_YAML11_BREAKS = "\u0085\u2028\u2029"


class LineIndex:
    """Maps a character offset of `text` to its 1-based editor line."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts = [0, *(m.end() for m in _BREAK.finditer(text))]
        # The empty "line" after a final line break is not a line of the file.
        self.last = max(
            1, len(self._starts) - 1 if self._starts[-1] == len(text) else len(self._starts)
        )

    def line(self, offset: int) -> int:
        """The 1-based line holding the character at `offset` (clamped to the file)."""
        return max(1, min(bisect.bisect_right(self._starts, offset), self.last))

    def yaml11_breaks(self, line: int) -> list[str]:
        """The characters on editor line `line` that PyYAML alone reads as line breaks, as
        `U+0085`...: where one sits, the parser sees more lines than the editor shows."""
        start = self._starts[line - 1] if 0 < line <= len(self._starts) else len(self._text)
        end = self._starts[line] if line < len(self._starts) else len(self._text)
        return sorted({f"U+{ord(c):04X}" for c in self._text[start:end] if c in _YAML11_BREAKS})


def line_of_byte(data: bytes, offset: int) -> int:
    """The 1-based editor line of byte `offset` of `data` (any encoding that keeps `\\r` and
    `\\n` as single bytes, as UTF-8 does)."""
    # A `\r\n` that straddles `offset` is one break ending after it: not counted.
    breaks = _BREAK_BYTES.finditer(data, 0, offset + 1)
    return 1 + sum(1 for m in breaks if m.end() <= offset)
