"""Every setting is documented where operators look for it: a row of the settings table in
docs/operations.md, with its flag and its environment variable."""

from __future__ import annotations

import pathlib

import pytest
from sockbroker.config import FILE_ONLY, Settings

OPERATIONS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_has_a_row_in_the_operations_table(name: str) -> None:
    flag = f"[{name}." if name in FILE_ONLY else "--" + name.replace("_", "-")  # a table: `[principals.NAME]`
    rows = [line for line in OPERATIONS.read_text().splitlines() if line.startswith(f"| `{flag}")]
    assert rows, f"docs/operations.md has no settings row for {flag}"
    assert f"`SOCKBROKER_{name.upper()}`" in rows[0]
