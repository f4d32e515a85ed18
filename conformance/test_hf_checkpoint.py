"""Hugging Face's files, as `GPT2LMHeadModel.save_pretrained` writes them (`transformer.` names,
Conv1D [in, out] weights, no tied `lm_head.weight`, its `config.json`), read by `shared.weights.hf`:
every backend gives the logits of the same weights read from OpenAI's checkpoint, and the
reference's."""

from __future__ import annotations

import numpy as np

from conformance.conftest import TINY, compared_with_reference
from conformance.report import max_abs_diff
from conformance.test_logits import LOGITS_TOLERANCE, forward

TOKENS = np.random.default_rng(2).integers(0, TINY.n_vocab, (3, 20), dtype=np.int32)


def test_hf_files_give_the_logits_of_the_same_weights_from_openai_files(
    backend, hf_format_checkpoint, openai_checkpoint, report
):
    """One backend, one set of weights read from either format: the very same logits."""
    (hf_tree, hf_config), (openai_tree, openai_config) = hf_format_checkpoint, openai_checkpoint
    assert hf_config == openai_config == TINY
    diff = max_abs_diff(
        forward(backend, hf_tree, TINY, TOKENS), forward(backend, openai_tree, TINY, TOKENS)
    )
    report.check("HF safetensors logits vs the same weights from OpenAI's checkpoint",
                 backend.name, "tiny", diff, 0.0)  # fmt: skip


@compared_with_reference
def test_hf_files_give_the_same_logits_in_every_backend(
    backend, reference, hf_format_checkpoint, report
):
    tree, _ = hf_format_checkpoint
    diff = max_abs_diff(
        forward(backend, tree, TINY, TOKENS), forward(reference, tree, TINY, TOKENS)
    )
    report.check("HF safetensors logits vs functional", backend.name, "tiny", diff,
                 LOGITS_TOLERANCE)  # fmt: skip
