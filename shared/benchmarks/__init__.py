"""The measurements behind `gpt2 bench` and `nox -s bench`: generation, prefill, training, the
machine's own limits, and the report (markdown, JSON, PNG).

Every throughput excludes warm-up (compilation), which is reported on its own; every figure that
matters is also given as a ratio against a baseline measured in the same process.
"""
