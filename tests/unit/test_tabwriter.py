"""machine.tabwriter against Go's own text/tabwriter test table and docker-machine ls.

The Go cases are transcribed from golang/go src/text/tabwriter/tabwriter_test.go
(those without HTML filtering or escape bytes). The docker-machine expectations
were produced by running Go 1.19's text/tabwriter with ls's settings.
"""

from __future__ import annotations

import pytest
from pymachine.machine.tabwriter import (
    ALIGN_RIGHT,
    DEBUG,
    DISCARD_EMPTY_COLUMNS,
    Writer,
    tabwrite,
)

GO_CASES = [
    ("1a", 8, 0, 1, ".", 0, "", ""),
    ("1a debug", 8, 0, 1, ".", DEBUG, "", ""),
    ("2", 8, 0, 1, ".", 0, "\n\n\n", "\n\n\n"),
    ("3", 8, 0, 1, ".", 0, "a\nb\nc", "a\nb\nc"),
    ("4a", 8, 0, 1, ".", 0, "\t", ""),
    ("4b", 8, 0, 1, ".", ALIGN_RIGHT, "\t", ""),
    ("5", 8, 0, 1, ".", 0, "*\t*", "*.......*"),
    ("5b", 8, 0, 1, ".", 0, "*\t*\n", "*.......*\n"),
    ("5c", 8, 0, 1, ".", 0, "*\t*\t", "*.......*"),
    ("5c debug", 8, 0, 1, ".", DEBUG, "*\t*\t", "*.......|*"),
    ("5d", 8, 0, 1, ".", ALIGN_RIGHT, "*\t*\t", ".......**"),
    ("6", 8, 0, 1, ".", 0, "\t\n", "........\n"),
    ("7a", 8, 0, 1, ".", 0, "a) foo", "a) foo"),
    ("7b", 8, 0, 1, " ", 0, "b) foo\tbar", "b) foo  bar"),
    ("7c", 8, 0, 1, ".", 0, "c) foo\tbar\t", "c) foo..bar"),
    ("7d", 8, 0, 1, ".", 0, "d) foo\tbar\n", "d) foo..bar\n"),
    ("7e", 8, 0, 1, ".", 0, "e) foo\tbar\t\n", "e) foo..bar.....\n"),
    ("8", 8, 0, 1, "*", 0, "Hello, world!\n", "Hello, world!\n"),
    (
        "9a", 1, 0, 0, ".", 0,
        "1\t2\t3\t4\n11\t222\t3333\t44444\n",
        "1.2..3...4\n11222333344444\n",
    ),
    (
        "9c", 1, 0, 0, ".", 0,
        "1\t2\t3\t4\f11\t222\t3333\t44444\n",
        "1234\n11222333344444\n",
    ),
    (
        "9c debug", 1, 0, 0, ".", DEBUG,
        "1\t2\t3\t4\f11\t222\t3333\t44444\n",
        "1|2|3|4\n---\n11|222|3333|44444\n",
    ),
    ("10a", 5, 0, 0, ".", 0, "1\t2\t3\t4\n", "1....2....3....4\n"),
    ("10b", 5, 0, 0, ".", 0, "1\t2\t3\t4\t\n", "1....2....3....4....\n"),
    (
        "11", 8, 0, 1, ".", 0,
        "本\tb\tc\naa\t\u672c\u672c\u672c\tcccc\tddddd\naaa\tbbbb\n",
        "本.......b.......c\naa......本本本.....cccc....ddddd\naaa.....bbbb\n",
    ),
    (
        "12a", 8, 0, 1, " ", ALIGN_RIGHT,
        "a\tè\tc\t\naa\tèèè\tcccc\tddddd\t\naaa\tèèèè\t\n",
        "       a       è       c\n      aa     èèè    cccc   ddddd\n     aaa    èèèè\n",
    ),
    (
        "12b", 2, 0, 0, " ", 0,
        "a\tb\tc\naa\tbbb\tcccc\naaa\tbbbb\n",
        "a  b  c\naa bbbcccc\naaabbbb\n",
    ),
    (
        "12c", 8, 0, 1, "_", 0,
        "a\tb\tc\naa\tbbb\tcccc\naaa\tbbbb\n",
        "a_______b_______c\naa______bbb_____cccc\naaa_____bbbb\n",
    ),
    (
        "13a", 4, 0, 1, "-", 0,
        ("4444\t日本語\t22\t1\t333\n999999999\t22\n7\t22\n\t\t\t88888888\n\n"
        "666666\t666666\t666666\t4444\n1\t1\t999999999\t0000000000\n"),
        ("4444------日本語-22--1---333\n999999999-22\n7---------22\n"
        "------------------88888888\n\n"
        "666666-666666-666666----4444\n1------1------999999999-0000000000\n"),
    ),
    (
        "13b", 4, 0, 3, ".", 0,
        ("4444\t333\t22\t1\t333\n999999999\t22\n7\t22\n\t\t\t88888888\n\n"
        "666666\t666666\t666666\t4444\n1\t1\t999999999\t0000000000\n"),
        ("4444........333...22...1...333\n999999999...22\n7...........22\n"
        "....................88888888\n\n"
        "666666...666666...666666......4444\n1........1........999999999...0000000000\n"),
    ),
    (
        "13c (no html)", 8, 8, 1, "\t", 0,
        ("4444\t333\t22\t1\t333\n999999999\t22\n7\t22\n\t\t\t88888888\n\n"
        "666666\t666666\t666666\t4444\n1\t1\t999999999\t0000000000\n"),
        ("4444\t\t333\t22\t1\t333\n999999999\t22\n7\t\t22\n\t\t\t\t88888888\n\n"
        "666666\t666666\t666666\t\t4444\n1\t1\t999999999\t0000000000\n"),
    ),
    (
        "14", 1, 0, 2, " ", ALIGN_RIGHT,
        (".0\t.3\t2.4\t-5.1\t\n23.0\t12345678.9\t2.4\t-989.4\t\n5.1\t12.0\t2.4\t-7.0\t\n"
        ".0\t0.0\t332.0\t8908.0\t\n.0\t-.3\t456.4\t22.1\t\n.0\t1.2\t44.4\t-13.3\t\t"),
        ("    .0          .3    2.4    -5.1\n  23.0  12345678.9    2.4  -989.4\n"
        "   5.1        12.0    2.4    -7.0\n    .0         0.0  332.0  8908.0\n"
        "    .0         -.3  456.4    22.1\n    .0         1.2   44.4   -13.3"),
    ),
    (
        "14 debug", 1, 0, 2, " ", ALIGN_RIGHT | DEBUG,
        (".0\t.3\t2.4\t-5.1\t\n23.0\t12345678.9\t2.4\t-989.4\t\n5.1\t12.0\t2.4\t-7.0\t\n"
        ".0\t0.0\t332.0\t8908.0\t\n.0\t-.3\t456.4\t22.1\t\n.0\t1.2\t44.4\t-13.3\t\t"),
        ("    .0|          .3|    2.4|    -5.1|\n  23.0|  12345678.9|    2.4|  -989.4|\n"
        "   5.1|        12.0|    2.4|    -7.0|\n    .0|         0.0|  332.0|  8908.0|\n"
        "    .0|         -.3|  456.4|    22.1|\n    .0|         1.2|   44.4|   -13.3|"),
    ),
    ("15a", 4, 0, 0, ".", 0, "a\t\tb", "a.......b"),
    ("15b", 4, 0, 0, ".", DISCARD_EMPTY_COLUMNS, "a\t\tb", "a.......b"),
    ("15c", 4, 0, 0, ".", DISCARD_EMPTY_COLUMNS, "a\v\vb", "a...b"),
    ("15d", 4, 0, 0, ".", ALIGN_RIGHT | DISCARD_EMPTY_COLUMNS, "a\v\vb", "...ab"),
    (
        "16a", 100, 100, 0, "\t", 0,
        "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
        "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
    ),
    (
        "16b", 100, 100, 0, "\t", DISCARD_EMPTY_COLUMNS,
        "a\vb\v\vd\na\vb\v\vd\ve\na\na\vb\vc\vd\na\vb\vc\vd\ve\n",
        "a\tb\td\na\tb\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
    ),
    (
        "16b debug", 100, 100, 0, "\t", DISCARD_EMPTY_COLUMNS | DEBUG,
        "a\vb\v\vd\na\vb\v\vd\ve\na\na\vb\vc\vd\na\vb\vc\vd\ve\n",
        "a\t|b\t||d\na\t|b\t||d\t|e\na\na\t|b\t|c\t|d\na\t|b\t|c\t|d\t|e\n",
    ),
    (
        "16c", 100, 100, 0, "\t", DISCARD_EMPTY_COLUMNS,
        "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
        "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
    ),
    (
        "16c debug", 100, 100, 0, "\t", DISCARD_EMPTY_COLUMNS | DEBUG,
        "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n",
        "a\t|b\t|\t|d\na\t|b\t|\t|d\t|e\na\na\t|b\t|c\t|d\na\t|b\t|c\t|d\t|e\n",
    ),
]


