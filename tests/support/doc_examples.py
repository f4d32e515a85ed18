"""The examples of README.md and docs/*.md: find them, check them, run them.

The convention (docs/testing.md, "Examples that cannot rot"): a fenced block whose language is
`bash` or `python` is an example. It runs offline in the test suite, the page's examples in order
in one scratch folder, unless the line directly before its fence is `<!-- example: check-only -->`;
then only its syntax is checked: each `gpt2 ...` command line against the real argparse parser,
the whole block with `bash -n`, python with `compile()`. Blocks of any other language (`text`,
`toml`, ...) are never run.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from tests.support.paths import REPO_ROOT

EXAMPLE_LANGUAGES = ("bash", "python")
CHECK_ONLY = "<!-- example: check-only -->"
BLOCK_TIMEOUT = 300
"""Seconds one runnable block may take (a cold start compiles; a warm one takes a few)."""

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
_HEREDOC = re.compile(r"(?<!<)<<-?(?!<)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", ";;", "|&", "(", ")"})


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: str
    """The page's path relative to the repository root, e.g. `docs/training.md`."""
    line: int
    """The 1-based line of the opening fence."""
    language: str
    """The first word of the fence's info string, lower case; "" for none."""
    code: str
    """The block's text, without the fences and the fence's indentation."""
    check_only: bool
    """Whether `CHECK_ONLY` is on the line directly before the fence."""

    @property
    def is_example(self) -> bool:
        return self.language in EXAMPLE_LANGUAGES

    @property
    def runnable(self) -> bool:
        return self.is_example and not self.check_only

    def where(self) -> str:
        return f"{self.page}:{self.line} ({self.language})"


def pages() -> list[Path]:
    """README.md and every docs/*.md, README first."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def page_id(page: Path) -> str:
    return page.relative_to(REPO_ROOT).as_posix()


def parse_blocks(text: str, page: str = "<text>") -> list[Block]:
    """Every fenced block of the markdown `text`, in order.

    A fence may be indented (in a list or an admonition); that much indentation is removed from
    its lines. A check-only marker that is not directly followed by an example's fence, and a
    fence that is never closed, are errors (ValueError), so a misplaced marker cannot quietly
    turn an example into a runnable one or the other way round.
    """
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.strip() == CHECK_ONLY:
            following = _FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
            if not following or _language(following["info"]) not in EXAMPLE_LANGUAGES:
                raise ValueError(
                    f"{page}:{index + 1}: {CHECK_ONLY} must be the line directly before a "
                    "```bash or ```python fence"
                )
        opening = _FENCE.match(line)
        if not opening:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        language = _language(opening["info"])
        check_only = index > 0 and lines[index - 1].strip() == CHECK_ONLY
        body = []
        end = index + 1
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while end < len(lines) and not closing.match(lines[end]):
            body_line = lines[end]
            body.append(body_line[min(indent, len(body_line) - len(body_line.lstrip(" "))) :])
            end += 1
        if end == len(lines):
            raise ValueError(f"{page}:{index + 1}: the {fence} fence is never closed")
        code = "\n".join(body) + "\n" if body else ""
        blocks.append(Block(page, index + 1, language, code, check_only))
        index = end + 1
    return blocks


def _language(info: str) -> str:
    """The language of a fence's info string: `bash`, `python title="x"`, `{.bash}` -> bash."""
    words = info.replace("{", " ").split()
    return words[0].lstrip(".").lower() if words else ""


def page_blocks(page: Path) -> list[Block]:
    return parse_blocks(page.read_text(encoding="utf-8"), page_id(page))


# --- check-only blocks -------------------------------------------------------------------------


def logical_lines(script: str) -> list[str]:
    """The command lines of a bash script: backslash continuations joined, heredoc bodies and
    blank lines dropped."""
    joined = re.sub(r"\\\n", " ", script)
    lines = []
    heredoc_end = None
    for line in joined.splitlines():
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        if line.strip():
            lines.append(line)
        match = _HEREDOC.search(line)
        if match:
            heredoc_end = match.group(2)
    return lines


