"""The mutation check: plant each bug of `conformance/mutants.toml` in a scratch copy of the
checkout, one at a time, and require the tests named for it to fail.

A suite that passes proves little unless it would fail on the bugs it exists to catch. Each
mutant replaces one exact piece of text (found exactly once, so the list cannot rot silently
when code moves) in a copy of the tracked and untracked-but-not-ignored files; the working tree
is never written. Its test selection then runs with the copy first on the import path. The
mutant is killed when the selection fails; if it passes, the mutant survived and the check fails.

    python -m conformance.mutants            # every mutant; writes reports/mutants.{md,json}
    python -m conformance.mutants --list
    python -m conformance.mutants --only top-k-keeps-one-more
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "conformance" / "mutants.toml"
AREAS = (
    "kernels", "masks", "positions", "samplers", "converters", "optimizer", "clipping",
    "schedule", "loss", "dropout", "checkpoint", "lora",
)  # fmt: skip
"""What the planted bugs must cover between them; each mutant names one."""
PYTEST_ARGS = ("-x", "-q", "-p", "no:cacheprovider")
DEFAULT_TIMEOUT = 300.0
FIRST_FAILURE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
EXCEPTION_LINE = re.compile(r"^E +(.*\S)", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One planted bug: `find` (exact text of `file`) becomes `replace`, and `tests` (pytest node
    ids or paths, narrowed by the `-k` expression `select` when given) must then fail."""

    name: str
    area: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    why: str
    select: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def pytest_args(self) -> list[str]:
        return [*PYTEST_ARGS, *self.tests, *(["-k", self.select] if self.select else [])]


@dataclasses.dataclass(frozen=True)
class Result:
    """How a mutant fared: `killed`, `survived`, `timeout`, or `error` (pytest found nothing to
    run, or crashed); only `killed` passes the check. `detail` is pytest's reason for the first
    failure (an assertion, not a crash, shows the test caught the bug itself), or the last line
    of its output."""

    name: str
    where: str
    status: str
    first_failure: str
    seconds: float
    detail: str = ""


def load(path: Path = MUTANTS) -> list[Mutant]:
    """The mutants of a TOML list of `[[mutant]]` tables, their fields checked."""
    entries = tomllib.loads(path.read_text())["mutant"]
    fields = {field.name for field in dataclasses.fields(Mutant)}
    mutants = []
    for entry in entries:
        unknown = set(entry) - fields
        if unknown:
            raise ValueError(f"{path}: mutant {entry.get('name')!r} has unknown keys {unknown}.")
        mutant = Mutant(**{**entry, "tests": tuple(entry["tests"])})
        if mutant.area not in AREAS:
            raise ValueError(
                f"{path}: mutant {mutant.name!r} has area {mutant.area!r}, not one of {AREAS}."
            )
        if not mutant.tests or mutant.find == mutant.replace:
            raise ValueError(f"{path}: mutant {mutant.name!r} needs tests and a change.")
        mutants.append(mutant)
    names = [mutant.name for mutant in mutants]
    if len(set(names)) != len(names):
        raise ValueError(
            f"{path}: mutant names repeat: {sorted(n for n in names if names.count(n) > 1)}."
        )
    return mutants


def location(mutant: Mutant, root: Path = ROOT) -> str:
    """`file:line` of the mutant's text in the tree at `root`; a ValueError unless it occurs
    there exactly once."""
    text = (root / mutant.file).read_text()
    count = text.count(mutant.find)
    if count != 1:
        raise ValueError(
            f"mutant {mutant.name!r}: its find text occurs {count} times in {mutant.file}, not "
            "once; update the list to the code as it is now."
        )
    start = text.index(mutant.find) + len(mutant.find) - len(mutant.find.lstrip())
    return f"{mutant.file}:{text[:start].count(chr(10)) + 1}"


@contextlib.contextmanager
def scratch_copy(root: Path = ROOT) -> Iterator[Path]:
    """A temporary copy of the checkout's tracked and untracked-but-not-ignored files (no
    virtualenvs, caches or build output), removed afterwards."""
    listing = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mutants-") as folder:
        copy = Path(folder) / "tree"
        for name in filter(None, listing.split("\0")):
            source = root / name
            if source.is_file():  # a tracked file deleted in the working tree is left out
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy / name)
        yield copy


def environment(copy: Path) -> dict[str, str]:
    """The copy first on the import path, and no bytecode written: a restored file could
    otherwise be read from its mutant's cached bytecode (same size, same second)."""
    path = os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports_from(copy: Path) -> None:
    """Fail unless the copy's packages are the ones imported (not an installed checkout)."""
    found = subprocess.run(
        [sys.executable, "-c", "import shared; print(shared.__file__)"],
        cwd=copy, env=environment(copy), capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(found).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"The scratch copy's `shared` is not the one imported ({found}).")


