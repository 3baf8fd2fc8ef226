"""Every column the harness writes to errors, breakdown, timings and edge_cases has a row in the documentation's
*Columns of* section of that table (a new column fails here until it is documented)."""

import re

import pytest
from conftest import REPO

from harness.outputs import breakdown, edge_tables, tables
from harness.timing import stage

COLUMNS_PAGE = (REPO / "docs" / "pages" / "reference" / "columns.md").read_text()


def section(title: str) -> str:
    start = COLUMNS_PAGE.index(f"## {title}\n")
    end = re.compile(r"^## ", re.MULTILINE).search(COLUMNS_PAGE, start + 3)
    return COLUMNS_PAGE[start : end.start() if end else len(COLUMNS_PAGE)]


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        ("errors", tables.ERROR_COLUMNS),
        ("breakdown", breakdown.BREAKDOWN_COLUMNS),
        ("timings", stage.COLUMNS),
        ("edge_cases", edge_tables.EDGE_COLUMNS),
    ],
)
def test_every_column_has_a_row_in_the_docs(table, columns):
    text = section(f"Columns of `{table}`")
    assert [c for c in columns if f"`{c}`" not in text] == []


def test_the_check_sees_an_undocumented_column():
    assert "`no_such_column`" not in section("Columns of `breakdown`")
