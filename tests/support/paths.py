"""Where the read-only test data lives: the `shared/` folder beside the repository."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
BPE_DIR = DATA_DIR / "gpt2-bpe"
TINY_SHAKESPEARE = DATA_DIR / "tinyshakespeare" / "input.txt"
