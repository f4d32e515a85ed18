"""Where the read-only test data lives: `tests/data/` in the repository (see its README.md)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "tests" / "data"
BPE_DIR = DATA_DIR / "gpt2-bpe"
TINY_SHAKESPEARE = DATA_DIR / "tinyshakespeare" / "input.txt"
