"""Faults injected into the real command line: what the user reads, the exit status, what is kept."""
