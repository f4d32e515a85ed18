"""Backend-independent core of gpt2-jax: config, canonical parameters, weights I/O, tokenizer,
sampling, generation and the CLI, written once against the backend contract."""
