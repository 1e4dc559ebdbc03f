"""A faithful subset of Go's text/template, for ``ls --format`` and ``inspect -f``.

docker-machine 0.16 formatted ``ls`` and ``inspect`` output with Go templates,
and users' scripts depend on the exact output (``<no value>`` for missing map
keys, ``map[a:1 b:2]`` for maps, Go's float printing, Go's error texts).  The
lexer, parser and executor below follow Go's ``text/template/parse/lex.go``,
``parse.go`` and ``exec.go`` closely.

Supported: text, comments, trim markers, fields and chains, variables (``$``,
``$x := ...``, ``$x = ...``), pipelines, parenthesised pipelines, literals,
``if``/``else if``/``else``, ``range`` (with ``$i, $e :=`` and ``else``),
``with``; functions ``and or not len index slice print printf println eq ne
lt le gt ge html urlquery`` plus docker-machine's ``json`` and ``prettyjson``
and the docker CLI's ``upper lower join``.  Not supported: ``define``,
``template``, ``block`` (reported as a parse error), ``break``/``continue``
(which docker-machine's Go did not know either), complex numbers.

Python data maps to Go like JSON-decoded data: dict -> map[string]interface{},
list/tuple -> []interface{}, None -> nil; other objects act like structs
whose public attributes are fields (a callable attribute is a method).
"""

from __future__ import annotations

import math

from pymachine.machine.errors import MachineError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds on `pymachine ls`
    from collections.abc import Callable
    from typing import Any

__all__ = ["Template", "TemplateError", "go_json", "go_sprint", "parse", "render"]


class TemplateError(MachineError):
    """A template failed to parse or execute.

    ``go_error`` is Go's own error text; ``str()`` adds docker-machine's
    ``template parsing error: `` prefix to parse errors (as ``inspect`` did).
    ``partial`` holds the output produced before an execution error.
    """

    def __init__(self, go_error: str, *, parsing: bool = False, partial: str = "") -> None:
        self.go_error = go_error
        self.parsing = parsing
        self.partial = partial
        super().__init__(("template parsing error: " + go_error) if parsing else go_error)


class _Missing:
    """Go's invalid reflect.Value: a missing map key, printed ``<no value>``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no value>"


MISSING: Any = _Missing()

# Bounds, so a template typed (or pasted) by a user can neither print gigabytes nor
# recurse until Python gives up.  Go's fmt refuses widths/precisions over 1e6 the same
# way (``%!(BADWIDTH)``); its parser stops at a nesting depth too ("max expression
# depth exceeded").  Output and intermediate strings are capped at MAX_OUTPUT.
MAX_WIDTH = 1_000_000
MAX_DEPTH = 100
MAX_OUTPUT = 4 << 20
MAX_TEXT = 64 << 10


# ---------------------------------------------------------------------------
# Value formatting, as Go's fmt and encoding/json do it
# ---------------------------------------------------------------------------


def _float_digits(f: float) -> tuple[str, int]:
    """Shortest decimal digits of abs(f) and Go's decimal point position."""
    r = repr(abs(f))
    mant, _, exp = r.partition("e")
    ipart, _, frac = mant.partition(".")
    allds = ipart + frac
    stripped = allds.lstrip("0")
    dp = len(ipart) + (int(exp) if exp else 0) - (len(allds) - len(stripped))
    return stripped.rstrip("0"), dp


def _fmt_e(sign: str, ds: str, dp: int) -> str:
    exp = dp - 1
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{sign}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _fmt_f(sign: str, ds: str, dp: int) -> str:
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return sign + ds + "0" * (dp - len(ds))
    return f"{sign}{ds[:dp]}.{ds[dp:]}"


def _go_float_v(f: float) -> str:
    """fmt's %v for float64: shortest %g with Go's exponent threshold."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    ds, dp = _float_digits(f)
    if not ds:
        return sign + "0"
    exp = dp - 1
    if exp < -4 or exp >= 6:  # strconv 'g' with shortest precision uses 6 here
        return _fmt_e(sign, ds, dp)
    return _fmt_f(sign, ds, dp)


def _go_type(v: Any) -> str:
    if v is None or v is MISSING:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    return type(v).__name__


def go_sprint(v: Any) -> str:
    """Go's fmt %v of one value."""
    if isinstance(v, str):
        return v
    if v is None:
        return "<nil>"
    if v is MISSING:
        return "<no value>"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float_v(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(map(go_sprint, v)) + "]"
    if isinstance(v, dict):
        items = sorted(v.items(), key=lambda kv: _sort_key(kv[0]))
        return "map[" + " ".join(f"{go_sprint(k)}:{go_sprint(x)}" for k, x in items) + "]"
    return str(v)


def _sort_key(k: Any) -> tuple:
    if isinstance(k, (int, float)) and not isinstance(k, bool):
        return (0, k, "")
    return (1, 0, str(k))


def _json_float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise ValueError("json: unsupported value")
    a = abs(f)
    ds, dp = _float_digits(f)
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    if not ds:
        return sign + "0"
    if a < 1e-6 or a >= 1e21:
        s = _fmt_e(sign, ds, dp)
        if s[-4] == "e" and s[-3] == "-" and s[-2] == "0":  # Go writes e-7, not e-07
            s = s[:-2] + s[-1]
        return s
    return _fmt_f(sign, ds, dp)


_JSON_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
             "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_str(s: str) -> str:
    out = ['"']
    for ch in s:
        e = _JSON_ESC.get(ch)
        if e is not None:
            out.append(e)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _json_fields(v: Any) -> dict | None:
    fields = getattr(v, "__dataclass_fields__", None)
    if fields is not None:
        return {k: getattr(v, k) for k in fields}
    d = getattr(v, "__dict__", None)
    if d is not None:
        return {k: x for k, x in d.items() if not k.startswith("_")}
    return None


def go_json(v: Any, indent: str = "", _level: int = 0) -> str:
    """Go's json.Marshal (indent="") or json.MarshalIndent(v, "", indent)."""
    if v is None or v is MISSING:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, dict):
        pairs = sorted(((str(k), x) for k, x in v.items()), key=lambda kv: kv[0])
    elif isinstance(v, (list, tuple)):
        pairs = None
    else:
        fields = _json_fields(v)
        if fields is None:
            return _json_str(str(v))
        pairs = list(fields.items())
    nl = ("\n" + indent * (_level + 1)) if indent else ""
    end = ("\n" + indent * _level) if indent else ""
    if pairs is None:
        if not v:
            return "[]"
        body = [go_json(x, indent, _level + 1) for x in v]
        return "[" + nl + ("," + nl).join(body) + end + "]"
    if not pairs:
        return "{}"
    colon = ": " if indent else ":"
    body = [_json_str(k) + colon + go_json(x, indent, _level + 1) for k, x in pairs]
    return "{" + nl + ("," + nl).join(body) + end + "}"


