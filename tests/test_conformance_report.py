"""`gpt2 conformance`'s arguments and its report: pytest gets what the command does not know, and
an unwritable folder or an unreadable earlier report is met with a sentence, not a traceback."""

from __future__ import annotations

import json

import pytest

from conformance.report import Report
from shared.cli import main
from shared.errors import GPT2Error


@pytest.fixture
def pytest_main(monkeypatch):
    """pytest.main, recording its arguments instead of running the suite."""
    calls = []
    monkeypatch.setattr(pytest, "main", lambda args: calls.append(args) or 0)
    return calls


@pytest.mark.parametrize(
    "argv",
    [
        ["-k", "haiku"],
        ["--", "-k", "haiku"],
        ["-k", "haiku", "--oracle"],
    ],
)
def test_arguments_it_does_not_know_go_to_pytest_in_order(pytest_main, tmp_path, argv):
    assert main(["conformance", "--report-dir", str(tmp_path / "r"), *argv]) == 0
    (pytest_args,) = pytest_main
    assert pytest_args[-2:] == ["-k", "haiku"]
    assert ("--oracle" in pytest_args) == ("--oracle" in argv)


def test_other_commands_still_refuse_arguments_they_do_not_know(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["doctor", "-k", "haiku"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: -k haiku" in capsys.readouterr().err


def test_the_helps_example_runs_pytest_with_its_arguments(pytest_main, tmp_path):
    assert main(["conformance", "-k", "haiku", "--report-dir", str(tmp_path / "r")]) == 0
    (pytest_args,) = pytest_main
    assert pytest_args[-4:] == ["--conformance-report", str(tmp_path / "r"), "-k", "haiku"]


def test_an_unwritable_report_dir_is_refused_before_the_suite_runs(pytest_main, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    folder = tmp_path / "file" / "reports"
    assert main(["conformance", "--report-dir", str(folder)]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert error.startswith(f"gpt2 conformance: error: Cannot write --report-dir {folder} (")
    assert pytest_main == []


def _report() -> Report:
    report = Report()
    report.check("logits", "haiku", "tiny", 1e-6, 1e-4)
    return report


def test_a_report_merges_the_rows_of_the_earlier_one(tmp_path):
    _report().write(tmp_path)
    later = Report()
    later.check("loss", "keras", "tiny", 1e-7, 1e-5)
    later.write(tmp_path)
    rows = json.loads((tmp_path / "conformance.json").read_text())["rows"]
    assert [row["check"] for row in rows] == ["logits", "loss"]


@pytest.mark.parametrize(
    "earlier",
    [
        "{not json",
        '{"rows": [{"check": "logits", "backend": "haiku"}]}',
        '{"rows": [{"check": "a", "backend": "b", "config": "c", "max_diff": "x", '
        '"tolerance": 1, "passed": true}]}',
        "[]",
    ],
)
def test_an_unreadable_earlier_report_is_replaced_with_a_warning(tmp_path, earlier):
    (tmp_path / "conformance.json").write_text(earlier)
    with pytest.warns(UserWarning, match=r"Ignoring the earlier report .*conformance.json"):
        _report().write(tmp_path)
    rows = json.loads((tmp_path / "conformance.json").read_text())["rows"]
    assert [(row["check"], row["backend"]) for row in rows] == [("logits", "haiku")]
    assert "| logits | tiny | haiku |" in (tmp_path / "conformance.md").read_text()


def test_an_unwritable_report_folder_is_named_in_the_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(GPT2Error, match=r"^Cannot write the conformance report to .*file/reports"):
        _report().write(tmp_path / "file" / "reports")
