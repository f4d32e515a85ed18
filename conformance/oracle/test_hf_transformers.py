"""The oracle: an implementation nobody here wrote. HF transformers (PyTorch, CPU) builds a GPT-2,
we load its `model.safetensors` through `shared.weights.hf` into every backend and compare logits and
greedy tokens; and weights exported by `gpt2 convert --to hf` load back into transformers.

Run by `nox -s oracle` (which installs PyTorch and transformers) with `--oracle`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
import safetensors.numpy
import torch
import transformers

from conformance.conftest import CONFIGS, TINY, canonical_tree
from conformance.report import max_abs_diff
from conformance.test_logits import LOGITS_TOLERANCE, forward
from shared.api import from_canonical
from shared.beam_search import BeamParams, search
from shared.cli import main as gpt2_cli
from shared.generation import Generator
from shared.sampling import SamplingParams
from shared.scoring import Scorer
from shared.tokenizer import Tokenizer
from shared.weights import load_hf, save_canonical
from tests.support.hf_checkpoint import write_hf_checkpoint
from tests.support.openai_checkpoint import openai_variable_shapes
from tests.support.paths import BPE_DIR

GREEDY_TOKENS = 30
BEAM_TOKENS = 20


def _hf_model(config, seed=0) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(seed)
    hf_config = transformers.GPT2Config(
        vocab_size=config.n_vocab, n_positions=config.n_ctx, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, layer_norm_epsilon=config.ln_eps,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(hf_config).eval()


def _hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).logits.numpy()


@pytest.fixture(scope="module", params=list(CONFIGS))
def hf_checkpoint(request, tmp_path_factory):
    """(config name, HF model, our canonical tree loaded from its saved model.safetensors)."""
    model = _hf_model(CONFIGS[request.param])
    folder = tmp_path_factory.mktemp(f"hf-{request.param}")
    model.save_pretrained(folder)
    tree, config = load_hf(folder)
    assert config == CONFIGS[request.param]
    return request.param, model, tree


def _saved_files(folder) -> tuple[dict, dict]:
    """(the safetensors header: format tag and each tensor's shape and dtype, config.json less
    the version that wrote it) of a saved HF folder."""
    with safetensors.safe_open(folder / "model.safetensors", "np") as f:
        header = {"metadata": f.metadata()}
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    header |= {name: (array.shape, array.dtype) for name, array in tensors.items()}
    config = json.loads((folder / "config.json").read_text())
    del config["transformers_version"]
    return header, config


def test_the_default_suites_hf_files_are_what_save_pretrained_writes(tmp_path):
    """`tests.support.hf_checkpoint` writes HF's files for the default suite, which has no
    transformers: the same tensor names, shapes, dtypes, format tag and config.json as a
    `GPT2LMHeadModel` with the same shape settings saves."""
    hf_config = transformers.GPT2Config(
        vocab_size=TINY.n_vocab, n_positions=TINY.n_ctx, n_embd=TINY.n_embd, n_layer=TINY.n_layer,
        n_head=TINY.n_head,
    )  # fmt: skip
    transformers.GPT2LMHeadModel(hf_config).save_pretrained(tmp_path / "transformers")
    zeros = {name: np.zeros(shape, np.float32)
             for name, shape in openai_variable_shapes(TINY).items()}  # fmt: skip
    write_hf_checkpoint(tmp_path / "by-hand", zeros, TINY)
    assert _saved_files(tmp_path / "by-hand") == _saved_files(tmp_path / "transformers")


def test_logits_match_hf_transformers(backend, hf_checkpoint, report):
    name, model, tree = hf_checkpoint
    tokens = np.random.default_rng(0).integers(0, CONFIGS[name].n_vocab, (2, 24))
    ours = forward(backend, tree, CONFIGS[name], jnp.asarray(tokens))
    diff = max_abs_diff(ours, _hf_logits(model, tokens))
    report.check("oracle: logits vs HF transformers", backend.name, name, diff, LOGITS_TOLERANCE)


def test_hidden_states_match_hf_output_hidden_states(backend, hf_checkpoint, report):
    """Every depth of the residual stream, HF's `output_hidden_states` entry by entry."""
    name, model, tree = hf_checkpoint
    tokens = np.random.default_rng(4).integers(0, CONFIGS[name].n_vocab, (2, 24))
    ours = forward(backend, tree, CONFIGS[name], jnp.asarray(tokens), "hidden_states")
    with torch.no_grad():
        theirs = model(torch.from_numpy(tokens), output_hidden_states=True).hidden_states
    assert len(theirs) == CONFIGS[name].n_layer + 1
    diff = max_abs_diff(ours, np.stack([h.numpy() for h in theirs]))
    report.check("oracle: hidden states vs HF output_hidden_states", backend.name, name, diff,
                 LOGITS_TOLERANCE)  # fmt: skip


