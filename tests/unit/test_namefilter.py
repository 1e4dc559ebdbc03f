"""``ls --filter name=`` is linear time: catastrophic patterns answer at once, results match re."""

from __future__ import annotations

import random
import re
import time

import pytest
from pymachine.machine.errors import MachineError
from pymachine.machine.namefilter import NameFilter

CATASTROPHIC = [r"(a|aa)+$", r"(x+x+)+y", r"^(a+)+$", r"(a*)*b", r"a*a*a*a*a*a*a*a*a*a*a*c", r"^(\w+\s?)*$"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_backtracking_patterns_answer_in_linear_time(pattern):
    name = "a" * 200 + "!" if "x" not in pattern else "x" * 200
    start = time.monotonic()
    got = NameFilter(pattern).search(name)
    assert time.monotonic() - start < 0.5
    assert got is False  # none of them matches these names (re agrees, after minutes)


def test_results_agree_with_python_re_on_ordinary_patterns():
    atoms = ["a", "b", ".", "[ab]", "[^a]", r"\d", r"\w", "-", "[a-c0-9]", r"\b", "^", "$", "(?i:A)", "1",
             r"\B", r"\A", r"\Z", r"\S", r"\W", "(?:a|)", "(?P<n>b)", "[.-]", r"\.", "[A-Z]"]
    rng = random.Random(7)

    def gen(depth: int = 0) -> str:
        r = rng.random()
        if depth > 3 or r < 0.4:
            return rng.choice(atoms)
        if r < 0.6:
            return gen(depth + 1) + gen(depth + 1)
        if r < 0.75:
            return f"({gen(depth + 1)}|{gen(depth + 1)})"
        return f"({gen(depth + 1)})" + rng.choice(["*", "+", "?", "{2}", "{1,3}", "*?", "{,2}", "{3,}", "??"])

    names = ["", "a", "ab", "aab", "abc-1", "x_y", "A", "dev-01", "prod", "aaaa", "m-1.b", "B1"]
    checked = 0
    for _ in range(1500):
        pattern = ("(?i)" if rng.random() < 0.2 else "") + gen()
        try:
            expected = re.compile(pattern)
        except re.error:
            continue
        flt = NameFilter(pattern)
        for name in names:
            assert flt.search(name) == bool(expected.search(name)), (pattern, name)
            checked += 1
    assert checked > 5000


@pytest.mark.parametrize(
    "pattern,why",
    [(r"(a)\1", "not supported"), (r"(?=a)", "not supported"), ("a{2000}", "repeat count"),
     ("x" * 1001, "longer than"), ("(", "missing \\)"), ("((a{1000}){1000}){1000}", "too complex")],
)
def test_refused_patterns_say_why_in_one_line(pattern, why):
    with pytest.raises(MachineError, match=why) as err:
        NameFilter(pattern)
    assert "\n" not in str(err.value)


@pytest.mark.integration
def test_ls_with_a_backtracking_filter_answers_at_once(pm):
    name = "a" * 40
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:1", name)
    start = time.monotonic()
    res = pm.ok("ls", "-q", "--filter", "name=(a|aa)+b$", timeout=30)
    assert res.stdout == ""
    assert pm.ok("ls", "-q", "--filter", "name=^(a|aa)+$").stdout == name + "\n"
    assert time.monotonic() - start < 10
