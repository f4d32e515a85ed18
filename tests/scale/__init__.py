"""Sharded training, generation and multi-process runs on simulated CPU devices."""