@pytest.mark.parametrize(
    "minwidth,tabwidth,padding,padchar,flags,src,expected",
    [case[1:] for case in GO_CASES],
    ids=[case[0] for case in GO_CASES],
)
def test_go_table(minwidth, tabwidth, padding, padchar, flags, src, expected):
    assert tabwrite(src, minwidth, tabwidth, padding, padchar, flags) == expected


@pytest.mark.parametrize(
    "minwidth,tabwidth,padding,padchar,flags,src,expected",
    [case[1:] for case in GO_CASES],
    ids=[case[0] for case in GO_CASES],
)
def test_go_table_written_in_pieces(minwidth, tabwidth, padding, padchar, flags, src, expected):
    """Go's test also writes the source in small chunks: results must not change."""
    for chunk in (1, 2, 7):
        w = Writer(minwidth, tabwidth, padding, padchar, flags)
        for i in range(0, len(src), chunk):
            w.write(src[i : i + chunk])
        assert w.flush() == expected, chunk


LS_HEADER = "NAME\tACTIVE\tDRIVER\tSTATE\tURL\tSWARM\tDOCKER\tERRORS\n"


def test_docker_machine_readme_example():
    out = tabwrite(
        LS_HEADER + "default\t-\tvirtualbox\tRunning\ttcp://192.168.99.188:2376\t\tv1.9.1\t\n"
    )
    assert out.splitlines() == [
        "NAME      ACTIVE   DRIVER       STATE     URL                         SWARM   DOCKER   ERRORS",
        # The DOCKER cell is padded; the empty ERRORS text after it adds nothing.
        "default   -        virtualbox   Running   tcp://192.168.99.188:2376           v1.9.1   ",
    ]


