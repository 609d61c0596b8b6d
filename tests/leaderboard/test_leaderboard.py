"""Building the leaderboard: README tables, the site's data, --check, and the committed board."""

import json
import re
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA

from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.leaderboard.build import _flag_fewer_orders, build, leaderboard_entries
from clbench.leaderboard.submission import submit

XSS = "<script>alert(1)</script>"


@pytest.fixture
def board(default_runs: list[Path], tmp_path: Path) -> Path:
    """Two submissions on `default`: three seeds of seq-ft, and one run under a hostile name."""
    root = tmp_path / "lb"
    submit([str(d) for d in default_runs], root, paper="https://example.org/paper")
    submit([str(default_runs[0])], root, name=XSS, code="https://example.org/code")
    return root


def test_build_writes_a_sorted_escaped_table_per_sequence(board: Path) -> None:
    build(board)
    text = (board / "README.md").read_text()
    assert "## default" in text
    assert XSS not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    rows = [line for line in text.splitlines() if re.match(r"\|\s+\d+ \|", line)]
    assert len(rows) == 2
    aa = [float(row.split("|")[4].split("±")[0]) for row in rows]
    assert aa == sorted(aa, reverse=True)
    seq_ft = next(row for row in rows if "| seq-ft " in row)
    assert "± " in seq_ft and "|   3 |" in seq_ft
    hostile = next(row for row in rows if "&lt;script" in row)
    assert "fewer than 3 seeds (1 on default)" in hostile
    page = (board / "site" / "index.html").read_text()
    assert "alert(1)" in page and XSS not in page  # only inside the escaped JSON


def test_entries_match_the_runs(board: Path, default_runs: list[Path]) -> None:
    entries = {e["name"]: e for e in leaderboard_entries(board)}
    entry = entries["seq-ft"]
    results = [json.loads((d / "results.json").read_text()) for d in default_runs]
    aa = [r["metrics"]["aa"] for r in results]
    assert entry["metrics"]["aa"]["mean"] == pytest.approx(sum(aa) / 3)
    assert entry["metrics"]["aa"]["n"] == 3
    assert entry["metrics"]["fwd"] is None  # no single-task references
    assert entry["seeds"] == [0, 1, 2] and entry["n"] == 3
    (matrix,) = entry["matrices"]
    assert matrix["mean"][1][0] == pytest.approx(sum(r["matrix"][1][0] for r in results) / 3)
    assert entry["paper"] == "https://example.org/paper"
    assert entry["submission"] == "submissions/default/seq-ft__tiny-random.json"


def test_an_entry_on_fewer_task_orders_than_its_table_is_flagged() -> None:
    def entry(table: str, orders: list[int]) -> dict:
        return {"table": table, "orders": orders, "flags": ["fewer than 3 seeds (2 on x)"]}

    both, first = entry("cl", [1, 2]), entry("cl", [1])
    other, unordered = entry("x", [1]), entry("d", [])  # another table; a sequence without orders
    _flag_fewer_orders([both, first, other, unordered])
    assert first["flags"] == ["fewer than 3 seeds (2 on x)", "task orders 1 of 1, 2 in its table"]
    assert both["flags"] == other["flags"] == unordered["flags"] == ["fewer than 3 seeds (2 on x)"]


def test_check_detects_an_out_of_date_board(board: Path, default_runs: list[Path]) -> None:
    with pytest.raises(ClbenchError, match="out of date"):
        build(board, check=True)
    build(board)
    build(board, check=True)
    submit([str(default_runs[1])], board, name="another")
    with pytest.raises(ClbenchError, match=r"out of date: .*README\.md"):
        build(board, check=True)


def test_an_invalid_submission_stops_the_build(board: Path) -> None:
    path = board / "submissions" / "default" / "seq-ft__tiny-random.json"
    content = json.loads(path.read_text())
    content["runs"][0]["metrics"]["aa"] = 1.0
    path.write_text(json.dumps(content))
    with pytest.raises(ClbenchError, match=r"invalid submissions:\n  .*runs\[0\]\.metrics\.aa"):
        build(board)
    assert not (board / "README.md").exists()


def test_cli_submit_and_build(default_runs: list[Path], tmp_path: Path, capsys) -> None:
    root = str(tmp_path / "lb")
    runs = [str(d) for d in default_runs]
    assert main(["submit", *runs, "--leaderboard", root, "--name", "plain"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["submit", *runs, "--leaderboard", root, "--name", "plain"]) == 2
    assert "pass --replace" in capsys.readouterr().err
    assert main(["leaderboard", "build", "--leaderboard", root]) == 0
    assert main(["leaderboard", "build", "--leaderboard", root, "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs the local data mirror ../shared/data")
def test_the_committed_leaderboard_is_valid_and_up_to_date() -> None:
    root = REPO / "leaderboard"
    if not (root / "submissions").is_dir():
        pytest.skip("no submissions committed yet")
    assert (
        main(
            ["leaderboard", "validate", "--leaderboard", str(root), "--data-dir", str(SHARED_DATA)]
        )
        == 0
    )
    build(root, data_dir=str(SHARED_DATA), check=True)
