"""Every column the harness writes to errors, breakdown and timings has a row in the README's
*Columns of* section of that table (a new column fails here until it is documented)."""

import re

import pytest
from conftest import REPO

from harness.outputs import breakdown, tables
from harness.timing import stage

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"### {title}\n")
    end = re.compile(r"^#{2,3} ", re.MULTILINE).search(README, start + 4)
    return README[start : end.start() if end else len(README)]


@pytest.mark.parametrize(
    ("table", "columns"),
    [("errors", tables.ERROR_COLUMNS), ("breakdown", breakdown.BREAKDOWN_COLUMNS), ("timings", stage.COLUMNS)],
)
def test_every_column_has_a_row_in_the_readme(table, columns):
    text = section(f"Columns of `{table}`")
    assert [c for c in columns if f"`{c}`" not in text] == []


def test_the_check_sees_an_undocumented_column():
    assert "`no_such_column`" not in section("Columns of `breakdown`")
