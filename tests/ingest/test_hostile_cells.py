"""Issue #14: encodings that are not text encodings, and formulas hidden behind leading whitespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadctl.ingest.rejects import safe_cell
from tests.support.cli import assert_one_line_error, run_leadctl
from tests.support.files import read_rejects


@pytest.mark.parametrize("encoding", ["rot13", "base64", "nope"])
def test_an_encoding_that_is_not_a_text_encoding_is_one_line(
    leadctl_env: dict[str, str], tmp_path: Path, encoding: str
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("nome,telefone\nAna,11987654321\n")
    result = run_leadctl(["ingest", str(path), "--encoding", encoding], leadctl_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "text encoding", encoding)


@pytest.mark.parametrize(
    "value", [" =1+1", "\n=1+1", "\u00a0=HYPERLINK(\"x\")", "\t\u2003@SUM(A1)", "  +55 11", "\r-2"]
)
def test_formulas_behind_whitespace_are_neutralised(value: str) -> None:
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["Ana", " Ana", "a=b", "11 98765-4321", ""])
def test_plain_cells_are_left_alone(value: str) -> None:
    assert safe_cell(value) == value


def test_the_rejects_file_neutralises_a_formula_behind_a_nbsp(
    leadctl_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "leads.csv"
    formula = '"\u00a0=HYPERLINK(""http://x"")"'
    path.write_text(f"nome,telefone\nAna,11987654321\n{formula},123\n", encoding="utf-8")
    result = run_leadctl(["ingest", str(path)], leadctl_env)
    assert result.returncode == 1, result.stderr  # 1: rows were rejected
    header, row = read_rejects(tmp_path / "leads.csv.rejects.csv")
    assert row[header.index("nome")] == "'\u00a0=HYPERLINK(\"http://x\")"
