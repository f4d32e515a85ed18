"""Test helpers that build real-format inputs (OpenAI checkpoints, a download server)."""
