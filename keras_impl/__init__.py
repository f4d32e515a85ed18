"""The Keras 3 backend: GPT-2 as Keras layers and a `keras.Model`, running on JAX.

Keras must run on its JAX backend (the KV cache and attention are shared JAX functions), so this
package selects it unless `KERAS_BACKEND` says otherwise, and refuses to load on any other.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

_WRONG_BACKEND = (
    "The Keras backend of gpt2-jax runs Keras 3 on JAX only, but Keras is set to the {!r} "
    "backend; set KERAS_BACKEND=jax before Python starts (or before keras is first imported)."
)
if os.environ["KERAS_BACKEND"] != "jax":
    raise ImportError(_WRONG_BACKEND.format(os.environ["KERAS_BACKEND"]))

import keras  # noqa: E402

if keras.backend.backend() != "jax":
    raise ImportError(_WRONG_BACKEND.format(keras.backend.backend()))

from keras_impl.layers import MLP, CausalSelfAttention, LayerNorm, TransformerBlock  # noqa: E402
from keras_impl.model import GPT2LM  # noqa: E402

__all__ = ["GPT2LM", "MLP", "CausalSelfAttention", "LayerNorm", "TransformerBlock"]