def test_attentions_match_hf_output_attentions(backend, hf_checkpoint, report):
    """Every block's attention probabilities, HF's `output_attentions` layer by layer (its eager
    attention, the implementation that forms them)."""
    name, model, tree = hf_checkpoint
    config = CONFIGS[name]
    tokens = np.random.default_rng(6).integers(0, config.n_vocab, (2, 24))
    ours = forward(backend, tree, config, jnp.asarray(tokens), "attentions")
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            theirs = model(torch.from_numpy(tokens), output_attentions=True).attentions
    finally:
        model.set_attn_implementation(implementation)
    assert len(theirs) == config.n_layer
    diff = max_abs_diff(ours, np.stack([a.numpy() for a in theirs]))
    report.check("oracle: attention probabilities vs HF output_attentions", backend.name, name,
                 diff, 1e-5)  # fmt: skip


@pytest.mark.parametrize(
    "setting", [{}, {"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2}], ids=str
)
def test_greedy_tokens_match_hf_generate(backend, hf_checkpoint, setting, report):
    name, model, tree = hf_checkpoint
    config = CONFIGS[name]
    prompt = np.random.default_rng(1).integers(0, config.n_vocab, (1, 10))
    with torch.no_grad():
        hf_out = model.generate(
            torch.from_numpy(prompt), attention_mask=torch.ones_like(torch.from_numpy(prompt)),
            max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS, do_sample=False,
            pad_token_id=0, **setting,
        )[0, prompt.shape[1] :].tolist()  # fmt: skip
    [ours] = Generator(backend, backend.from_canonical(tree, config), config).generate(
        prompt.tolist(), GREEDY_TOKENS, SamplingParams(0.0, **setting)
    )
    assert len(hf_out) == GREEDY_TOKENS
    differing = sum(a != b for a, b in zip(ours.tokens, hf_out, strict=True))
    check = f"oracle: {GREEDY_TOKENS} greedy ids vs HF generate"
    check += "".join(f" ({name} {value})" for name, value in setting.items())
    report.check(check, backend.name, name, differing, 0)


@pytest.mark.parametrize("hf_checkpoint", ["124M"], indirect=True)
def test_an_empty_prompt_starts_where_hf_generate_without_inputs_does(
    backend, hf_checkpoint, report
):
    """HF's `generate()` given no input ids starts from `bos_token_id`, `<|endoftext|>`, as OpenAI's
    unconditional samples do; an empty prompt here starts there too (`GPT2.prompt_ids`)."""
    name, model, tree = hf_checkpoint
    config = CONFIGS[name]
    with torch.no_grad():
        hf_out = model.generate(
            max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS, do_sample=False,
            pad_token_id=0,
        )[0].tolist()  # fmt: skip
    gpt = from_canonical(tree, config, Tokenizer(BPE_DIR), backend)
    [start] = gpt.prompt_ids([""])
    [ours] = gpt.generator.generate([start], GREEDY_TOKENS, SamplingParams(0.0))
    assert len(hf_out) == 1 + GREEDY_TOKENS
    differing = sum(a != b for a, b in zip(start + ours.tokens, hf_out, strict=True))
    report.check(f"oracle: unconditional {GREEDY_TOKENS} greedy ids vs HF generate without input",
                 backend.name, name, differing, 0)  # fmt: skip


BEAM_SETTINGS = {
    "plain": {},
    "stop tokens": {},
    "penalties": {"length_penalty": 0.6, "repetition_penalty": 1.3},
    "no repeated bigrams": {"no_repeat_ngram_size": 2},
}
SHARPNESS = {"tiny": 12.0, "124M": 6.0}
"""Token embeddings (tied to the output projection) this many times their initial scale: a
random model's next-token distributions are almost flat, and sharper ones let stop tokens win
and leave fewer near-ties between beams, as a trained model's do."""


@contextlib.contextmanager
def sharpened(model: transformers.GPT2LMHeadModel, factor: float) -> Iterator[None]:
    embeddings = model.transformer.wte.weight
    original = embeddings.detach().clone()
    embeddings.mul_(factor)
    try:
        yield
    finally:
        embeddings.copy_(original)


@pytest.mark.parametrize("setting", list(BEAM_SETTINGS))
def test_beam_search_matches_hf_generate(backend, hf_checkpoint, setting, report):
    """Four beams, all four hypotheses returned: ids and `sequences_scores` as HF's
    `generate(num_beams=4, do_sample=False)`. "stop tokens" makes the fourth token of each
    plain hypothesis a stop token (HF's eos_token_id list), so hypotheses end early, HF keeps
    more candidates per step, and its finished-beam rules are compared too."""
    name, model, tree = hf_checkpoint
    config = CONFIGS[name]
    prompt = np.random.default_rng(5).integers(0, config.n_vocab, (1, 10))
    tree = {**tree, "wte": tree["wte"] * SHARPNESS[name]}
    generator = Generator(backend, backend.from_canonical(tree, config), config)
    beams = BeamParams(4, num_return=4, **BEAM_SETTINGS[setting])
    eos = [model.generation_config.eos_token_id]  # 50256: a token of 124M, beyond the tiny vocab
    stops = {t for t in eos if t < config.n_vocab}
    if setting == "stop tokens":
        plain = search(generator, prompt.tolist(), BEAM_TOKENS, beams, stop_tokens=stops)[0]
        eos = sorted({h.tokens[3] for h in plain})
        stops = set(eos)
    ours = search(generator, prompt.tolist(), BEAM_TOKENS, beams, stop_tokens=stops)[0]
    pad = config.n_vocab - 1  # HF pads with eos_token_id[0] where pad_token_id is 0
    with torch.no_grad(), sharpened(model, SHARPNESS[name]):
        hf = model.generate(
            torch.from_numpy(prompt), attention_mask=torch.ones_like(torch.from_numpy(prompt)),
            max_new_tokens=BEAM_TOKENS, num_beams=4, num_return_sequences=4, do_sample=False,
            early_stopping=False, eos_token_id=eos, pad_token_id=pad,
            return_dict_in_generate=True, output_scores=True, **BEAM_SETTINGS[setting],
        )  # fmt: skip
    hf_ids = hf.sequences[:, prompt.shape[1] :].numpy()
    rows = [h.tokens + ([h.stop_token] if h.stop_token is not None else []) for h in ours]
    our_ids = np.full((len(rows), max(map(len, rows))), pad)
    for row, ids in enumerate(rows):
        our_ids[row, : len(ids)] = ids
    if setting == "stop tokens":
        assert any(h.finish_reason == "stop" for h in ours)
    differing = int(np.sum(our_ids != hf_ids)) if our_ids.shape == hf_ids.shape else our_ids.size
    report.check(f"oracle: 4-beam search ids vs HF generate ({setting})", backend.name, name,
                 differing, 0)  # fmt: skip
    diff = max_abs_diff(np.array([h.score for h in ours]), hf.sequences_scores.numpy())
    report.check(f"oracle: 4-beam search scores vs HF sequences_scores ({setting})",
                 backend.name, name, diff, 1e-4)  # fmt: skip


def test_text_scores_match_hf_transformers_loss(backend, hf_checkpoint, report):
    """A context-long text scores as HF's own shifted loss (`labels=`) says it should."""
    name, model, tree = hf_checkpoint
    config = CONFIGS[name]
    ids = np.random.default_rng(3).integers(0, config.n_vocab, (1, config.n_ctx))
    scorer = Scorer(backend, backend.from_canonical(tree, config), config)
    nll = -float(np.mean(scorer.log_probs(ids[0].tolist(), config.n_ctx), dtype=np.float64))
    with torch.no_grad():
        hf_nll = float(model(torch.from_numpy(ids), labels=torch.from_numpy(ids)).loss)
    report.check("oracle: text score (mean NLL) vs HF loss (relative)", backend.name, name,
                 abs(nll / hf_nll - 1), 1e-5)  # fmt: skip


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gpt2_convert_to_hf_loads_in_transformers(name, tmp_path, reference, report):
    config, tree = CONFIGS[name], canonical_tree(CONFIGS[name])
    save_canonical(jax.tree.map(np.asarray, tree), config, tmp_path / "ours.safetensors")
    assert (
        gpt2_cli(
            ["convert", str(tmp_path / "ours.safetensors"), str(tmp_path / "hf"), "--to", "hf"]
        )
        == 0
    )
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    tokens = np.random.default_rng(2).integers(0, config.n_vocab, (2, 24))
    diff = max_abs_diff(
        _hf_logits(model, tokens), forward(reference, tree, config, jnp.asarray(tokens))
    )
    report.check(
        "oracle: `gpt2 convert --to hf` loads in transformers (logits)",
        "functional",
        name,
        diff,
        LOGITS_TOLERANCE,
    )
