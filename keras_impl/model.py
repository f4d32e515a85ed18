"""GPT2LM: the whole GPT-2 language model as a `keras.Model`, from token ids to next-token logits."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, cast

import jax
import keras
from keras import ops

from keras_impl.layers import GPT2_INIT_STD, LayerNorm, TransformerBlock, weights_dtype
from shared import attention, kv_cache
from shared.apply_options import ApplyOptions
from shared.config import GPT2Config, check_tokens
from shared.dropout import EMBEDDINGS, drop
from shared.kv_cache import KVCache
from shared.logits import model_output
from shared.lora import DEFAULT_TARGETS, TARGETS
from shared.params import Params
from shared.quantization import QuantizedWeight, Weight


@keras.saving.register_keras_serializable(package="gpt2")
class GPT2LM(keras.Model):
    """GPT-2: token + position embeddings, `n_layer` transformer blocks, final LayerNorm, logits.

    The output projection is tied to the token embedding (`logits = x @ wte.T`), so the model has
    exactly GPT-2's parameters (124,439,808 for 124M). Blocks are separate layers `h0..h{n-1}`
    rather than a scan over stacked weights: each layer's weights stay their own buffers, which
    decodes faster on CPU. The model is built on construction, so `summary()` works at once.

    `model(tokens)` returns logits [batch, seq, n_vocab], which is what `fit` needs with
    `SparseCategoricalCrossentropy(from_logits=True)`. With a `shared.kv_cache.KVCache` it returns
    `(logits, new_cache)`: the new tokens are written at `cache.index` and attend to everything
    cached before them (this is how the shared generation loop drives it).

    Args:
        config: the network's shape (`shared.config.GPT2Config`).
        remat: in training, keep only each block's input for the backward pass, which recomputes
            the block (`keras.remat`): one block's activation memory instead of all of them.
        int8: hold the projections and `wte` as Keras' weight-only int8 (`kernel` and
            `kernel_scale`, `embeddings` and `embeddings_scale`; one scale per output channel),
            for inference; `wpe`, biases and LayerNorms stay in `dtype`.
        **kwargs: passed to `keras.Model` (`name`, `dtype`, e.g. `dtype="bfloat16"`).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_impl import GPT2LM
    from shared.config import GPT2Config

    config = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=512, n_ctx=128)
    model = GPT2LM(config)
    tokens = np.random.default_rng(0).integers(0, config.n_vocab, size=(4, 17))
    assert model(tokens[:, :-1]).shape == (4, 16, 512)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(tokens[:, :-1], tokens[:, 1:], epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    model.summary()
    ```
    """

    def __init__(
        self, config: GPT2Config, remat: bool = False, int8: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.config, self.remat, self.int8 = config, remat, int8
        policy = self.dtype_policy
        # Keras infers `embeddings_initializer: str` from its default; it takes an Initializer.
        normal = keras.initializers.RandomNormal(stddev=GPT2_INIT_STD)
        self.wte = keras.layers.Embedding(
            config.n_vocab, config.n_embd, embeddings_initializer=normal,  # pyright: ignore[reportArgumentType]
            name="wte", **weights_dtype(policy, int8),
        )  # fmt: skip
        self.wpe = keras.layers.Embedding(
            config.n_ctx, config.n_embd, embeddings_initializer=normal,  # pyright: ignore[reportArgumentType]
            name="wpe", dtype=policy,
        )  # fmt: skip
        residual_std = GPT2_INIT_STD / math.sqrt(2 * config.n_layer)
        self.blocks = [
            TransformerBlock(
                config.n_head, config.ln_eps, residual_std, int8, name=f"h{i}", dtype=policy
            )
            for i in range(config.n_layer)
        ]
        self.ln_f = LayerNorm(epsilon=config.ln_eps, name="ln_f", dtype=policy)
        self.build((None, None))

    def build(self, input_shape: tuple[int | None, ...] = (None, None)) -> None:
        """Create every weight; the shapes depend only on the config, not on `input_shape`."""
        hidden = (*input_shape, self.config.n_embd)
        self.wte.build(input_shape)
        self.wpe.build(input_shape)
        for block in self.blocks:
            block.build(hidden)
        self.ln_f.build(hidden)

    def call(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        cache: KVCache | None = None,
        options: ApplyOptions = ApplyOptions(),
    ) -> jax.Array | tuple[jax.Array, KVCache]:
        """tokens, positions [batch, seq] -> logits [batch, seq, n_vocab] (and the new cache), or
        in place of the logits what `options.output` asks for (`shared.apply_options.ApplyOptions`).

        `positions` default to 0..seq-1 for every row. `options.dropout` (`shared.dropout.Dropout`:
        a rate and a key) applies GPT-2's training dropout; None runs the deterministic forward.
        `options.remat` rematerialises the blocks as the constructor's `remat` does.
        """
        check_tokens(tokens.shape, self.config.n_ctx)
        dropout, attentions = options.dropout, options.output == "attentions"
        remat = self.remat or options.remat
        seq = tokens.shape[1]
        if positions is None:
            positions = cast(jax.Array, ops.arange(seq))[None, :]
        x = drop(self.wte(tokens) + self.wpe(positions), dropout, EMBEDDINGS)
        attention_mask = attention.attention_mask(cache, seq)
        index = None if cache is None else cache.index
        new_k, new_v, block_inputs, probabilities = [], [], [], []
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i])
            block_dropout = None if dropout is None else dropout.block(i)
            run = functools.partial(block, attention_mask=attention_mask, index=index,
                                    dropout=block_dropout,
                                    return_attention_scores=attentions)  # fmt: skip
            block_inputs.append(x)
            x, layer_cache, *layer_probabilities = (keras.remat(run) if remat else run)(
                x, layer_cache=layer_cache
            )
            probabilities += layer_probabilities
            if cache is not None:
                assert layer_cache is not None, "a block given a layer cache returns it updated"
                new_k.append(layer_cache[0])
                new_v.append(layer_cache[1])
        output = model_output(options, block_inputs, probabilities, x, self.ln_f, self._head())
        if cache is None:
            return output
        return output, kv_cache.advance(cache, new_k, new_v, seq)

    def _head(self) -> Weight:
        """The tied output projection: `wte` in the compute dtype, or, held as Keras' int8 (by
        `int8` or by Keras' own `model.quantize("int8")`), int8 with the scales
        `shared.quantization` multiplies by (Keras keeps their inverses and divides)."""
        # `keras.ops` is untyped; on the JAX backend it returns jax.Array.
        if self.wte.quantization_mode == "int8":
            scale = cast(jax.Array, ops.reciprocal(self.wte.embeddings_scale))
            values = cast(jax.Array, ops.convert_to_tensor(self.wte.embeddings))
            return QuantizedWeight(values, scale[:, None])
        return cast(jax.Array, ops.cast(self.wte.embeddings, self.compute_dtype))

    def enable_lora(
        self, rank: int, lora_alpha: float | None = None, targets: tuple[str, ...] = DEFAULT_TARGETS
    ) -> None:
        """`keras.layers.Dense.enable_lora` on every block's `targets` (`shared.lora.TARGETS`:
        c_attn, attn_c_proj, c_fc, mlp_c_proj): their kernels freeze and each gets
        `lora_kernel_a` [in, rank] and `lora_kernel_b` [rank, out] (zero), scaled by
        lora_alpha / rank (default 1).

        Example:

        ```python
        from keras_impl import GPT2LM
        from shared.config import GPT2Config

        model = GPT2LM(GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=512, n_ctx=128))
        model.enable_lora(4, lora_alpha=8.0)
        assert model.blocks[0].attn.c_attn.lora_kernel_a.shape == (32, 4)
        ```
        """
        for block in self.blocks:
            for target in targets:
                layer = functools.reduce(getattr, TARGETS[target].split("/"), block)
                layer.enable_lora(rank, lora_alpha=lora_alpha)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            **dataclasses.asdict(self.config),
            "remat": self.remat,
            "int8": self.int8,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPT2LM:
        config = dict(config)
        hparams = {f.name: config.pop(f.name) for f in dataclasses.fields(GPT2Config)}
        return cls(GPT2Config(**hparams), **config)

    @classmethod
    def from_canonical(cls, tree: Params, config: GPT2Config, **kwargs: Any) -> GPT2LM:
        """A model holding canonical weights (e.g. OpenAI's checkpoint), ready to `fit` or `summary`.

        Args:
            tree: the canonical parameter tree (`shared.params`).
            config: its shape.
            **kwargs: passed to the constructor (`name`, `dtype`).

        Example:

        ```python
        import jax
        from keras_impl import GPT2LM
        from shared.config import GPT2Config
        from shared.params import init_params

        config = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=512, n_ctx=128)
        tree = init_params(config, jax.random.PRNGKey(0))
        model = GPT2LM.from_canonical(tree, config)
        assert (model.wte.embeddings.numpy() == tree["wte"]).all()
        ```
        """
        from keras_impl import convert

        model = cls(config, **kwargs)
        convert.load_into(model, tree)
        return model
