"""The unit and integration tests of gpt2-jax (a package so helpers import as `tests.support`)."""