def _go_quote(s: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


# ---------------------------------------------------------------------------
# printf: the common verbs of Go's fmt
# ---------------------------------------------------------------------------


def _bad_verb(verb: str, arg: Any) -> str:
    if arg is None or arg is MISSING:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_go_type(arg)}={go_sprint(arg)})"


def _format_one(verb: str, flags: str, width: int | None, prec: int | None, arg: Any) -> str:
    isnum = isinstance(arg, (int, float)) and not isinstance(arg, bool)
    if verb == "v":
        s = go_sprint(arg)
    elif verb == "s":
        if isinstance(arg, (int, float, bool)) or arg is None:
            return _bad_verb(verb, arg)
        s = go_sprint(arg)
        if prec is not None:
            s = s[:prec]
    elif verb == "q":
        if isinstance(arg, str):
            s = _go_quote(arg)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            s = "'" + chr(arg) + "'"
        else:
            return _bad_verb(verb, arg)
    elif verb == "t":
        if not isinstance(arg, bool):
            return _bad_verb(verb, arg)
        s = go_sprint(arg)
    elif verb in "dboxXc":
        if verb in "xX" and isinstance(arg, str):
            s = arg.encode().hex()
            s = s.upper() if verb == "X" else s
        elif not isinstance(arg, int) or isinstance(arg, bool):
            return _bad_verb(verb, arg)
        elif verb == "c":
            s = chr(arg)
        else:
            base = {"d": "d", "b": "b", "o": "o", "x": "x", "X": "X"}[verb]
            s = format(abs(arg), base)
            if prec is not None:
                s = s.rjust(prec, "0")
            if "#" in flags and verb in "xXo":
                s = {"x": "0x", "X": "0X", "o": "0"}[verb] + s
            s = ("-" if arg < 0 else "+" if "+" in flags else "") + s
    elif verb in "eEfFgG":
        if not isnum:
            return _bad_verb(verb, arg)
        f = float(arg)
        if prec is None and verb in "gG":
            s = _go_float_v(f) if verb == "g" else _go_float_v(f).upper()
        else:
            s = format(f, ("+" if "+" in flags else "") + "." + str(6 if prec is None else prec)
                       + verb)
    else:
        return _bad_verb(verb, arg)
    if width is not None and len(s) < width:
        if "-" in flags:
            s = s.ljust(width)
        elif "0" in flags and isnum and verb not in "sqvc":
            neg = s[:1] in "+-"
            s = s[:1] + s[1:].rjust(width - 1, "0") if neg else s.rjust(width, "0")
        else:
            s = s.rjust(width)
    return s


def go_sprintf(fmt: str, *args: Any) -> str:
    """A subset of Go's fmt.Sprintf: flags -+#0, width, precision, common verbs."""
    out: list[str] = []
    i, n, argi = 0, len(fmt), 0
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        if i >= n:
            out.append("%!(NOVERB)")
            break
        flags = ""
        while i < n and fmt[i] in "-+# 0":
            flags += fmt[i]
            i += 1
        width = prec = None
        k = i
        while i < n and fmt[i].isdigit():
            i += 1
        if i > k:
            width = int(fmt[k:i]) if i - k <= 7 else MAX_WIDTH + 1
            if width > MAX_WIDTH:
                out.append("%!(BADWIDTH)")
                width = None
        if i < n and fmt[i] == ".":
            i += 1
            k = i
            while i < n and fmt[i].isdigit():
                i += 1
            prec = int(fmt[k:i] or 0) if i - k <= 7 else MAX_WIDTH + 1
            if prec > MAX_WIDTH:
                out.append("%!(BADPREC)")
                prec = None
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_format_one(verb, flags, width, prec, args[argi]))
        argi += 1
    if argi < len(args):
        extra = ", ".join(
            "<nil>" if a is None or a is MISSING else f"{_go_type(a)}={go_sprint(a)}"
            for a in args[argi:]
        )
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


# ---------------------------------------------------------------------------
# Lexer (Go: text/template/parse/lex.go)
# ---------------------------------------------------------------------------

# token kinds
T_ERROR, T_EOF, T_TEXT, T_LEFT, T_RIGHT, T_SPACE = range(6)
T_FIELD, T_IDENT, T_VAR, T_DOT, T_BOOL, T_NUMBER, T_STRING, T_RAW = range(6, 14)
T_CHARCONST, T_COMPLEX, T_PIPE, T_LPAREN, T_RPAREN, T_ASSIGN, T_DECLARE, T_CHAR = range(14, 22)
T_KEYWORD = 100  # kinds above are keywords
T_NIL, T_IF, T_ELSE, T_END, T_RANGE, T_WITH, T_DEFINE, T_TEMPLATE, T_BLOCK = range(101, 110)
_KEYWORDS = {".": T_DOT, "nil": T_NIL, "if": T_IF, "else": T_ELSE, "end": T_END,
             "range": T_RANGE, "with": T_WITH, "define": T_DEFINE,
             "template": T_TEMPLATE, "block": T_BLOCK}
_SPACE = " \t\r\n"
_TERMINATORS = frozenset(" \t\r\n.,|:)(")


class _Tok:
    __slots__ = ("kind", "line", "pos", "val")

    def __init__(self, kind: int, val: str, pos: int, line: int) -> None:
        self.kind, self.val, self.pos, self.line = kind, val, pos, line

    def __str__(self) -> str:  # Go: item.String()
        if self.kind == T_EOF:
            return "EOF"
        if self.kind == T_ERROR:
            return self.val
        if self.kind > T_KEYWORD:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return _go_quote(self.val)[:11] + "..."
        return _go_quote(self.val)


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdigit()