def run_pytest(args: Sequence[str], copy: Path, timeout: float) -> tuple[int | None, str]:
    """pytest's exit status and output in the copy (status None: killed at `timeout` seconds,
    with every process it started)."""
    with subprocess.Popen(
        [sys.executable, "-m", "pytest", *args], cwd=copy, env=environment(copy),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    ) as process:  # fmt: skip
        try:
            output, _ = process.communicate(timeout=timeout)
            return process.returncode, output
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return None, process.communicate()[0]


def run_mutant(mutant: Mutant, copy: Path) -> Result:
    """Plant `mutant` in the copy, run its selection, and put the file back."""
    where = location(mutant, copy)
    target = copy / mutant.file
    original = target.read_text()
    target.write_text(original.replace(mutant.find, mutant.replace))
    start = time.perf_counter()
    try:
        status, output = run_pytest(mutant.pytest_args(), copy, mutant.timeout)
    finally:
        target.write_text(original)
    seconds = time.perf_counter() - start
    failure = FIRST_FAILURE.search(output)
    last_line = output.strip().splitlines()[-1] if output.strip() else f"exit status {status}"
    # 1: tests failed; 2: collection failed (the mutant broke an import), which catches it too.
    if status in (1, 2):
        first = failure[1] if failure else "(pytest named no test)"
        return Result(mutant.name, where, "killed", first, seconds, _reason(output))
    outcome = {0: "survived", None: "timeout"}.get(status, "error")
    return Result(mutant.name, where, outcome, "", seconds, last_line)


def _reason(output: str) -> str:
    """The first line of the first exception pytest shows (its `E` lines), and the next one when
    it ends in a colon, as numpy's assertion messages do."""
    lines = EXCEPTION_LINE.findall(output)[:2]
    return " ".join(lines) if lines and lines[0].endswith(":") else "".join(lines[:1])


def write_report(results: Sequence[Result], mutants: Sequence[Mutant], folder: Path) -> None:
    """reports/mutants.{json,md}; rows of mutants not run this time are kept from the earlier
    report (so `--only` updates its row), those no longer listed are dropped."""
    path = folder / "mutants.json"
    earlier = json.loads(path.read_text())["rows"] if path.is_file() else []
    rows = {row["name"]: row for row in earlier}
    rows.update({result.name: dataclasses.asdict(result) for result in results})
    ordered = [rows[mutant.name] for mutant in mutants if mutant.name in rows]
    payload = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "seconds": round(sum(row["seconds"] for row in ordered), 1),
        "rows": ordered,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    (folder / "mutants.md").write_text(_markdown(payload))


def _markdown(payload: dict) -> str:
    killed = sum(row["status"] == "killed" for row in payload["rows"])
    lines = [
        "# Mutation report",
        "",
        f"Run {payload['date']} on {payload['machine']}, Python {payload['python']}: "
        f"{killed} of {len(payload['rows'])} mutants killed, {payload['seconds']:.0f} s of "
        "test selections.",
        "",
        "| mutant | where | first killing test | seconds | result |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for row in payload["rows"]:
        status = row["status"] if row["status"] == "killed" else f"**{row['status'].upper()}**"
        test = f"`{row['first_failure']}`" if row["status"] == "killed" else "none"
        lines.append(
            f"| {row['name']} | `{row['where']}` | {test} | {row['seconds']:.1f} | {status} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.mutants",
        description="Plant each bug of the mutant list in a scratch copy and require its tests to fail.",
    )
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only this mutant (repeatable)"
    )
    parser.add_argument("--mutants", type=Path, default=MUTANTS, help="the TOML list")
    parser.add_argument(
        "--report-dir", type=Path, default=ROOT / "reports", help="where mutants.{md,json} go"
    )
    args = parser.parse_args(argv)
    mutants = load(args.mutants)
    if args.only:
        unknown = set(args.only) - {mutant.name for mutant in mutants}
        if unknown:
            parser.error(f"no mutant named {', '.join(sorted(unknown))}")
    chosen = [mutant for mutant in mutants if not args.only or mutant.name in args.only]
    stale = []
    for mutant in mutants:  # every one, so the list cannot rot behind --only
        try:
            location(mutant)
        except ValueError as error:
            stale.append(str(error))
    if stale:
        print("\n".join(stale), file=sys.stderr)
        return 1
    if args.list:
        for mutant in chosen:
            selection = " ".join(mutant.pytest_args()[len(PYTEST_ARGS) :])
            print(f"{mutant.name:40} {location(mutant):40} {selection}")
        return 0
    results = []
    with scratch_copy() as copy:
        check_imports_from(copy)
        for mutant in chosen:
            result = run_mutant(mutant, copy)
            results.append(result)
            print(
                f"{result.status:8} {result.seconds:6.1f}s  {mutant.name}: "
                f"{result.first_failure} {result.detail}",
                flush=True,
            )
    write_report(results, mutants, args.report_dir)
    failed = [result.name for result in results if result.status != "killed"]
    if failed:
        print(f"Not killed: {', '.join(failed)}.", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