def _words(line: str) -> list[str]:
    """`line` split as the shell would, with `&&`, `;`, `|`, ... as words of their own and the
    comment dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _is_gpt2(word: str) -> bool:
    return word == "gpt2" or word.endswith("/bin/gpt2")


def _is_python(word: str) -> bool:
    return re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", word) is not None


def command_words(script: str) -> list[list[str]]:
    """The words of each command line of a bash script (`logical_lines`, split by `_words`); a
    quoted string may span lines."""
    found = []
    pending = ""
    for line in logical_lines(script):
        try:
            found.append(_words(pending + line))
        except ValueError:  # no closing quotation yet: read on
            pending += line + "\n"
        else:
            pending = ""
    return found


def gpt2_commands(script: str) -> list[list[str]]:
    """The arguments after `gpt2` of every `gpt2 ...` command in a bash script.

    A command starts at the word `gpt2` (or `.venv/bin/gpt2`, or `python -m gpt2`) anywhere in a
    command (so `time gpt2 ...` and `VAR=1 gpt2 ...` count) and ends at `&&`, `||`, `;`, `|`,
    a redirection or the end of the line.
    """
    commands = []
    for words in command_words(script):
        for segment in _segments(words):
            for start, word in enumerate(segment):
                if _is_gpt2(word):
                    args = segment[start + 1 :]
                elif _is_python(word) and segment[start + 1 : start + 3] == ["-m", "gpt2"]:
                    args = segment[start + 3 :]
                else:
                    continue
                commands.append(_drop_redirections(args))
                break
    return commands


def _segments(words: list[str]) -> list[list[str]]:
    """`words` cut at `&&`, `||`, `;`, `|`, `&` and parentheses."""
    segments: list[list[str]] = [[]]
    for word in words:
        if word in _SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(word)
    return [segment for segment in segments if segment]


def _drop_redirections(args: list[str]) -> list[str]:
    """`args` up to a redirection (`>`, `2>`, `<`, ...), which is the shell's, not the command's."""
    for index, word in enumerate(args):
        if word and set(word) <= set("<>&"):
            return args[: index - 1] if index and args[index - 1].isdigit() else args[:index]
    return args


def check_bash_syntax(script: str) -> str | None:
    """`bash -n`'s complaint about `script`, or None."""
    result = subprocess.run(
        ["bash", "-n", "-c", script], capture_output=True, text=True, check=False, timeout=30
    )
    if result.returncode == 0:
        return None
    return result.stderr.strip() or f"exit status {result.returncode}"


# --- runnable blocks ---------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One runnable block's outcome, for the session's summary."""

    page: str
    line: int
    seconds: float
    returncode: int | None  # None: it timed out


RUNS_PROPERTY = "docs_example_runs"
"""The `user_properties` key under which a page's test reports its runs, so the summary sees them
whether the test ran in this process or in a pytest-xdist worker."""


def command(block: Block) -> list[str]:
    if block.language == "bash":
        return ["bash", "-euo", "pipefail", "-c", block.code]
    return [sys.executable, "-c", block.code]


def run_block(
    block: Block, cwd: Path, env: Mapping[str, str], timeout: float = BLOCK_TIMEOUT
) -> tuple[Run, str | None]:
    """Run a runnable block in `cwd`: its `Run`, and None if it succeeded, else a report of the
    failure."""
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command(block), cwd=cwd, env=dict(env), capture_output=True, text=True,
            timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as err:
        run = Run(block.page, block.line, time.perf_counter() - start, None)
        return run, _report(block, f"timed out after {timeout:.0f} s", err.stdout, err.stderr)
    run = Run(block.page, block.line, time.perf_counter() - start, result.returncode)
    if result.returncode == 0:
        return run, None
    return run, _report(block, f"exit status {result.returncode}", result.stdout, result.stderr)


def _tail(text: str | bytes | None, limit: int = 4000) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = (text or "").rstrip()
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def _report(block: Block, what: str, stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    return (
        f"the example at {block.where()} failed: {what}\n"
        f"--- example ---\n{block.code.rstrip()}\n"
        f"--- stdout (tail) ---\n{_tail(stdout)}\n"
        f"--- stderr (tail) ---\n{_tail(stderr)}"
    )


def summary(runs: list[Run]) -> list[str]:
    """Lines for the end of the test session: how many examples ran, how long they took."""
    if not runs:
        return []
    total = sum(run.seconds for run in runs)
    failed = sum(run.returncode != 0 for run in runs)
    lines = [f"docs examples: {len(runs)} run ({failed} failed) in {total:.1f} s"]
    by_page: dict[str, list[Run]] = {}
    for run in runs:
        by_page.setdefault(run.page, []).append(run)
    for page, page_runs in by_page.items():
        times = ", ".join(f"line {run.line}: {run.seconds:.1f} s" for run in page_runs)
        lines.append(
            f"  {page}: {len(page_runs)} in {sum(r.seconds for r in page_runs):.1f} s ({times})"
        )
    return lines
