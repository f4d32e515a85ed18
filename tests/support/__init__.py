"""Test helpers that build real-format inputs (OpenAI checkpoints, a download server), and
references written apart from the library (AdamW in numpy)."""