def _unicode_name(c: str) -> str:
    """Go's %#U for a rune."""
    return f"U+{ord(c):04X} '{c}'" if c.isprintable() else f"U+{ord(c):04X}"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.s = text
        self.pos = self.start = 0
        self.line = self.start_line = 1
        self.paren = 0
        self.toks: list[_Tok] = []

    def run(self) -> list[_Tok]:
        state: Callable[[], Any] | None = self.lex_text
        while state is not None:
            state = state()
        return self.toks

    def emit(self, kind: int) -> None:
        self.toks.append(_Tok(kind, self.s[self.start:self.pos], self.start, self.start_line))
        self.start = self.pos
        self.start_line = self.line

    def ignore(self) -> None:
        self.line += self.s.count("\n", self.start, self.pos)
        self.start = self.pos
        self.start_line = self.line

    def error(self, msg: str) -> None:
        self.toks.append(_Tok(T_ERROR, msg, self.start, self.start_line))

    def peek(self) -> str:
        return self.s[self.pos] if self.pos < len(self.s) else ""

    def next(self) -> str:
        if self.pos >= len(self.s):
            self.pos += 1  # mirrors Go's atEOF: a later backup undoes this
            return ""
        c = self.s[self.pos]
        self.pos += 1
        if c == "\n":
            self.line += 1
        return c

    def backup(self) -> None:
        self.pos -= 1
        if self.pos < len(self.s) and self.s[self.pos] == "\n":
            self.line -= 1

    def at_terminator(self) -> bool:
        c = self.peek()
        return c == "" or c in _TERMINATORS or self.s.startswith("}}", self.pos)

    def at_right_delim(self) -> tuple[bool, bool]:
        s, p = self.s, self.pos
        if p + 1 < len(s) and s[p] in _SPACE and s[p + 1] == "-" and s.startswith("}}", p + 2):
            return True, True
        return s.startswith("}}", p), False

    # states
    def lex_text(self):
        s = self.s
        x = s.find("{{", self.pos)
        if x < 0:
            self.pos = len(s)
            if self.pos > self.start:
                self.line += s.count("\n", self.start, self.pos)
                self.emit(T_TEXT)
            self.emit(T_EOF)
            return None
        self.pos = x
        trim = 0
        if len(s) >= x + 4 and s[x + 2] == "-" and s[x + 3] in _SPACE:
            seg = s[self.start:x]
            trim = len(seg) - len(seg.rstrip(_SPACE))
        self.pos -= trim
        if self.pos > self.start:
            self.line += s.count("\n", self.start, self.pos)
            self.emit(T_TEXT)
        self.pos += trim
        self.ignore()
        return self.lex_left_delim

    def lex_left_delim(self):
        s = self.s
        self.pos += 2
        trim = len(s) >= self.pos + 2 and s[self.pos] == "-" and s[self.pos + 1] in _SPACE
        after = 2 if trim else 0
        if s.startswith("/*", self.pos + after):
            self.pos += after
            self.ignore()
            return self.lex_comment
        self.emit(T_LEFT)
        self.pos += after
        self.ignore()
        self.paren = 0
        return self.lex_inside

    def lex_comment(self):
        self.pos += 2
        i = self.s.find("*/", self.pos)
        if i < 0:
            return self.error("unclosed comment")
        self.pos = i + 2
        delim, trim = self.at_right_delim()
        if not delim:
            return self.error("comment ends before closing delimiter")
        if trim:
            self.pos += 2
        self.pos += 2
        if trim:
            rest = self.s[self.pos:]
            self.pos += len(rest) - len(rest.lstrip(_SPACE))
        self.ignore()
        return self.lex_text

    def lex_right_delim(self):
        _, trim = self.at_right_delim()
        if trim:
            self.pos += 2
            self.ignore()
        self.pos += 2
        self.emit(T_RIGHT)
        if trim:
            rest = self.s[self.pos:]
            self.pos += len(rest) - len(rest.lstrip(_SPACE))
            self.ignore()
        return self.lex_text

    def lex_inside(self):
        delim, _ = self.at_right_delim()
        if delim:
            if self.paren == 0:
                return self.lex_right_delim
            return self.error("unclosed left paren")
        c = self.next()
        if c == "":
            return self.error("unclosed action")
        if c in _SPACE:
            self.backup()
            return self.lex_space
        if c == "=":
            self.emit(T_ASSIGN)
        elif c == ":":
            if self.next() != "=":
                return self.error("expected :=")
            self.emit(T_DECLARE)
        elif c == "|":
            self.emit(T_PIPE)
        elif c == '"':
            return self.lex_quote
        elif c == "`":
            return self.lex_raw
        elif c == "$":
            return self.lex_variable
        elif c == "'":
            return self.lex_char
        elif c == "." and not ("0" <= self.peek() <= "9" and self.peek() != ""):
            return self.lex_field
        elif c in ".+-" or "0" <= c <= "9":
            self.backup()
            return self.lex_number
        elif _is_alnum(c):
            self.backup()
            return self.lex_identifier
        elif c == "(":
            self.emit(T_LPAREN)
            self.paren += 1
        elif c == ")":
            self.emit(T_RPAREN)
            self.paren -= 1
            if self.paren < 0:
                return self.error(f"unexpected right paren {_unicode_name(c)}")
        elif c <= "\x7f" and c.isprintable():
            self.emit(T_CHAR)
        else:
            return self.error(f"unrecognized character in action: {_unicode_name(c)}")
        return self.lex_inside

    def lex_space(self):
        n = 0
        while self.peek() != "" and self.peek() in _SPACE:
            self.next()
            n += 1
        s, p = self.s, self.pos - 1
        if p + 1 < len(s) and s[p] in _SPACE and s[p + 1] == "-" and s.startswith("}}", p + 2):
            self.backup()
            if n == 1:
                return self.lex_right_delim
        self.emit(T_SPACE)
        return self.lex_inside

    def lex_identifier(self):
        while True:
            c = self.next()
            if c and _is_alnum(c):
                continue
            self.backup()
            word = self.s[self.start:self.pos]
            if not self.at_terminator():
                return self.error(f"bad character {_unicode_name(c)}")
            kind = _KEYWORDS.get(word)
            if kind is not None and kind > T_KEYWORD:
                self.emit(kind)
            elif word in ("true", "false"):
                self.emit(T_BOOL)
            else:
                self.emit(T_IDENT)
            return self.lex_inside

    def lex_field(self):
        return self._field_or_var(T_FIELD)

    def lex_variable(self):
        if self.at_terminator():
            self.emit(T_VAR)
            return self.lex_inside
        return self._field_or_var(T_VAR)

    def _field_or_var(self, kind: int):
        if self.at_terminator():
            self.emit(T_VAR if kind == T_VAR else T_DOT)
            return self.lex_inside
        while True:
            c = self.next()
            if not (c and _is_alnum(c)):
                self.backup()
                break
        if not self.at_terminator():
            return self.error(f"bad character {_unicode_name(c)}")
        self.emit(kind)
        return self.lex_inside

    def _quoted(self, q: str, kind: int, what: str):
        while True:
            c = self.next()
            if c == "\\":
                c = self.next()
                if c and c != "\n":
                    continue
                return self.error(f"unterminated {what}")
            if c == "" or c == "\n":
                return self.error(f"unterminated {what}")
            if c == q:
                break
        self.emit(kind)
        return self.lex_inside

    def lex_char(self):
        return self._quoted("'", T_CHARCONST, "character constant")

    def lex_quote(self):
        return self._quoted('"', T_STRING, "quoted string")

    def lex_raw(self):
        i = self.s.find("`", self.pos)
        if i < 0:
            return self.error("unterminated raw quoted string")
        self.line += self.s.count("\n", self.pos, i)
        self.pos = i + 1
        self.emit(T_RAW)
        return self.lex_inside

    def _accept(self, valid: str) -> bool:
        c = self.next()
        if c and c in valid:
            return True
        self.backup()
        return False

    def _accept_run(self, valid: str) -> None:
        while True:
            c = self.next()
            if not (c and c in valid):
                self.backup()
                return

    def _scan_number(self) -> bool:
        self._accept("+-")
        digits = "0123456789_"
        if self._accept("0"):
            if self._accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self._accept("oO"):
                digits = "01234567_"
            elif self._accept("bB"):
                digits = "01_"
        self._accept_run(digits)
        if self._accept("."):
            self._accept_run(digits)
        if len(digits) == 11 and self._accept("eE"):
            self._accept("+-")
            self._accept_run("0123456789_")
        if len(digits) == 23 and self._accept("pP"):
            self._accept("+-")
            self._accept_run("0123456789_")
        self._accept("i")
        c = self.peek()
        if c and _is_alnum(c):
            self.next()
            return False
        return True

    def lex_number(self):
        if not self._scan_number():
            return self.error(f"bad number syntax: {_go_quote(self.s[self.start:self.pos])}")
        if self.peek() in ("+", "-") and self.peek():
            if not self._scan_number() or self.s[self.pos - 1] != "i":
                return self.error(f"bad number syntax: {_go_quote(self.s[self.start:self.pos])}")
            self.emit(T_COMPLEX)
        else:
            self.emit(T_NUMBER)
        return self.lex_inside