def test_docker_machine_mixed_rows_match_go():
    # Expected text produced by Go 1.19 text/tabwriter (5, 1, 3, ' ', 0).
    src = (
        LS_HEADER
        + "default\t-\tvirtualbox\tRunning\ttcp://192.168.99.188:2376\t\tv1.9.1\t\n"
        + "dev\t-\tnone\tRunning\ttcp://127.0.0.1:2376\t\tUnknown\tUnable to query docker version: x\n"
        + "timeout1\t\tgeneric\tTimeout\t\t\t\t\n"
        + "héllo wörld\t*\tnot found\tError\t\t\t\tbad config\n"
    )
    assert tabwrite(src) == (
        "NAME          ACTIVE   DRIVER       STATE     URL                         SWARM   DOCKER    ERRORS\n"
        "default       -        virtualbox   Running   tcp://192.168.99.188:2376           v1.9.1    \n"
        "dev           -        none         Running   tcp://127.0.0.1:2376                Unknown   "
        "Unable to query docker version: x\n"
        "timeout1               generic      Timeout                                                 \n"
        "héllo wörld   *        not found    Error                                                   bad config\n"
    )


def test_minwidth_applies_to_short_columns():
    assert tabwrite("a\tb\n") == "a    b\n"  # width max(1+3, 5)


def test_line_without_tab_ends_the_block():
    out = tabwrite("long-name\tx\nplain line\na\tb\n")
    assert out == "long-name   x\nplain line\na    b\n"


def test_flush_returns_only_new_output():
    w = Writer(5, 1, 3)
    w.write("a\tb\n")
    first = w.flush()
    w.write("ccccccc\td\n")
    assert (first, w.flush()) == ("a    b\n", "ccccccc   d\n")


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Writer(-1)
    with pytest.raises(ValueError):
        Writer(padchar="ab")
