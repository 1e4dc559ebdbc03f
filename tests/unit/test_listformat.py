"""The one ``--format`` renderer of listings other than ``ls``: json, templates, tables."""

from __future__ import annotations

import json

import pytest
from pymachine.machine.cli.listformat import render
from pymachine.machine.errors import MachineError

RECORDS = [{"Name": "a", "Size": 3, "Tags": ["x", "y"]}, {"Name": "bbbbbb", "Size": 12, "Tags": []}]
HEADERS = {"Name": "NAME", "Size": "SIZE", "Tags": "TAGS"}


def test_json_is_one_array_of_the_records() -> None:
    assert json.loads(render(RECORDS, "json", HEADERS)) == RECORDS


def test_template_runs_once_per_record() -> None:
    assert render(RECORDS, "{{.Name}}={{.Size}}", HEADERS) == "a=3\nbbbbbb=12\n"
    assert render(RECORDS, "{{.Name}}\\t{{len .Tags}}", HEADERS) == "a\t2\nbbbbbb\t0\n"


def test_table_adds_headers_and_aligns() -> None:
    assert render(RECORDS, "table {{.Name}}\t{{.Size}}", HEADERS).splitlines() == [
        "NAME     SIZE", "a        3", "bbbbbb   12"]


def test_a_broken_template_is_an_error() -> None:
    with pytest.raises(MachineError):
        render(RECORDS, "{{.Name", HEADERS)
