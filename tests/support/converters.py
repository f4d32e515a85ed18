"""The config the converter tests share: three layers, so a converter that puts one layer's
tensors in another's place cannot pass. Its canonical tree is the `canonical` fixture."""

from __future__ import annotations

from shared.config import GPT2Config

CONFIG = GPT2Config(n_embd=32, n_head=4, n_layer=3, n_vocab=300, n_ctx=64)
