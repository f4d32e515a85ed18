"""`python -m gpt2 ...` is the `gpt2` command."""

import sys

from shared.cli import main

sys.exit(main())
