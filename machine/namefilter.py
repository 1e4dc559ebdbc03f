"""``ls --filter name=REGEX`` without backtracking: time linear in pattern x name.

Python's ``re`` backtracks, so ``(a|aa)+$`` or ``(x+x+)+y`` can take minutes on a
30-character name.  docker-machine used Go's RE2, which never backtracks and has
no backreferences or lookaround.  This module keeps that contract: Python's own
parser reads the pattern (same syntax, same error messages), and a small Thompson
NFA run in lock-step (a Pike VM) decides the match, visiting each (instruction,
position) pair at most once.  Constructs RE2 lacks are refused, as Go refused them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from re import _constants as C  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

from pymachine.machine.errors import MachineError

MAX_PATTERN = 1000  # characters
MAX_PROGRAM = 2000  # NFA instructions after expanding counted repeats (bounds the time per name)
MAX_REPEAT = 1000  # Go's RE2 limit on {n,m}

Pred = Callable[[str], bool]


class _TooBig(Exception):
    pass


class NameFilter:
    """A compiled pattern; ``search`` answers what ``re.search(pattern, name)`` would."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        if len(pattern) > MAX_PATTERN:
            raise MachineError(f"invalid name filter: longer than {MAX_PATTERN} characters")
        try:
            parsed = sre_parse.parse(pattern, 0)
        except re.error as exc:
            raise MachineError(f"invalid name filter {pattern!r}: {exc}") from None
        self._prog: list[tuple] = []
        try:
            self._emit_seq(parsed, bool(parsed.state.flags & re.IGNORECASE),
                           bool(parsed.state.flags & re.DOTALL), bool(parsed.state.flags & re.MULTILINE))
        except _TooBig:
            raise MachineError(f"invalid name filter {pattern!r}: too complex") from None
        self._prog.append(("match",))

    # ------------------------------------------------------------- compiling
    def _add(self, *ins) -> int:
        if len(self._prog) >= MAX_PROGRAM:
            raise _TooBig()
        self._prog.append(ins)
        return len(self._prog) - 1

    def _emit_seq(self, items, icase: bool, dotall: bool, multiline: bool) -> None:
        for op, av in items:
            self._emit(op, av, icase, dotall, multiline)

    def _emit(self, op, av, icase: bool, dotall: bool, multiline: bool) -> None:
        if op is C.LITERAL:
            self._add("char", _literal(chr(av), icase))
        elif op is C.NOT_LITERAL:
            lit = _literal(chr(av), icase)
            self._add("char", lambda c, lit=lit: not lit(c))
        elif op is C.ANY:
            self._add("char", (lambda c: True) if dotall else (lambda c: c != "\n"))
        elif op is C.IN:
            self._add("char", _charset(av, icase))
        elif op is C.AT:
            self._add("assert", av, multiline)
        elif op is C.SUBPATTERN:
            _group, add, remove, sub = av
            ic = (icase or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE
            da = (dotall or bool(add & re.DOTALL)) and not remove & re.DOTALL
            ml = (multiline or bool(add & re.MULTILINE)) and not remove & re.MULTILINE
            self._emit_seq(sub, ic, da, ml)
        elif op is C.BRANCH:
            self._branch(av[1], icase, dotall, multiline)
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
            self._repeat(av, icase, dotall, multiline)
        else:  # backreferences, lookaround, atomic groups, possessive repeats: not RE2
            raise MachineError(
                f"invalid name filter {self.pattern!r}: {str(op).lower()} is not supported "
                "(name filters use RE2 syntax, as docker-machine did)"
            )

    def _branch(self, alternatives, icase: bool, dotall: bool, multiline: bool) -> None:
        jumps = []
        for i, alt in enumerate(alternatives):
            if i < len(alternatives) - 1:
                split = self._add("split", 0, 0)
                self._prog[split] = ("split", split + 1, None)
                self._emit_seq(alt, icase, dotall, multiline)
                jumps.append(self._add("jmp", None))
                self._prog[split] = ("split", split + 1, len(self._prog))
            else:
                self._emit_seq(alt, icase, dotall, multiline)
        for j in jumps:
            self._prog[j] = ("jmp", len(self._prog))

    def _repeat(self, av, icase: bool, dotall: bool, multiline: bool) -> None:
        low, high, sub = av
        if low > MAX_REPEAT or (high != C.MAXREPEAT and high > MAX_REPEAT):
            raise MachineError(f"invalid name filter {self.pattern!r}: repeat count over {MAX_REPEAT}")
        for _ in range(low):
            self._emit_seq(sub, icase, dotall, multiline)
        if high == C.MAXREPEAT:  # x*: L: split body, out; body; jmp L
            loop = self._add("split", None, None)
            self._emit_seq(sub, icase, dotall, multiline)
            self._add("jmp", loop)
            self._prog[loop] = ("split", loop + 1, len(self._prog))
            return
        splits = []
        for _ in range(high - low):  # x? x? ... nested, each optional
            splits.append(self._add("split", None, None))
            self._emit_seq(sub, icase, dotall, multiline)
        for s in splits:
            self._prog[s] = ("split", s + 1, len(self._prog))

    # -------------------------------------------------------------- matching
    def search(self, text: str) -> bool:
        prog = self._prog
        current: list[int] = []
        seen: set[int] = set()
        for pos in range(len(text) + 1):
            seen.clear()
            nxt_threads: list[int] = []
            for pc in [*current, 0]:  # a new thread starts at every position (unanchored)
                if self._closure(pc, pos, text, seen, nxt_threads):
                    return True
            if pos == len(text):
                break
            ch = text[pos]
            current = [pc + 1 for pc in nxt_threads if prog[pc][1](ch)]
        return False

    def _closure(self, start: int, pos: int, text: str, seen: set[int], out: list[int]) -> bool:
        """Follow jumps/splits/assertions from ``start``; collect char steps; True on match."""
        prog = self._prog
        stack = [start]
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            ins = prog[pc]
            kind = ins[0]
            if kind == "match":
                return True
            if kind == "char":
                out.append(pc)
            elif kind == "jmp":
                stack.append(ins[1])
            elif kind == "split":
                stack.append(ins[2])
                stack.append(ins[1])
            elif _holds(ins[1], ins[2], pos, text):
                stack.append(pc + 1)
        return False


def _literal(ch: str, icase: bool) -> Pred:
    if not icase:
        return lambda c: c == ch
    low = ch.lower()
    return lambda c: c.lower() == low


def _in_range(lo: int, hi: int, icase: bool) -> Pred:
    if icase:
        return lambda c: any(lo <= ord(x) <= hi for x in (c, c.lower(), c.upper()))
    return lambda c: lo <= ord(c) <= hi


_CATEGORIES: dict = {
    C.CATEGORY_DIGIT: str.isdecimal,
    C.CATEGORY_NOT_DIGIT: lambda c: not c.isdecimal(),
    C.CATEGORY_SPACE: lambda c: c.isspace(),
    C.CATEGORY_NOT_SPACE: lambda c: not c.isspace(),
    C.CATEGORY_WORD: lambda c: c.isalnum() or c == "_",
    C.CATEGORY_NOT_WORD: lambda c: not (c.isalnum() or c == "_"),
}


def _charset(items, icase: bool) -> Pred:
    negate = False
    preds: list[Pred] = []
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            preds.append(_literal(chr(av), icase))
        elif op is C.RANGE:
            lo, hi = av
            preds.append(_in_range(lo, hi, icase))
        elif op is C.CATEGORY:
            preds.append(_CATEGORIES[av])
        else:
            raise MachineError(f"invalid name filter: unsupported character class item {op}")

    def pred(c: str) -> bool:
        return any(p(c) for p in preds) != negate

    return pred


def _is_word(text: str, i: int) -> bool:
    return 0 <= i < len(text) and (text[i].isalnum() or text[i] == "_")


def _holds(at, multiline: bool, pos: int, text: str) -> bool:
    n = len(text)
    if at is C.AT_BEGINNING:
        return pos == 0 or (multiline and text[pos - 1] == "\n")
    if at is C.AT_BEGINNING_STRING:
        return pos == 0
    if at is C.AT_END:  # Python's $: at the end, or before a final newline
        return pos == n or (pos == n - 1 and text[pos] == "\n") or (multiline and text[pos] == "\n")
    if at is C.AT_END_STRING:
        return pos == n
    if at is C.AT_BOUNDARY:
        return _is_word(text, pos - 1) != _is_word(text, pos)
    if at is C.AT_NON_BOUNDARY:  # as sre: never true in an empty string
        return n > 0 and _is_word(text, pos - 1) == _is_word(text, pos)
    raise MachineError(f"invalid name filter: unsupported anchor {at}")


@functools.lru_cache(maxsize=64)
def compile_filter(pattern: str) -> NameFilter:
    """Parse ``pattern`` (once per process), so a bad filter fails before anything is listed."""
    return NameFilter(pattern)
