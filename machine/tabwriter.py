"""Elastic tab stops, ported from Go's text/tabwriter.

`pymachine ls` must align its table byte for byte like docker-machine 0.16,
which wrote through ``tabwriter.NewWriter(os.Stdout, 5, 1, 3, ' ', 0)``.  The
algorithm below follows Go's ``Writer.Write``/``format``/``writeLines``
closely (column blocks, the ignored last cell of each line, empty cells past
the known widths, the flush on single-cell lines and on form feeds) so that
corner cases come out the same.  HTML filtering and escape sequences are not
supported: Python text never contains Go's 0xff escape byte.
"""

from __future__ import annotations

# Flags, with Go's values.
FILTER_HTML = 1 << 0  # not supported; accepted and ignored
STRIP_ESCAPE = 1 << 1  # not supported; accepted and ignored
ALIGN_RIGHT = 1 << 2
DISCARD_EMPTY_COLUMNS = 1 << 3
TAB_INDENT = 1 << 4
DEBUG = 1 << 5

_CELL_ENDS = frozenset("\t\v\n\f")


class Writer:
    """A Go tabwriter.Writer that collects its output in memory.

    ``write`` may be called any number of times; ``flush`` formats what is
    buffered and returns all output produced since the previous flush.
    """

    def __init__(
        self,
        minwidth: int = 0,
        tabwidth: int = 8,
        padding: int = 1,
        padchar: str = " ",
        flags: int = 0,
    ) -> None:
        if minwidth < 0 or tabwidth < 0 or padding < 0:
            raise ValueError("negative minwidth, tabwidth, or padding")
        if len(padchar) != 1:
            raise ValueError("padchar must be a single character")
        self.minwidth = minwidth
        self.tabwidth = tabwidth
        self.padding = padding
        self.padchar = padchar
        if padchar == "\t":
            flags &= ~ALIGN_RIGHT  # tab padding enforces left alignment, as in Go
        self.flags = flags
        self._out: list[str] = []
        self._reset()

    # -- buffering -----------------------------------------------------------
    def _reset(self) -> None:
        # A cell is [text, width, htab]; the pending cell is split in pieces.
        self._pending: list[str] = []
        self._lines: list[list[tuple[str, int, bool]]] = [[]]
        self._widths: list[int] = []

    def _terminate_cell(self, htab: bool) -> int:
        text = "".join(self._pending)
        self._pending = []
        line = self._lines[-1]
        line.append((text, len(text), htab))
        return len(line)

    def write(self, text: str) -> None:
        """Split ``text`` into cells; flush early where Go would."""
        start = 0
        for i, ch in enumerate(text):
            if ch not in _CELL_ENDS:
                continue
            self._pending.append(text[start:i])
            start = i + 1
            ncells = self._terminate_cell(ch == "\t")
            if ch == "\n" or ch == "\f":
                self._lines.append([])
                if ch == "\f" or ncells == 1:
                    # A one-cell line cannot affect later columns: Go flushes here.
                    self._flush_buffer()
                    if ch == "\f" and self.flags & DEBUG:
                        self._out.append("---\n")
        self._pending.append(text[start:])

    def flush(self) -> str:
        """Format everything buffered; return the output produced so far."""
        self._flush_buffer()
        out = "".join(self._out)
        self._out = []
        return out

    def _flush_buffer(self) -> None:
        if any(self._pending):
            self._terminate_cell(False)
        self._pending = []
        self._format(0, len(self._lines))
        self._reset()

    # -- formatting (Go: format, writeLines, writePadding) -------------------
    def _padding(self, textw: int, cellw: int, use_tabs: bool) -> None:
        if self.padchar == "\t" or use_tabs:
            if self.tabwidth == 0:
                return  # tabs have no width: no padding possible
            cellw = (cellw + self.tabwidth - 1) // self.tabwidth * self.tabwidth
            n = cellw - textw
            self._out.append("\t" * ((n + self.tabwidth - 1) // self.tabwidth))
            return
        self._out.append(self.padchar * (cellw - textw))

    def _write_lines(self, line0: int, line1: int) -> None:
        out = self._out
        widths = self._widths
        nwidths = len(widths)
        align_right = self.flags & ALIGN_RIGHT
        debug = self.flags & DEBUG
        for i in range(line0, line1):
            use_tabs = bool(self.flags & TAB_INDENT)
            for j, (text, width, _htab) in enumerate(self._lines[i]):
                if j > 0 and debug:
                    out.append("|")
                if not text:
                    if j < nwidths:
                        self._padding(width, widths[j], use_tabs)
                    continue
                use_tabs = False
                if not align_right:
                    out.append(text)
                    if j < nwidths:
                        self._padding(width, widths[j], False)
                else:
                    if j < nwidths:
                        self._padding(width, widths[j], False)
                    out.append(text)
            if i + 1 == len(self._lines):
                out.append("".join(self._pending))  # last line: no newline
            else:
                out.append("\n")

    def _format(self, line0: int, line1: int) -> None:
        lines = self._lines
        column = len(self._widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            # A cell exists in this column: print lines up to the block start.
            self._write_lines(line0, this)
            line0 = this
            width = self.minwidth
            discardable = True
            while this < line1:
                line = lines[this]
                if column >= len(line) - 1:
                    break
                _text, cwidth, htab = line[column]
                width = max(width, cwidth + self.padding)
                if cwidth > 0 or htab:
                    discardable = False
                this += 1
            if discardable and self.flags & DISCARD_EMPTY_COLUMNS:
                width = 0
            self._widths.append(width)
            self._format(line0, this)
            self._widths.pop()
            line0 = this
        self._write_lines(line0, line1)


def tabwrite(
    text: str,
    minwidth: int = 5,
    tabwidth: int = 1,
    padding: int = 3,
    padchar: str = " ",
    flags: int = 0,
) -> str:
    """Align ``text`` like Go's tabwriter; defaults are docker-machine ls's."""
    w = Writer(minwidth, tabwidth, padding, padchar, flags)
    w.write(text)
    return w.flush()
