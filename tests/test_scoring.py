"""Scoring text (`GPT2.score`, `shared.scoring`): each token scored once, from the context its
window gives it, with figures that agree with the training loss."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.api import from_canonical
from shared.backend import get_backend
from shared.config import GPT2Config
from shared.loss import language_model_loss
from shared.params import init_params
from shared.scoring import TextScore, plan_windows
from shared.tokenizer import CharTokenizer, Tokenizer
from tests.support.paths import BPE_DIR, TINY_SHAKESPEARE

CONFIG = GPT2Config(n_embd=32, n_head=4, n_layer=2, n_vocab=50257, n_ctx=32)
TEXT = TINY_SHAKESPEARE.read_text()[:600]


@pytest.fixture(scope="module")
def model():
    tree = init_params(CONFIG, jax.random.PRNGKey(0))
    return from_canonical(tree, CONFIG, Tokenizer(BPE_DIR), "functional")


def _log_prob_of_last(model, context: list[int], target: int) -> float:
    """log p(target | context) from one full forward over exactly `context`."""
    tokens = jnp.asarray([context])
    positions = jnp.arange(len(context))[None]
    logits, _ = model.backend.apply(model.params, tokens, positions, None, config=CONFIG)
    return float(jax.nn.log_softmax(logits[0, -1])[target])


@pytest.mark.parametrize(
    ("n_targets", "length", "stride"), [(1, 16, 16), (100, 32, 32), (100, 32, 8), (33, 32, 1)]
)
def test_windows_score_every_target_once_with_the_context_the_stride_promises(
    n_targets, length, stride
):
    plan = plan_windows(n_targets, length, stride)
    scored = [i for _, first, end in plan for i in range(first, end)]
    assert scored == list(range(n_targets))
    for start, first, end in plan:
        assert end - start <= length
        if start > 0:  # target i is predicted from tokens[start:i + 1]
            assert first + 1 - start >= length - stride + 1


def test_a_short_text_scores_as_the_training_loss_from_endoftext(model):
    text = "To be, or not to be, that is the question."
    score = model.score(text)
    ids = [model.tokenizer.eot_id, *model.tokenizer.encode(text)]
    loss = language_model_loss(model.backend, model.params, jnp.asarray([ids]), config=CONFIG)
    assert score.token_ids.tolist() == ids[1:]
    assert score.nll == pytest.approx(float(loss), rel=1e-6)
    assert score.perplexity == pytest.approx(math.exp(float(loss)), rel=2e-5)
    assert score.n_bytes == len(text.encode())
    bits = -score.log_probs.sum() / math.log(2) / len(text.encode())
    assert score.bits_per_byte == pytest.approx(bits, rel=1e-6)


@pytest.mark.parametrize("stride", [32, 12])
def test_each_token_of_a_long_text_is_scored_from_its_windows_context(model, stride):
    """Past the first window, token i + 1 is predicted from the window's start up to it: the
    scores equal one full forward over exactly that context."""
    score = model.score(TEXT, stride=stride, batch_size=3)
    ids = [model.tokenizer.eot_id, *model.tokenizer.encode(TEXT)]
    assert len(ids) - 1 == score.n_tokens > 3 * CONFIG.n_ctx
    for start, first, end in plan_windows(len(ids) - 1, CONFIG.n_ctx, stride)[1::3]:
        for i in (first, end - 1):
            expected = _log_prob_of_last(model, ids[start : i + 1], ids[i + 1])
            assert score.log_probs[i] == pytest.approx(expected, abs=2e-5)


def test_a_context_conditions_the_text_without_being_scored(model):
    context, answer = "The capital of France is", " Paris, of course."
    whole = model.score(context + answer)
    tokenizer = model.tokenizer
    assert tokenizer.encode(context) + tokenizer.encode(answer) == tokenizer.encode(
        context + answer
    )
    conditioned = model.score(answer, context=context)
    n = len(tokenizer.encode(answer))
    assert conditioned.token_ids.tolist() == tokenizer.encode(answer)
    np.testing.assert_allclose(conditioned.log_probs, whole.log_probs[-n:], atol=2e-6)
    assert conditioned.log_prob == pytest.approx(float(np.sum(whole.log_probs[-n:])), rel=1e-6)
    assert conditioned.n_bytes == len(answer.encode())
    assert conditioned.log_prob != pytest.approx(model.score(answer).log_prob, rel=1e-3)


def test_more_context_and_batching_change_only_what_they_should(model):
    disjoint, overlapping = model.score(TEXT, stride=32), model.score(TEXT, stride=8)
    batched = model.score(TEXT, stride=8, batch_size=5)
    np.testing.assert_allclose(batched.log_probs, overlapping.log_probs, atol=2e-6)
    first_window = slice(0, CONFIG.n_ctx)  # the same context whatever the stride
    np.testing.assert_allclose(
        disjoint.log_probs[first_window], overlapping.log_probs[first_window], atol=2e-6
    )
    assert not np.allclose(disjoint.log_probs, overlapping.log_probs, atol=1e-4)


def test_a_perplexity_past_floats_range_is_infinite():
    ids, log_probs = np.arange(4), np.full(4, -800.0, np.float32)
    assert TextScore(ids, log_probs, n_bytes=4, stride=16).perplexity == math.inf
    assert TextScore(ids, log_probs / 100, n_bytes=4, stride=16).perplexity == pytest.approx(
        math.exp(8.0)
    )


def test_a_character_model_scores_from_its_second_character():
    config = GPT2Config(n_embd=16, n_head=2, n_layer=1, n_vocab=27, n_ctx=16)
    tokenizer = CharTokenizer(list(" abcdefghijklmnopqrstuvwxyz"))
    model = from_canonical(init_params(config, jax.random.PRNGKey(1)), config, tokenizer, "haiku")
    score = model.score("the quick brown fox jumps over the lazy dog", stride=5)
    assert score.n_tokens == score.n_bytes == len("the quick brown fox jumps over the lazy dog") - 1
    assert score.token_ids.tolist() == tokenizer.encode(
        "he quick brown fox jumps over the lazy dog"
    )
    assert np.all(np.isfinite(score.log_probs)) and np.all(score.log_probs < 0)
    assert model.score("fox", context="the quick brown ").n_tokens == 3


def test_bfloat16_weights_score_near_float32(model):
    tree = init_params(CONFIG, jax.random.PRNGKey(0))
    bf16 = from_canonical(tree, CONFIG, model.tokenizer, get_backend("keras"), "bfloat16")
    assert bf16.score(TEXT[:200]).log_probs.dtype == np.float32
    assert bf16.score(TEXT[:200]).nll == pytest.approx(model.score(TEXT[:200]).nll, rel=1e-2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": ""}, "Give a non-empty text to score, got ''."),
        (
            {"text": "Hi", "stride": 0},
            "stride must be an integer from 1 to the context, 32, got 0.",
        ),
        (
            {"text": "Hi", "stride": 33},
            "stride must be an integer from 1 to the context, 32, got 33",
        ),
        ({"text": "Hi", "stride": 2.5}, "stride must be an integer from 1 to the context"),
        ({"text": "Hi", "batch_size": 0}, "batch_size must be an integer >= 1, got 0."),
        ({"text": "Hi", "context": None}, "context must be text (or empty), got None."),
    ],
)
def test_bad_requests_are_one_sentence(model, kwargs, message):
    with pytest.raises(ValueError) as error:
        model.score(**kwargs)
    assert message in str(error.value)


def test_token_ids_outside_the_vocabulary_are_named(model):
    with pytest.raises(ValueError, match="holds 50257, which is not a token id"):
        model.scorer.log_probs([1, 2, 50257], 16)
    with pytest.raises(ValueError, match="at least two tokens"):
        model.scorer.log_probs([1], 16)