# ---------------------------------------------------------------------------
# Nodes (Go: text/template/parse/node.go); str() gives Go's Node.String()
# ---------------------------------------------------------------------------


class _Node:
    __slots__ = ("pos",)
    pos: int


class _Text(_Node):
    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        self.pos, self.text = pos, text

    def __str__(self) -> str:
        return self.text


class _Pipe(_Node):
    __slots__ = ("cmds", "decl", "is_assign", "line")

    def __init__(self, pos: int, line: int) -> None:
        self.pos, self.line = pos, line
        self.decl: list[_Var] = []
        self.is_assign = False
        self.cmds: list[_Command] = []

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(map(str, self.decl)) + (" = " if self.is_assign else " := ")
        return s + " | ".join(map(str, self.cmds))


class _Action(_Node):
    __slots__ = ("pipe",)

    def __init__(self, pos: int, pipe: _Pipe) -> None:
        self.pos, self.pipe = pos, pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class _Command(_Node):
    __slots__ = ("args",)

    def __init__(self, pos: int) -> None:
        self.pos = pos
        self.args: list[_Node] = []

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, _Pipe) else str(a) for a in self.args)


class _Field(_Node):
    __slots__ = ("idents",)

    def __init__(self, pos: int, ident: str) -> None:
        self.pos, self.idents = pos, ident[1:].split(".")

    def __str__(self) -> str:
        return "".join("." + i for i in self.idents)


class _Var(_Node):
    __slots__ = ("idents",)

    def __init__(self, pos: int, ident: str) -> None:
        self.pos, self.idents = pos, ident.split(".")

    def __str__(self) -> str:
        return ".".join(self.idents)


class _Chain(_Node):
    __slots__ = ("fields", "node")

    def __init__(self, pos: int, node: _Node) -> None:
        self.pos, self.node = pos, node
        self.fields: list[str] = []

    def __str__(self) -> str:
        base = f"({self.node})" if isinstance(self.node, _Pipe) else str(self.node)
        return base + "".join("." + f for f in self.fields)


class _Ident(_Node):
    __slots__ = ("name",)

    def __init__(self, pos: int, name: str) -> None:
        self.pos, self.name = pos, name

    def __str__(self) -> str:
        return self.name


class _Literal(_Node):
    """dot, nil, bool, number and string nodes: a constant plus its source text."""

    __slots__ = ("kind", "text", "value")

    def __init__(self, pos: int, kind: int, value: Any, text: str) -> None:
        self.pos, self.kind, self.value, self.text = pos, kind, value, text

    def __str__(self) -> str:
        return self.text


class _List(_Node):
    __slots__ = ("nodes",)

    def __init__(self, pos: int) -> None:
        self.pos = pos
        self.nodes: list[_Node] = []

    def __str__(self) -> str:
        return "".join(map(str, self.nodes))


class _Branch(_Node):
    """if, range and with."""

    __slots__ = ("else_list", "kind", "list", "pipe")

    def __init__(self, kind: str, pipe: _Pipe, lst: _List, else_list: _List | None) -> None:
        self.pos, self.kind, self.pipe, self.list, self.else_list = (
            pipe.pos, kind, pipe, lst, else_list)

    def __str__(self) -> str:
        s = "{{" + self.kind + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            s += "{{else}}" + str(self.else_list)
        return s + "{{end}}"


class _End(_Node):
    __slots__ = ("word",)

    def __init__(self, pos: int, word: str) -> None:
        self.pos, self.word = pos, word

    def __str__(self) -> str:
        return "{{" + self.word + "}}"


# ---------------------------------------------------------------------------
# Parser (Go: text/template/parse/parse.go)
# ---------------------------------------------------------------------------


class _ParseError(Exception):
    pass


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", "'": "'", '"': '"'}


