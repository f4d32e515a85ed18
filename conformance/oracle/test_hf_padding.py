"""The oracle on weights far from GPT-2's init, and on a left-padded batch: HF transformers saves a
tiny model with `lively_tree`'s scales (`save_pretrained`, safetensors), every backend reads it
through `shared.weights.hf`; logits must match HF's forward, and a batch of prompts from several
padding buckets must match HF's own left-padded batch, row by row, in logits and greedy ids.

Run by `nox -s oracle` with `--oracle`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from conformance.conftest import TINY
from conformance.report import max_abs_diff
from conformance.test_logits import LOGITS_TOLERANCE, forward
from conformance.test_padding import NEW_TOKENS, PROMPTS, padded_first_logits
from shared.generation import Generator
from shared.weights import load_hf

PAD = 0
CHECK = "oracle: left-padded batch (lively weights)"


def lively_hf_model(seed: int = 0) -> transformers.GPT2LMHeadModel:
    """A tiny `GPT2LMHeadModel` with `conformance.conftest.lively_tree`'s scales drawn in torch:
    embeddings of std 0.5, Conv1D weights [in, out] of std in**-0.5, biases of std 0.1, layer-norm
    gains near 1. The output head stays tied to the token embeddings."""
    hf_config = transformers.GPT2Config(
        vocab_size=TINY.n_vocab, n_positions=TINY.n_ctx, n_embd=TINY.n_embd,
        n_layer=TINY.n_layer, n_head=TINY.n_head, layer_norm_epsilon=TINY.ln_eps,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(hf_config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.transformer.named_parameters():
            if name in ("wte.weight", "wpe.weight"):
                mean, std = 0.0, 0.5
            elif ".ln_" in name or name.startswith("ln_f."):
                mean, std = (1.0, 0.1) if name.endswith("weight") else (0.0, 0.1)
            elif name.endswith("weight"):
                mean, std = 0.0, parameter.shape[0] ** -0.5
            else:
                mean, std = 0.0, 0.1
            parameter.normal_(mean, std, generator=generator)
    assert model.lm_head.weight is model.transformer.wte.weight
    return model


@pytest.fixture(scope="module")
def lively_checkpoint(tmp_path_factory):
    """(HF model, our canonical tree loaded from the `model.safetensors` it saved)."""
    model = lively_hf_model()
    folder = tmp_path_factory.mktemp("hf-lively")
    model.save_pretrained(folder)
    tree, config = load_hf(folder)
    assert config == TINY
    return model, tree


@pytest.fixture(scope="module")
def hf_padded_batch():
    """PROMPTS left-padded to the longest, as a tokenizer with `padding_side="left"` pads them:
    (input ids, attention mask, position ids as HF's `generate` derives them from the mask)."""
    width = max(map(len, PROMPTS))
    ids = torch.full((len(PROMPTS), width), PAD)
    mask = torch.zeros((len(PROMPTS), width), dtype=torch.long)
    for row, prompt in enumerate(PROMPTS):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    return ids, mask, positions


def test_lively_logits_match_hf_transformers(backend, lively_checkpoint, report):
    model, tree = lively_checkpoint
    tokens = np.random.default_rng(8).integers(0, TINY.n_vocab, (2, 24))
    ours = forward(backend, tree, TINY, tokens)
    with torch.no_grad():
        theirs = model(torch.from_numpy(tokens)).logits.numpy()
    report.check("oracle: logits vs HF transformers (lively weights)", backend.name, "tiny",
                 max_abs_diff(ours, theirs), LOGITS_TOLERANCE)  # fmt: skip


def test_padded_batch_first_logits_match_hf_padded_forward(
    backend, lively_checkpoint, hf_padded_batch, report
):
    """Each row's next-token logits after its prompt: ours padded to our bucket, HF's to the
    longest prompt with its attention mask and position ids."""
    model, tree = lively_checkpoint
    ids, mask, positions = hf_padded_batch
    ours = padded_first_logits(backend, backend.from_canonical(tree, TINY), PROMPTS)[:, 0]
    with torch.no_grad():
        theirs = model(ids, attention_mask=mask, position_ids=positions).logits[:, -1].numpy()
    report.check(f"{CHECK}, next-token logits vs HF padded forward", backend.name, "tiny",
                 max_abs_diff(ours, theirs), LOGITS_TOLERANCE)  # fmt: skip


def test_padded_batch_matches_hf_generate(backend, lively_checkpoint, hf_padded_batch, report):
    """HF's greedy `generate` on its padded batch: its ids against `Generator.generate`'s, and the
    logits of every generated position against ours."""
    model, tree = lively_checkpoint
    ids, mask, _ = hf_padded_batch
    params = backend.from_canonical(tree, TINY)
    with torch.no_grad():
        hf = model.generate(
            ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
            do_sample=False, pad_token_id=PAD, return_dict_in_generate=True, output_logits=True,
        )  # fmt: skip
    hf_ids = hf.sequences[:, ids.shape[1] :].numpy()
    ours = [c.tokens for c in Generator(backend, params, TINY).generate(PROMPTS, NEW_TOKENS)]
    differing = int(np.sum(np.array(ours) != hf_ids))
    report.check(f"{CHECK}, {NEW_TOKENS} greedy ids vs HF generate", backend.name, "tiny",
                 differing, 0)  # fmt: skip
    hf_logits = torch.stack(hf.logits, dim=1).numpy()
    diff = max_abs_diff(padded_first_logits(backend, params, PROMPTS), hf_logits)
    report.check(f"{CHECK}, logits of {NEW_TOKENS} generated positions vs HF generate",
                 backend.name, "tiny", diff, LOGITS_TOLERANCE)  # fmt: skip
