"""The options of one forward pass (`Backend.apply`): one small object instead of a tail of flags.

Every backend's forward reads the same four fields, and the callers (generation, the loss, the
trainer, internals) build one object, so a new option changes this file and the layer that uses
it, not every signature in between.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal, get_args

import jax

from shared.dropout import Dropout

Output = Literal["logits", "hidden_states", "attentions"]
OUTPUTS: tuple[str, ...] = get_args(Output)
"""What a forward pass can return: the logits, or in their place the residual stream or the
attention probabilities (`shared.logits.model_output`)."""


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["dropout"],
    meta_fields=["remat", "last_only", "output"],
)
@dataclasses.dataclass(frozen=True)
class ApplyOptions:
    """How to run one forward pass, and what it returns.

    dropout:   GPT-2's training dropout (`shared.dropout.Dropout`: a rate and a key), drawn the
               same in every backend; None (inference, evaluation) applies none.
    remat:     (training) keep only each block's input for the backward pass, which recomputes
               the block with the framework's own tool: one block's activation memory instead of
               all, for about one more forward pass.
    last_only: return only the last position's logits, [batch, 1, n_vocab] (a prefill).
    output:    "logits" [batch, seq, n_vocab]; "hidden_states", the residual stream [n_layer + 1,
               batch, seq, n_embd] as Hugging Face's `output_hidden_states` (each block's input,
               entry 0 the embeddings, then the final LayerNorm's output); or "attentions", every
               block's attention probabilities [n_layer, batch, n_head, seq, keys] as its
               `output_attentions` (keys: seq without a cache, the cache's slots with one).

    A pytree whose only data is the dropout's key: the flags and the dropout rate are static (in
    its tree structure), so a jitted function that takes options compiles once per choice of
    flags, and the key stays a traced value: a new key each step reuses the compiled step.
    """

    dropout: Dropout | None = None
    remat: bool = False
    last_only: bool = False
    output: Output = "logits"

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(
                f"A forward pass returns one of {', '.join(OUTPUTS)}; got output={self.output!r}."
            )
        if self.last_only and self.output != "logits":
            raise ValueError(
                f"{self.output} covers every position; it cannot be combined with last_only."
            )
