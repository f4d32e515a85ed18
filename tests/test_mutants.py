"""The mutation check's list and runner (conformance/mutants.py), without running a model: the
list must apply to the code as it is and name tests that exist, and the runner must tell a killed
mutant from a survivor without touching the working tree."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap

import pytest

from conformance import mutants

MUTANTS = mutants.load()


def test_the_list_has_at_least_twenty_mutants_with_distinct_names():
    assert len(MUTANTS) >= 20
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_find_occurs_exactly_once_in_the_tree(mutant):
    assert re.fullmatch(rf"{re.escape(mutant.file)}:\d+", mutants.location(mutant))


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_selection_names_existing_test_files_and_functions(mutant):
    for test in mutant.tests:
        path, _, function = test.partition("::")
        assert (mutants.ROOT / path).exists(), test
        if function:
            source = (mutants.ROOT / path).read_text()
            assert f"def {function.split('[')[0]}(" in source, test


def test_every_area_and_every_backend_has_a_mutant():
    assert {m.area for m in MUTANTS} == set(mutants.AREAS)
    for package in ("functional_impl/", "haiku_impl/", "keras_impl/", "shared/"):
        assert any(m.file.startswith(package) for m in MUTANTS), package


def test_a_find_that_does_not_occur_once_is_refused(tmp_path, capsys):
    (tmp_path / "code.py").write_text("x = 1\nx = 1\n")
    twice = mutants.Mutant("twice", "loss", "code.py", "x = 1", "x = 2", ("t.py",), "why")
    with pytest.raises(ValueError, match=r"occurs 2 times in code\.py, not once"):
        mutants.location(twice, tmp_path)
    gone = mutants.Mutant("gone", "loss", "code.py", "y = 1", "y = 2", ("t.py",), "why")
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutants.location(gone, tmp_path)
    listing = tmp_path / "mutants.toml"
    listing.write_text(
        textwrap.dedent("""
        [[mutant]]
        name = "moved"
        area = "loss"
        file = "shared/loss.py"
        find = "text the code no longer has"
        replace = "anything"
        tests = ["tests/test_mutants.py"]
        why = "the list rotted"
        """)
    )
    assert mutants.main(["--mutants", str(listing), "--report-dir", str(tmp_path)]) == 1
    assert "occurs 0 times in shared/loss.py" in capsys.readouterr().err
    assert not (tmp_path / "mutants.md").exists()  # nothing ran


def test_the_runner_kills_survives_and_leaves_the_working_tree_alone(tmp_path):
    """A toy checkout: one mutant its test catches, one it does not."""
    repo = tmp_path / "repo"
    (repo / "toy").mkdir(parents=True)
    (repo / "toy" / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    (repo / "test_toy.py").write_text(
        "from toy import double\n\ndef test_double():\n    assert double(3) == 6\n"
    )
    (repo / "mutants.toml").write_text(
        textwrap.dedent("""
        [[mutant]]
        name = "caught"
        area = "kernels"
        file = "toy/__init__.py"
        find = "2 * x"
        replace = "3 * x"
        tests = ["test_toy.py::test_double"]
        why = "doubles wrongly"

        [[mutant]]
        name = "missed"
        area = "loss"
        file = "toy/__init__.py"
        find = "def double(x):"
        replace = "def double(x, unused=None):"
        tests = ["test_toy.py"]
        why = "changes nothing the test sees"
        """)
    )
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    before = (repo / "toy" / "__init__.py").read_text()
    listed = mutants.load(repo / "mutants.toml")
    with mutants.scratch_copy(repo) as copy:
        assert not copy.is_relative_to(repo)
        results = [mutants.run_mutant(mutant, copy) for mutant in listed]
        assert (copy / "toy" / "__init__.py").read_text() == before  # put back after each
    assert [(r.name, r.status) for r in results] == [("caught", "killed"), ("missed", "survived")]
    assert results[0].first_failure == "test_toy.py::test_double"
    assert "9 == 6" in results[0].detail  # why it failed, for telling a catch from a crash
    assert results[0].where == "toy/__init__.py:2"
    assert (repo / "toy" / "__init__.py").read_text() == before
    mutants.write_report(results, listed, tmp_path / "reports")
    report = json.loads((tmp_path / "reports" / "mutants.json").read_text())
    assert [row["status"] for row in report["rows"]] == ["killed", "survived"]
    table = (tmp_path / "reports" / "mutants.md").read_text()
    assert "| caught | `toy/__init__.py:2` | `test_toy.py::test_double` |" in table
    assert "**SURVIVED**" in table
    # --only updates its own row and keeps the others
    mutants.write_report([results[1]], listed, tmp_path / "reports")
    rows = json.loads((tmp_path / "reports" / "mutants.json").read_text())["rows"]
    assert [row["name"] for row in rows] == ["caught", "missed"]