def _unquote(tok: _Tok) -> str:
    """strconv.Unquote for "...", `...` and '.' tokens."""
    s = tok.val
    if tok.kind == T_RAW:
        return s[1:-1].replace("\r", "")
    body, out, i = s[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            hexd = body[i + 2:i + 2 + n]
            try:
                out.append(chr(int(hexd, 16)) if len(hexd) == n else "")
            except ValueError:
                raise _ParseError("invalid syntax") from None
            if len(hexd) != n:
                raise _ParseError("invalid syntax")
            i += 2 + n
        elif e in "01234567":
            try:
                out.append(chr(int(body[i + 1:i + 4], 8)))
            except ValueError:
                raise _ParseError("invalid syntax") from None
            i += 4
        else:
            raise _ParseError("invalid syntax")
    return "".join(out)


def _parse_number(tok: _Tok) -> Any:
    text = tok.val
    if tok.kind == T_CHARCONST:
        r = _unquote(tok)
        if len(r) != 1:
            raise _ParseError(f"malformed character constant: {text}")
        return ord(r)
    if tok.kind == T_COMPLEX:
        raise _ParseError(f"complex numbers are not supported: {text}")
    clean = text.replace("_", "")
    try:
        n = int(clean, 0)
    except ValueError:
        pass
    else:
        if not -(1 << 63) <= n < (1 << 64):
            raise _ParseError(f"integer overflow: {_go_quote(text)}")
        return n
    try:
        low = clean.lower()
        if low.lstrip("+-").startswith("0x"):
            return float.fromhex(clean)
        if "." in clean or "e" in low:
            f = float(clean)
            if not math.isinf(f):
                return f
    except ValueError:
        pass
    if clean.lstrip("+-").isdigit():  # leading-zero octal, as Go reads it
        try:
            return int(clean.replace("0", "0o", 1) if clean[0] == "0" else clean, 0)
        except ValueError:
            pass
    raise _ParseError(f"illegal number syntax: {_go_quote(text)}")


class _Parser:
    def __init__(self, text: str, funcs: dict[str, tuple[Callable[..., Any], int, int]]) -> None:
        self.toks = _Lexer(text).run()
        self.i = 0
        self.seen = 0  # furthest token handed out; its line is Go's t.token[0].line
        self.funcs = funcs
        self.vars = ["$"]
        self.action_line = 0
        self.depth = 0

    def _deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.errorf("max expression depth exceeded")

    # token stream
    def next(self) -> _Tok:
        t = self.toks[min(self.i, len(self.toks) - 1)]
        self.i += 1
        self.seen = max(self.seen, self.i - 1)
        return t

    def backup(self, n: int = 1) -> None:
        self.i -= n

    def peek(self) -> _Tok:
        t = self.next()
        self.backup()
        return t

    def next_non_space(self) -> _Tok:
        t = self.next()
        while t.kind == T_SPACE:
            t = self.next()
        return t

    def peek_non_space(self) -> _Tok:
        start = self.i
        t = self.next_non_space()
        self.i = start
        while self.toks[self.i].kind == T_SPACE:
            self.i += 1
        return t

    def errorf(self, msg: str) -> None:
        line = self.toks[min(self.seen, len(self.toks) - 1)].line
        raise _ParseError(f"template: :{line}: {msg}")

    def unexpected(self, tok: _Tok, context: str) -> None:
        if tok.kind == T_ERROR:
            extra = ""
            if self.action_line and self.action_line != tok.line:
                extra = f" in action started at :{self.action_line}"
                if tok.val.endswith(" action"):
                    extra = extra[len(" in action"):]
            self.errorf(f"{tok}{extra}")
        self.errorf(f"unexpected {tok} in {context}")

    def expect(self, kind: int, context: str) -> _Tok:
        t = self.next_non_space()
        if t.kind != kind:
            self.unexpected(t, context)
        return t

    # grammar
    def parse(self) -> _List:
        root = _List(self.peek().pos)
        while self.peek().kind != T_EOF:
            n = self.text_or_action()
            if isinstance(n, _End):
                self.errorf(f"unexpected {n}")
            if n is not None:
                root.nodes.append(n)
        return root

    def item_list(self) -> tuple[_List, _End]:
        lst = _List(self.peek_non_space().pos)
        while self.peek_non_space().kind != T_EOF:
            n = self.text_or_action()
            if isinstance(n, _End):
                return lst, n
            if n is not None:
                lst.nodes.append(n)
        self.errorf("unexpected EOF")
        raise AssertionError  # not reached

    def text_or_action(self) -> _Node | None:
        tok = self.next_non_space()
        if tok.kind == T_TEXT:
            return _Text(tok.pos, tok.val)
        if tok.kind == T_LEFT:
            self.action_line = tok.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        self.unexpected(tok, "input")
        return None

    def action(self) -> _Node:
        tok = self.next_non_space()
        k = tok.kind
        if k == T_ELSE:
            return self.else_control()
        if k == T_END:
            return _End(self.expect(T_RIGHT, "end").pos, "end")
        if k in (T_IF, T_RANGE, T_WITH):
            return self.control(tok.val)
        if k in (T_DEFINE, T_TEMPLATE, T_BLOCK):
            self.errorf(f"{{{{{tok.val}}}}} is not supported by pymachine")
        self.backup()
        tok = self.peek()
        return _Action(tok.pos, self.pipeline("command", T_RIGHT))

    def else_control(self) -> _End:
        peek = self.peek_non_space()
        if peek.kind == T_IF:
            return _End(peek.pos, "else")
        tok = self.expect(T_RIGHT, "else")
        return _End(tok.pos, "else")

    def control(self, kind: str) -> _Branch:
        nvars = len(self.vars)
        self._deeper()
        try:
            pipe = self.pipeline(kind, T_RIGHT)
            lst, nxt = self.item_list()
            else_list = None
            if nxt.word == "else":
                if kind == "if" and self.peek().kind == T_IF:
                    self.next()
                    else_list = _List(nxt.pos)
                    else_list.nodes.append(self.control("if"))
                else:
                    else_list, nxt = self.item_list()
                    if nxt.word != "end":
                        self.errorf(f"expected end; found {nxt}")
            return _Branch(kind, pipe, lst, else_list)
        finally:
            self.depth -= 1
            del self.vars[nvars:]

    def pipeline(self, context: str, end: int) -> _Pipe:
        tok = self.peek_non_space()
        pipe = _Pipe(tok.pos, tok.line)
        while True:  # declarations
            v = self.peek_non_space()
            if v.kind != T_VAR:
                break
            self.next_non_space()
            after = self.peek()
            nxt = self.peek_non_space()
            if nxt.kind in (T_ASSIGN, T_DECLARE):
                pipe.is_assign = nxt.kind == T_ASSIGN
                self.next_non_space()
                pipe.decl.append(_Var(v.pos, v.val))
                self.vars.append(v.val)
            elif nxt.kind == T_CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(_Var(v.pos, v.val))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().kind in (T_VAR, T_RIGHT, T_RPAREN):
                        continue
                    self.errorf("range can only initialize variables")
                self.errorf(f"too many declarations in {context}")
            elif after.kind == T_SPACE:
                self._backup_to(v)
            else:
                self._backup_to(v)
            break
        while True:
            tok = self.next_non_space()
            if tok.kind == end:
                self.check_pipeline(pipe, context)
                return pipe
            if tok.kind in (T_BOOL, T_CHARCONST, T_COMPLEX, T_DOT, T_FIELD, T_IDENT, T_NUMBER,
                            T_NIL, T_RAW, T_STRING, T_VAR, T_LPAREN):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                self.unexpected(tok, context)

    def _backup_to(self, tok: _Tok) -> None:
        self.i = self.toks.index(tok)

    def check_pipeline(self, pipe: _Pipe, context: str) -> None:
        if not pipe.cmds:
            self.errorf(f"missing value for {context}")
        for i, c in enumerate(pipe.cmds[1:]):
            a = c.args[0]
            if isinstance(a, _Literal):
                self.errorf(f"non executable command in pipeline stage {i + 2}")

    def command(self) -> _Command:
        cmd = _Command(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            op = self.operand()
            if op is not None:
                cmd.args.append(op)
            tok = self.next()
            if tok.kind == T_SPACE:
                continue
            if tok.kind in (T_RIGHT, T_RPAREN):
                self.backup()
            elif tok.kind != T_PIPE:
                self.unexpected(tok, "operand")
            break
        if not cmd.args:
            self.errorf("empty command")
        return cmd

    def operand(self) -> _Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().kind == T_FIELD:
            chain = _Chain(self.peek().pos, node)
            while self.peek().kind == T_FIELD:
                chain.fields.append(self.next().val[1:])
            if isinstance(node, _Field):
                return _Field(chain.pos, str(chain))
            if isinstance(node, _Var):
                return _Var(chain.pos, str(chain))
            if isinstance(node, _Literal):
                self.errorf(f"unexpected . after term {_go_quote(str(node))}")
            return chain
        return node

    def term(self) -> _Node | None:
        tok = self.next_non_space()
        k = tok.kind
        if k == T_IDENT:
            if tok.val not in self.funcs:
                self.errorf(f"function {_go_quote(tok.val)} not defined")
            return _Ident(tok.pos, tok.val)
        if k == T_DOT:
            return _Literal(tok.pos, T_DOT, None, ".")
        if k == T_NIL:
            return _Literal(tok.pos, T_NIL, None, "nil")
        if k == T_VAR:
            name = tok.val.split(".")[0]
            if name not in self.vars:
                self.errorf(f"undefined variable {_go_quote(name)}")
            return _Var(tok.pos, tok.val)
        if k == T_FIELD:
            return _Field(tok.pos, tok.val)
        if k == T_BOOL:
            return _Literal(tok.pos, T_BOOL, tok.val == "true", tok.val)
        if k in (T_CHARCONST, T_COMPLEX, T_NUMBER):
            try:
                return _Literal(tok.pos, T_NUMBER, _parse_number(tok), tok.val)
            except _ParseError as e:
                self.errorf(str(e))
        if k == T_LPAREN:
            self._deeper()
            try:
                return self.pipeline("parenthesized pipeline", T_RPAREN)
            finally:
                self.depth -= 1
        if k in (T_STRING, T_RAW):
            try:
                return _Literal(tok.pos, T_STRING, _unquote(tok), tok.val)
            except _ParseError as e:
                self.errorf(str(e))
        self.backup()
        return None


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------


class _FuncError(Exception):
    """A function failed: Go reports ``error calling NAME: MSG``.

    ``argi`` names the argument whose type was wrong, if that was the failure.
    """

    def __init__(self, msg: str, argi: int | None = None) -> None:
        super().__init__(msg)
        self.argi = argi


class _ExecError(Exception):
    pass


def _truth(v: Any) -> bool:
    if v is None or v is MISSING:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


def _f_len(v: Any) -> int:
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, (list, tuple, dict)):
        return len(v)
    raise _FuncError(f"len of type {_go_type(v)}")


def _f_index(item: Any, *keys: Any) -> Any:
    for k in keys:
        if item is None or item is MISSING:
            raise _FuncError("index of untyped nil")
        if isinstance(item, dict):
            item = item.get(k)
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                raise _FuncError(f"cannot index slice/array with type {_go_type(k)}")
            if not 0 <= k < len(item):
                raise _FuncError(f"index out of range: {k}")
            item = item[k] if not isinstance(item, str) else item.encode()[k]
        else:
            raise _FuncError(f"can't index item of type {_go_type(item)}")
    return item


def _f_slice(item: Any, *idx: Any) -> Any:
    if not isinstance(item, (list, tuple, str)):
        raise _FuncError(f"can't slice item of type {_go_type(item)}")
    if len(idx) > 2:
        raise _FuncError(f"too many slice indexes: {len(idx)}")
    for i in idx:
        if not isinstance(i, int) or not 0 <= i <= len(item):
            raise _FuncError(f"index out of range: {i}")
    if len(idx) == 2 and idx[0] > idx[1]:
        raise _FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(idx) == 2:
        return item[idx[0]:idx[1]]
    return item[idx[0]:] if idx else item


def _f_print(*args: Any) -> str:
    out: list[str] = []
    prev_str = True
    for i, a in enumerate(args):
        is_str = isinstance(a, str)
        if i > 0 and not is_str and not prev_str:
            out.append(" ")
        out.append(go_sprint(a))
        prev_str = is_str
    return "".join(out)


def _f_println(*args: Any) -> str:
    return " ".join(map(go_sprint, args)) + "\n"


def _basic(v: Any) -> Any:
    if v is MISSING:
        return None
    if isinstance(v, (list, tuple, dict)):
        raise _FuncError(f"non-comparable type {go_sprint(v)}: {_go_type(v)}")
    return v


def _f_eq(a: Any, *bs: Any) -> bool:
    a = _basic(a)
    if not bs:
        raise _FuncError("missing argument for comparison")
    for b in bs:
        b = _basic(b)
        mixed = isinstance(a, bool) != isinstance(b, bool) or isinstance(a, str) != isinstance(
            b, str)
        if mixed and a is not None and b is not None:
            raise _FuncError("incompatible types for comparison")
        if a == b:
            return True
    return False


def _f_ne(a: Any, b: Any) -> bool:
    return not _f_eq(a, b)


def _ordered(a: Any, b: Any) -> tuple[Any, Any]:
    a, b = _basic(a), _basic(b)
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        raise _FuncError("invalid type for comparison")
    if (isinstance(a, num) and isinstance(b, num)) or (isinstance(a, str) and isinstance(b, str)):
        return a, b
    raise _FuncError("incompatible types for comparison")


def _f_lt(a: Any, b: Any) -> bool:
    a, b = _ordered(a, b)
    return a < b


def _f_le(a: Any, b: Any) -> bool:
    a, b = _ordered(a, b)
    return a <= b


def _f_gt(a: Any, b: Any) -> bool:
    a, b = _ordered(a, b)
    return a > b


def _f_ge(a: Any, b: Any) -> bool:
    a, b = _ordered(a, b)
    return a >= b


def _f_html(*args: Any) -> str:
    s = _f_print(*args)
    return (s.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&#34;").replace("\0", "\ufffd"))


def _f_urlquery(*args: Any) -> str:
    from urllib.parse import quote_plus

    return quote_plus(_f_print(*args), safe="")


def _str_arg(v: Any, argi: int = 0) -> str:
    if not isinstance(v, str):
        raise _FuncError(f"wrong type for value; expected string; got {_go_type(v)}", argi)
    return v


def _f_json(v: Any) -> str:
    try:
        return go_json(v)
    except ValueError:
        return ""  # docker-machine ignored Marshal errors


def _f_prettyjson(v: Any) -> str:
    try:
        return go_json(v, "    ")
    except ValueError:
        return ""


def _f_join(v: Any, sep: Any) -> str:
    if not isinstance(v, (list, tuple)):
        raise _FuncError(f"wrong type for value; expected []string; got {_go_type(v)}", 0)
    return _str_arg(sep, 1).join(map(go_sprint, v))


# name -> (function, fixed arg count or -1 for variadic with minimum `min`)
_BUILTINS: dict[str, tuple[Callable, int, int]] = {
    "and": (None, -1, 1), "or": (None, -1, 1),  # type: ignore[dict-item]
    "not": (lambda v: not _truth(v), 1, 1),
    "len": (_f_len, 1, 1),
    "index": (_f_index, -1, 1),
    "slice": (_f_slice, -1, 1),
    "print": (_f_print, -1, 0),
    "printf": (lambda f, *a: go_sprintf(_str_arg(f), *a), -1, 1),
    "println": (_f_println, -1, 0),
    "eq": (_f_eq, -1, 1), "ne": (_f_ne, 2, 2),
    "lt": (_f_lt, 2, 2), "le": (_f_le, 2, 2), "gt": (_f_gt, 2, 2), "ge": (_f_ge, 2, 2),
    "html": (_f_html, -1, 0),
    "urlquery": (_f_urlquery, -1, 0),
}

#: Functions docker-machine (json, prettyjson) and the docker CLI (upper, lower, join) add.
EXTRA_FUNCS: dict[str, tuple[Callable, int, int]] = {
    "json": (_f_json, 1, 1),
    "prettyjson": (_f_prettyjson, 1, 1),
    "upper": (lambda s: _str_arg(s).upper(), 1, 1),
    "lower": (lambda s: _str_arg(s).lower(), 1, 1),
    "join": (_f_join, 2, 2),
}


# ---------------------------------------------------------------------------
# Execution (Go: text/template/exec.go)
# ---------------------------------------------------------------------------


class _State:
    __slots__ = ("funcs", "node", "out", "size", "text", "typed_nil", "vars")

    def __init__(self, text: str, funcs: dict, root: Any) -> None:
        self.text = text
        self.funcs = funcs
        self.vars: list[list[Any]] = [["$", root]]
        self.node: _Node | None = None
        self.out: list[str] = []
        self.size = 0
        self.typed_nil = False

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            self.errorf(f"output exceeds {MAX_OUTPUT >> 20} MiB")
        self.out.append(text)

    def errorf(self, msg: str) -> None:
        if self.node is None:
            raise _ExecError(f"template: : {msg}")
        pos = self.node.pos
        before = self.text[:pos]
        nl = before.rfind("\n")
        line = 1 + before.count("\n")
        col = len(before.encode()) if nl < 0 else len(before[nl + 1:].encode())
        ctx = str(self.node)
        if len(ctx) > 20:
            ctx = ctx[:20] + "..."
        raise _ExecError(f'template: :{line}:{col}: executing "" at <{ctx}>: {msg}')

    # walk
    def walk(self, dot: Any, node: _Node) -> None:
        self.node = node
        if isinstance(node, _Text):
            self.emit(node.text)
        elif isinstance(node, _Action):
            val = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.node = node
                self.emit(go_sprint(val))
        elif isinstance(node, _List):
            for n in node.nodes:
                self.walk(dot, n)
        elif isinstance(node, _Branch):
            if node.kind == "range":
                self.walk_range(dot, node)
            else:
                mark = len(self.vars)
                val = self.eval_pipeline(dot, node.pipe)
                if _truth(val):
                    self.walk(val if node.kind == "with" else dot, node.list)
                elif node.else_list is not None:
                    self.walk(dot, node.else_list)
                del self.vars[mark:]

    def walk_range(self, dot: Any, r: _Branch) -> None:
        mark = len(self.vars)
        val = self.eval_pipeline(dot, r.pipe)
        inner = len(self.vars)
        ndecl = len(r.pipe.decl)
        if isinstance(val, dict):
            items: Any = sorted(val.items(), key=lambda kv: _sort_key(kv[0]))
        elif isinstance(val, (list, tuple)):
            items = enumerate(val)
        elif val is None or val is MISSING:
            items = ()
        else:
            self.errorf(f"range can't iterate over {go_sprint(val)}")
        ran = False
        for key, elem in items:
            ran = True
            if ndecl > 0:
                self.vars[-1][1] = elem
            if ndecl > 1:
                self.vars[-2][1] = key
            self.walk(elem, r.list)
            del self.vars[inner:]
        if not ran and r.else_list is not None:
            self.walk(dot, r.else_list)
        del self.vars[mark:]

    # eval
    def eval_pipeline(self, dot: Any, pipe: _Pipe) -> Any:
        self.node = pipe
        value: Any = MISSING
        final = False
        for cmd in pipe.cmds:
            self.typed_nil = False
            value = self.eval_command(dot, cmd, value, final)
            final = True
        if value is None and not self.typed_nil:
            value = MISSING  # Go unwraps a nil interface{} to an invalid value
        for v in pipe.decl:
            if pipe.is_assign:
                self.set_var(v.idents[0], value)
            else:
                self.vars.append([v.idents[0], value])
        return value

    def not_a_function(self, args: list[_Node], has_final: bool) -> None:
        if len(args) > 1 or has_final:
            self.errorf(f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot: Any, cmd: _Command, final: Any, has_final: bool) -> Any:
        first = cmd.args[0]
        if isinstance(first, _Field):
            self.node = first
            return self.eval_chain(dot, dot, first.idents, cmd.args, final, has_final, False)
        if isinstance(first, _Ident):
            return self.eval_function(dot, first, cmd, cmd.args, final, has_final)
        if isinstance(first, _Var):
            self.node = first
            value = self.var_value(first.idents[0])
            if len(first.idents) == 1:
                self.not_a_function(cmd.args, has_final)
                return value
            return self.eval_chain(dot, value, first.idents[1:], cmd.args, final, has_final,
                                   False)
        if isinstance(first, _Chain):
            self.node = first
            if isinstance(first.node, _Literal) and first.node.kind == T_NIL:
                self.errorf(f"indirection through explicit nil in {first}")
            recv = self.eval_arg(dot, first.node)  # Go keeps that node as error context
            return self.eval_chain(dot, recv, first.fields, cmd.args, final, has_final, False)
        if isinstance(first, _Pipe):
            self.not_a_function(cmd.args, has_final)
            return self.eval_pipeline(dot, first)
        self.node = first
        self.not_a_function(cmd.args, has_final)
        assert isinstance(first, _Literal)
        if first.kind == T_DOT:
            return dot
        if first.kind == T_NIL:
            self.errorf("nil is not a command")
        return first.value

    def eval_arg(self, dot: Any, n: _Node) -> Any:
        self.node = n
        if isinstance(n, _Literal):
            return dot if n.kind == T_DOT else n.value
        if isinstance(n, _Field):
            v = self.eval_chain(dot, dot, n.idents, [n], MISSING, False, False)
        elif isinstance(n, _Var):
            v = self.var_value(n.idents[0])
            if len(n.idents) > 1:
                v = self.eval_chain(dot, v, n.idents[1:], [n], MISSING, False, False)
        elif isinstance(n, _Pipe):
            v = self.eval_pipeline(dot, n)
        elif isinstance(n, _Ident):
            v = self.eval_function(dot, n, n, [n], MISSING, False)
        elif isinstance(n, _Chain):
            recv = self.eval_arg(dot, n.node)
            v = self.eval_chain(dot, recv, n.fields, [n], MISSING, False, False)
        else:
            self.errorf(f"can't handle {n} for arg")
        return v

    def eval_chain(self, dot: Any, recv: Any, idents: list[str], args: list[_Node],
                   final: Any, has_final: bool, iface: bool) -> Any:
        last = len(idents) - 1
        for i, name in enumerate(idents):
            if i < last:
                recv, iface = self.eval_field(dot, name, [], MISSING, False, recv, iface)
            else:
                recv, _ = self.eval_field(dot, name, args, final, has_final, recv, iface)
        return recv

    def eval_field(self, dot: Any, name: str, args: list[_Node], final: Any,
                   has_final: bool, recv: Any, iface: bool) -> tuple[Any, bool]:
        if recv is MISSING:
            return MISSING, True
        if recv is None:
            self.errorf(f"nil pointer evaluating {'interface {}' if iface else '<nil>'}.{name}")
        has_args = len(args) > 1 or has_final
        if isinstance(recv, dict):
            if has_args:
                self.errorf(f"{name} is not a method but has arguments")
            self.typed_nil = False
            return recv.get(name, MISSING), True
        if (not isinstance(recv, (str, int, float, bool, list, tuple))
                and not name.startswith("_") and hasattr(recv, name)):
            attr = getattr(recv, name)
            if callable(attr):
                argv = [self.eval_arg(dot, a) for a in args[1:]]
                if has_final:
                    argv.append(final)
                try:
                    result = attr(*argv)
                except TypeError as e:
                    self.errorf(f"wrong number of args for {name}: {e}")
                except Exception as e:  # noqa: BLE001 - Go reports any method error
                    self.errorf(f"error calling {name}: {e}")
                self.typed_nil = True
                return result, False
            if has_args:
                self.errorf(f"{name} has arguments but cannot be invoked as function")
            self.typed_nil = True
            return attr, False
        typ = "interface {}" if iface else _go_type(recv)
        self.errorf(f"can't evaluate field {name} in type {typ}")
        raise AssertionError

    def eval_function(self, dot: Any, node: _Ident, cmd: _Node, args: list[_Node],
                      final: Any, has_final: bool) -> Any:
        self.node = node
        name = node.name
        fn, nfixed, nmin = self.funcs[name]
        argn = args[1:]
        count = len(argn) + (1 if has_final else 0)
        if nfixed >= 0 and count != nfixed:
            self.errorf(f"wrong number of args for {name}: want {nfixed} got {count}")
        if nfixed < 0 and count < nmin:
            self.errorf(f"wrong number of args for {name}: want at least {nmin} got {len(argn)}")
        if fn is None:  # and / or: short-circuit, return the deciding value
            want = name == "or"
            v: Any = MISSING
            for a in argn:
                v = self.eval_arg(dot, a)
                if _truth(v) == want:
                    return v
            return final if has_final else v
        argv = [self.eval_arg(dot, a) for a in argn]
        if has_final:
            argv.append(final)
        argv = [None if a is MISSING else a for a in argv]
        try:
            result = fn(*argv)
            if isinstance(result, str) and len(result) > MAX_OUTPUT:
                self.errorf(f"{name} result exceeds {MAX_OUTPUT >> 20} MiB")
            return result
        except _FuncError as e:
            if e.argi is not None:  # Go checks argument types before the call
                self.node = argn[e.argi] if e.argi < len(argn) else node
                self.errorf(str(e))
            self.node = cmd
            self.errorf(f"error calling {name}: {e}")
        raise AssertionError

    def var_value(self, name: str) -> Any:
        for n, v in reversed(self.vars):
            if n == name:
                return v
        self.errorf(f"undefined variable: {name}")

    def set_var(self, name: str, value: Any) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        self.errorf(f"undefined variable: {name}")


class Template:
    """A parsed template; ``execute`` may be called any number of times."""

    __slots__ = ("_funcs", "_root", "text")

    def __init__(self, text: str, root: _List, funcs: dict) -> None:
        self.text = text
        self._root = root
        self._funcs = funcs

    def execute(self, data: object) -> str:
        if data is None:
            data = MISSING  # Go: reflect.ValueOf(nil) is the invalid value
        state = _State(self.text, self._funcs, data)
        try:
            state.walk(data, self._root)
        except _ExecError as e:
            raise TemplateError(str(e), partial="".join(state.out)) from None
        except RecursionError:
            raise TemplateError("template: : exceeded maximum template depth") from None
        return "".join(state.out)


def parse(text: str, *, extra_funcs: bool = True) -> Template:
    """Parse a Go template; raise TemplateError with Go's message if it is bad.

    ``extra_funcs=False`` leaves only Go's builtins, as docker-machine's ``ls``
    had (its ``inspect`` added json and prettyjson).
    """
    funcs = dict(_BUILTINS)
    if extra_funcs:
        funcs.update(EXTRA_FUNCS)
    if len(text) > MAX_TEXT:
        raise TemplateError(f"template: : template longer than {MAX_TEXT >> 10} KiB", parsing=True)
    try:
        root = _Parser(text, funcs).parse()
    except _ParseError as e:
        raise TemplateError(str(e), parsing=True) from None
    except RecursionError:  # a bound above should stop first; never a traceback
        raise TemplateError("template: : max expression depth exceeded", parsing=True) from None
    return Template(text, root, funcs)


def render(text: str, data: object, *, extra_funcs: bool = True) -> str:
    """Parse ``text`` and execute it against ``data``."""
    return parse(text, extra_funcs=extra_funcs).execute(data)

