"""``--format`` templates are bounded: width, nesting, length and output, each a one-line error."""

from __future__ import annotations

import pytest
from pymachine.machine.templates import MAX_TEXT, TemplateError, render


def test_huge_printf_width_is_refused_like_go():
    # Go's fmt: widths and precisions over 1e6 print %!(BADWIDTH)/%!(BADPREC), not a gigabyte.
    assert render('{{printf "%999999999d" 1}}', {}) == "%!(BADWIDTH)1"
    assert render('{{printf "%.99999999999999999999f" 1.5}}', {}).startswith("%!(BADPREC)")
    assert render('{{printf "%5d|%.2s" 7 "abc"}}', {}) == "    7|ab"


@pytest.mark.parametrize(
    "text",
    ["{{" + "(" * 300 + "1" + ")" * 300 + "}}", "{{if 1}}" * 300 + "x" + "{{end}}" * 300],
)
def test_deep_nesting_is_a_parse_error_not_a_recursion_error(text):
    with pytest.raises(TemplateError, match="max expression depth exceeded") as err:
        render(text, {})
    assert "\n" not in str(err.value)


def test_output_is_capped():
    with pytest.raises(TemplateError, match="output exceeds"):
        render('{{range .}}{{printf "%999999d" 1}}{{end}}', list(range(10)))


def test_intermediate_strings_are_capped():
    text = ('{{$a := printf "%999999d" 1}}{{$b := printf "%s%s%s%s%s" $a $a $a $a $a}}'
            '{{$c := printf "%s%s%s%s%s" $b $b $b $b $b}}{{len $c}}')
    with pytest.raises(TemplateError, match="result exceeds"):
        render(text, {})


def test_template_text_is_capped():
    with pytest.raises(TemplateError, match="longer than"):
        render("x" * (MAX_TEXT + 1), {})
    assert render("{{.}}" * 100, 1) == "1" * 100
