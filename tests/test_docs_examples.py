"""The examples of README.md and docs/*.md run, or at least parse, and the CLI reference is whole.

Each page's runnable `bash`/`python` blocks run in order in one scratch folder, offline: `gpt2`
downloads from a local server that serves a tiny real-format OpenAI checkpoint under every size
name. Blocks marked `<!-- example: check-only -->` get their `gpt2` command lines parsed by the
real parser, `bash -n` or `compile()`. See tests/support/doc_examples.py for the convention.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import os
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.cli import build_parser
from shared.config import MODEL_SIZES
from tests.support.doc_examples import (
    CHECK_ONLY,
    RUNS_PROPERTY,
    Block,
    Run,
    check_bash_syntax,
    command_words,
    gpt2_commands,
    page_blocks,
    page_id,
    pages,
    parse_blocks,
    run_block,
)
from tests.support.openai_server import OpenAIServer
from tests.support.paths import REPO_ROOT, TINY_SHAKESPEARE

README = REPO_ROOT / "README.md"
CORPUS_CHARS = 20_000
MIN_RUNNABLE_EXAMPLES = 24
"""README and docs together run at least this many examples (raise it as pages gain examples)."""
MISNAMED_LANGUAGES = {"sh", "shell", "console", "zsh", "py", "python3"}
"""Fence languages that look like examples but would not run: spell them bash or python (run),
or text (never run)."""


def _runnable(page: Path) -> bool:
    try:
        return any(block.runnable for block in page_blocks(page))
    except ValueError:  # a broken page: its tests report it
        return False


PAGES = [pytest.param(page, id=page_id(page)) for page in pages()]
RUN_PAGES = [
    pytest.param(page, id=page_id(page), marks=[pytest.mark.slow] if _runnable(page) else [])
    for page in pages()
]
"""The pages, those with runnable examples marked slow (a cold start compiles)."""


# --- the environment the examples run in -------------------------------------------------------


@pytest.fixture(scope="session")
def docs_environment(tmp_path_factory, openai_checkpoint_dir):
    """The environment variables of every example: a local server with the tiny checkpoint under
    all four size names (already downloaded into GPT2_MODELS_DIR, so examples skip the conversion),
    one compilation cache for the session, and this Python's `gpt2` first on PATH."""
    from shared.weights import load_pretrained

    root = tmp_path_factory.mktemp("docs-openai")
    shutil.copytree(openai_checkpoint_dir, root / "models" / "124M")
    for size in MODEL_SIZES:
        if size != "124M":
            (root / "models" / size).symlink_to("124M")
    cache = tmp_path_factory.mktemp("docs-cache")
    with OpenAIServer(root) as server:
        for size in MODEL_SIZES:
            load_pretrained(size, cache / "models", server.base_url, progress=False)
        python_path = [str(REPO_ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
        yield {
            **os.environ,
            "GPT2_BASE_URL": server.base_url,
            "GPT2_MODELS_DIR": str(cache / "models"),
            "JAX_COMPILATION_CACHE_DIR": str(cache / "xla"),
            "KERAS_BACKEND": "jax",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            "PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in python_path if p),
        }


def scratch_folder(folder: Path) -> Path:
    """`folder` with the files examples may use: corpus.txt (the first 20,000 characters of Tiny
    Shakespeare) and input.txt (the same text, under nanoGPT's name)."""
    text = TINY_SHAKESPEARE.read_text(encoding="utf-8")[:CORPUS_CHARS]
    for name in ("corpus.txt", "input.txt"):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# --- every page --------------------------------------------------------------------------------


PAGE_WORKERS = 2
"""Pages run two at a time: an example is mostly one process compiling on one core."""


PageResult = tuple[str | None, list[Run]]
"""A page's first failure (or None), and its runs up to it."""


def run_page(page: Path, cwd: Path, environment: dict[str, str]) -> PageResult:
    """Run the page's runnable examples in order in `cwd`, stopping at the first failure."""
    runs = []
    for block in page_blocks(page):
        if block.runnable:
            run, failure = run_block(block, cwd, environment)
            runs.append(run)
            if failure:
                return failure, runs
    return None, runs


@pytest.fixture(scope="session")
def page_runs(
    request, docs_environment, tmp_path_factory
) -> Iterator[dict[Path, Future[PageResult]]]:
    """The selected pages with runnable examples, started on first use, `PAGE_WORKERS` pages at a
    time, each in its own scratch folder: page -> the future of `run_page`."""
    selected = [
        item.callspec.params["page"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_page_examples_run"
    ]
    with ThreadPoolExecutor(max_workers=PAGE_WORKERS) as pool:
        yield {
            page: pool.submit(
                run_page, page, scratch_folder(tmp_path_factory.mktemp("page")), docs_environment
            )
            for page in selected
            if _runnable(page)
        }


@pytest.mark.parametrize("page", RUN_PAGES)
def test_page_examples_run(page: Path, request: pytest.FixtureRequest):
    """The page's runnable examples succeed, in order, in one scratch folder."""
    if not _runnable(page):
        return  # no server to start
    failure, runs = request.getfixturevalue("page_runs")[page].result()
    request.node.user_properties.append((RUNS_PROPERTY, [dataclasses.asdict(run) for run in runs]))
    if failure:
        pytest.fail(failure, pytrace=False)


@pytest.mark.parametrize("page", PAGES)
def test_page_check_only_examples_parse(page: Path):
    """Each check-only example's `gpt2` commands parse; its bash passes `bash -n`, its python
    compiles. And no example holds a literal `...`."""
    problems = []
    for block in page_blocks(page):
        if block.is_example:
            problems += [f"{block.where()}: {problem}" for problem in _syntax_problems(block)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_page_fences_name_their_language(page: Path):
    """Every fence says what it holds, and no example hides under a language that is not run."""
    wrong = [
        block.where()
        for block in page_blocks(page)
        if not block.language or block.language in MISNAMED_LANGUAGES
    ]
    assert not wrong, (
        "these blocks need a language: bash or python (run by the tests), or text, toml, json... "
        f"(never run): {', '.join(wrong)}"
    )


def _syntax_problems(block: Block) -> list[str]:
    if block.language == "python":
        try:
            compile(block.code, block.where(), "exec")
        except SyntaxError as err:
            return [f"python does not compile: {err}"]
        return []
    problems = []
    if any("..." in words for words in command_words(block.code)):
        problems.append("a literal `...` cannot run; write the real arguments")
    if not block.check_only:
        return problems  # it runs, which checks the rest
    if complaint := check_bash_syntax(block.code):
        problems.append(f"bash -n: {complaint}")
    for args in gpt2_commands(block.code):
        if complaint := gpt2_parse_error(args):
            problems.append(f"`gpt2 {' '.join(args)}`: {complaint}")
    return problems


def gpt2_parse_error(args: list[str]) -> str | None:
    """What `gpt2` would say about `args` before running anything, or None if they parse (as
    shared.cli.main parses them: unknown arguments pass only to a command that takes them)."""
    parser = build_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parsed, unknown = parser.parse_known_args(args)
            if unknown and not getattr(parsed, "passes_unknown_args", False):
                parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as stop:
        if stop.code not in (0, None):  # --help and --version exit 0
            return stderr.getvalue().strip().splitlines()[-1]
    return None


def test_docs_have_runnable_examples():
    runnable = [block for page in pages() for block in page_blocks(page) if block.runnable]
    assert len(runnable) >= MIN_RUNNABLE_EXAMPLES, [block.where() for block in runnable]


def test_readme_test_command_is_what_ci_runs():
    """The test command README gives is the one .ci/run runs, word for word."""
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [
        line.strip()
        for block in page_blocks(README)
        for line in block.code.splitlines()
        if 'pip install -e ".[test]"' in line
    ]
    assert lines, 'README.md has no block with `pip install -e ".[test]"`'
    for line in lines:
        assert line in ci, f"README's {line!r} is not in .ci/run"


# --- the CLI reference -------------------------------------------------------------------------


def _cli_reference_hook():
    path = REPO_ROOT / "docs" / "hooks" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_has_every_subcommand():
    hook = _cli_reference_hook()
    text = hook.render()
    actions = build_parser()._actions
    subparsers = next(a for a in actions if isinstance(a, argparse._SubParsersAction))
    assert subparsers.choices
    for name in subparsers.choices:
        assert f"## `gpt2 {name}`" in text
        assert f"usage: gpt2 {name} " in text
    assert "usage: gpt2 [-h]" in text
    assert hook.MARKER in (REPO_ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def test_cli_reference_hook_fills_only_the_marker():
    hook = _cli_reference_hook()
    assert hook.on_page_markdown("# A page\n", page=None) == "# A page\n"
    filled = hook.on_page_markdown(f"# CLI\n\n{hook.MARKER}\n", page=None)
    assert hook.MARKER not in filled
    assert "## `gpt2 train`" in filled


# --- the parser of pages -----------------------------------------------------------------------

SAMPLE = f"""# A page

Some prose with `inline` code.

```bash
gpt2 generate --prompt "Hello" --max-new-tokens 8
```

{CHECK_ONLY}
```bash
gpt2 train --init-from 355M
```

```text
gpt2 output, never run
```

- a list item:

    ```python title="x.py"
    print("indented")
    ```

````markdown
```bash
echo nested, part of the markdown block
```
````

```
no language
```
"""


def test_parse_blocks_finds_languages_lines_and_markers():
    blocks = parse_blocks(SAMPLE, "sample.md")
    assert [(b.line, b.language, b.check_only) for b in blocks] == [
        (5, "bash", False),
        (10, "bash", True),
        (14, "text", False),
        (20, "python", False),
        (24, "markdown", False),
        (30, "", False),
    ]
    assert blocks[0].code == 'gpt2 generate --prompt "Hello" --max-new-tokens 8\n'
    assert blocks[3].code == 'print("indented")\n'
    assert "echo nested" in blocks[4].code
    assert [b.runnable for b in blocks] == [True, False, False, True, False, False]
    assert [b.is_example for b in blocks] == [True, True, False, True, False, False]


@pytest.mark.parametrize(
    "text",
    [
        f"{CHECK_ONLY}\n\n```bash\necho hi\n```\n",  # not directly before
        f"{CHECK_ONLY}\n```text\nhi\n```\n",  # not an example
        f"text\n{CHECK_ONLY}\n",  # nothing after it
        "```bash\necho never closed\n",
    ],
)
def test_parse_blocks_refuses_misplaced_markers_and_open_fences(text: str):
    with pytest.raises(ValueError, match=r"page\.md:\d+"):
        parse_blocks(text, "page.md")


def test_gpt2_commands_finds_every_spelling():
    script = """\
# a comment with gpt2 in it
gpt2 prepare corpus.txt --out-dir data/c \\
    --tokenizer char  # trailing comment
time .venv/bin/gpt2 generate --prompt 'a && b' 2>/dev/null | head -1
cd out && XLA_FLAGS=1 python -m gpt2 doctor; echo done
pip install gpt2-jax
cat > c.toml <<'EOF'
init_from = "gpt2"
gpt2 in a heredoc
EOF
python3 -c "
print('gpt2')
"
"""
    assert gpt2_commands(script) == [
        ["prepare", "corpus.txt", "--out-dir", "data/c", "--tokenizer", "char"],
        ["generate", "--prompt", "a && b"],
        ["doctor"],
    ]


def test_gpt2_parse_error_uses_the_real_parser():
    assert gpt2_parse_error(["generate", "--prompt", "Hi", "--max-new-tokens", "8"]) is None
    assert gpt2_parse_error(["train", "--help"]) is None
    assert "invalid int" in gpt2_parse_error(["generate", "--max-new-tokens", "many"])
    assert "unrecognized" in gpt2_parse_error(["generate", "--no-such-option"])
    assert "invalid choice" in gpt2_parse_error(["fly"])


def test_syntax_problems_of_check_only_blocks():
    def block(language: str, code: str) -> Block:
        return Block("page.md", 1, language, code, check_only=True)

    assert _syntax_problems(block("bash", "gpt2 generate --prompt Hi\n")) == []
    assert _syntax_problems(block("python", "x = (\n"))[0].startswith("python does not compile")
    assert _syntax_problems(block("bash", "if then fi\n"))[0].startswith("bash -n")
    assert "literal `...`" in _syntax_problems(block("bash", "gpt2 train ...\n"))[0]
    assert "--bogus" in _syntax_problems(block("bash", "gpt2 generate --bogus\n"))[0]
