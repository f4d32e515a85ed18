"""The Python API of the `gpt2` facade, against the local OpenAI server fixture."""

from __future__ import annotations

import numpy as np
import pytest

import gpt2
from shared.tokenizer import ENDOFTEXT
from tests.support.greedy import greedy_tokens


@pytest.fixture(scope="module")
def served(tmp_path_factory, openai_checkpoint_dir):
    from tests.support.openai_server import OpenAIServer

    with OpenAIServer(openai_checkpoint_dir.parents[1]) as server:
        yield server.base_url, tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def model(served):
    base_url, models_dir = served
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPT2_BASE_URL", base_url)
        yield gpt2.load_model("124M", models_dir=models_dir, progress=False)


def test_main_is_greedy_by_default_like_picogpt(served, model, monkeypatch):
    base_url, models_dir = served
    monkeypatch.setenv("GPT2_BASE_URL", base_url)
    text = gpt2.main(prompt="Hello, world!", n_tokens_to_generate=12, models_dir=models_dir)
    assert text == model.generate("Hello, world!", 12, temperature=0.0)[0]
    sampled = gpt2.main("Hello, world!", 12, "124M", models_dir, temperature=0.8, top_k=40, seed=1)
    assert isinstance(sampled, str)


def test_readme_example_with_a_stop_string(model):
    texts = model.generate(["Hello", "How are you"], max_new_tokens=20, temperature=0.0, stop=["."])
    free = model.generate(["Hello", "How are you"], max_new_tokens=20, temperature=0.0)
    assert len(texts) == 2
    for text, unstopped in zip(texts, free, strict=True):
        assert "." not in text
        assert text == unstopped.split(".")[0]


def test_stream_deltas_add_up_to_generate(model, monkeypatch):
    """`stream` yields each token's text as it comes: when a piece arrives, the token source has
    computed only the tokens that piece needs, and the pieces add up to `generate`'s text."""
    steps = []  # tokens per row the generator had computed at each of its yields
    plain = model.generator.stream_checked

    def counted(*args, **kwargs):
        for new, done in plain(*args, **kwargs):
            steps.append(max(len(ids) for ids in new))
            yield new, done

    kwargs = {"temperature": 1.0, "top_k": 50, "seed": 4}
    monkeypatch.setattr(model.generator, "stream_checked", counted)
    stream = model.stream(["Hello", "Goodbye"], 15, **kwargs)
    pieces = [next(stream)]
    assert steps == [1]  # the first piece came before a second token was computed
    for piece in stream:
        pieces.append(piece)
        assert len(steps) == len(pieces)  # one token computed per piece, none ahead
    monkeypatch.undo()
    assert len(pieces) == 15 and any(pieces[0])
    assert sum(1 for piece in pieces if any(piece)) > 10  # text came with most tokens
    joined = ["".join(p[row] for p in pieces) for row in range(2)]
    assert joined == model.generate(["Hello", "Goodbye"], 15, **kwargs)


def test_generated_text_never_contains_endoftext(model):
    for text in model.generate("The", 40, temperature=2.0, top_k=None, seed=0, num_samples=4):
        assert ENDOFTEXT not in text


def test_sampling_settings_come_as_sampling_params_or_as_keywords_not_both(model):
    settings = gpt2.SamplingParams(temperature=0.7, top_k=20, repetition_penalty=1.2)
    keywords = {"temperature": 0.7, "top_k": 20, "repetition_penalty": 1.2}
    expected = model.generate("Hello", 8, seed=3, **keywords)
    assert model.generate("Hello", 8, sampling=settings, seed=3) == expected
    assert next(model.stream("Hello", 8, sampling=settings, seed=3)) == next(
        model.stream("Hello", 8, seed=3, **keywords)
    )
    with pytest.raises(
        ValueError, match=r"either as sampling=SamplingParams\(...\) or as keywords"
    ):
        model.generate("Hello", 8, sampling=settings, top_p=0.9)
    with pytest.raises(TypeError, match="Unexpected keyword argument 'topk'"):
        model.generate("Hello", 8, topk=5)


def test_samples_of_one_prompt_differ_but_reproduce(model):
    a = model.generate("Hi", 10, temperature=50.0, seed=9, num_samples=3)
    assert len(set(a)) == 3
    assert a == model.generate("Hi", 10, temperature=50.0, seed=9, num_samples=3)


def test_bad_arguments_fail_clearly(model, served):
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1, got 0"):
        model.generate("Hi", 5, num_samples=0)
    with pytest.raises(ValueError, match="A stop string is empty"):
        model.generate("Hi", 5, stop=["\n", ""])
    with pytest.raises(ValueError, match="Prompts are text to continue, got 3"):
        model.generate(["Hi", 3], 5)
    with pytest.raises(
        ValueError,
        match=r"seed must be an integer in \[-2\*\*63, 2\*\*63\), got 18446744073709551616",
    ):
        model.generate("Hi", 5, seed=2**64)
    with pytest.raises(ValueError, match="Unknown dtype 'float8'"):
        gpt2.load_model("124M", models_dir=served[1], dtype="float8")
    with pytest.raises(ValueError, match="Stop strings are text to stop before, got 3"):
        model.generate("Hi", 5, stop=["\n", 3])


def test_numpy_counts_and_seeds_are_accepted(model):
    expected = model.generate("Hi", 5, temperature=1.0, seed=3, num_samples=2)
    assert (
        model.generate(
            "Hi", np.int64(5), temperature=np.float32(1.0), seed=np.int64(3), num_samples=np.int8(2)
        )
        == expected
    )
    assert model.generate("Hi", 5, temperature=0.0, stop=None) == model.generate(
        "Hi", 5, temperature=0.0
    )


def test_from_canonical_takes_a_backend_name_and_checks_the_dtype(model):
    tree = model.backend.to_canonical(model.params, model.config)
    on_haiku = gpt2.from_canonical(tree, model.config, model.tokenizer, "haiku")
    assert on_haiku.backend.name == "haiku"
    assert on_haiku.generate("Hi", 5, temperature=0.0) == model.generate("Hi", 5, temperature=0.0)
    with pytest.raises(ValueError, match="Unknown dtype 'float16'; allowed: float32, bfloat16"):
        gpt2.from_canonical(tree, model.config, model.tokenizer, "haiku", dtype="float16")


def test_bfloat16_weights_generate(served, monkeypatch):
    monkeypatch.setenv("GPT2_BASE_URL", served[0])
    model = gpt2.load_model("124M", models_dir=served[1], dtype="bfloat16", progress=False)
    assert model.params["wte"].dtype.name == "bfloat16"
    assert len(model.tokenizer.encode(model.generate("Hi", 5, temperature=0.0)[0])) >= 1


@pytest.mark.slow
def test_a_truncated_row_does_not_depend_on_the_prompts_batched_with_it(model):
    short, long = "Hi there", "word " * 150  # the long prompt slides, the short one fits
    for kwargs in ({"temperature": 0.0}, {"temperature": 1.0, "top_k": None, "seed": 3}):
        batched = model.generate([short, long], 80, truncate=True, **kwargs)
        assert batched[0] == model.generate(short, 80, truncate=True, **kwargs)[0]
    greedy = model.generate([short, long], 80, truncate=True, temperature=0.0)
    assert greedy[1] == model.generate(long, 80, truncate=True, temperature=0.0)[0]


def test_truncate_continues_from_the_end_of_the_text_as_it_slides(model):
    """`truncate`: the model sees the prompt's end, then a window sliding along the text.

    160 tokens of prompt, 80 new ones, a context of 128: the first segment sees the prompt's last
    64 tokens and writes 64, filling the context; the next sees the text's last 112 tokens and
    writes the remaining 16 (`shared.generation_windows.segments`).
    """
    prompt = " ".join(str(n) for n in range(100, 260))  # one token per number
    ids = model.tokenizer.encode(prompt)
    assert len(ids) == 160 and model.config.n_ctx == 128
    first = greedy_tokens(model, ids[-64:], 64)
    second = greedy_tokens(model, (ids + first)[-112:], 16)
    assert len(first + second) == 80  # no <|endoftext|>: the window really slides
    text = model.generate(prompt, 80, truncate=True, temperature=0.0)[0]
    assert text == model.tokenizer.decode(first + second)
    # Only the end counts: the same end after another beginning continues the same way ...
    other_start = " ".join(["the"] * 40 + prompt.split()[40:])
    assert model.generate(other_start, 80, truncate=True, temperature=0.0)[0] == text
    # ... while the prompt's beginning, or a changed end, would continue differently.
    assert greedy_tokens(model, ids[:64], 64) != first
    other_end = prompt.rsplit(" ", 3)[0] + " 7 8 9"
    assert model.generate(other_end, 80, truncate=True, temperature=0.0)[0] != text


def test_stop_may_be_one_string(model):
    assert model.generate("Hello", 20, temperature=0.0, stop="the") == model.generate(
        "Hello", 20, temperature=0.0, stop=["the"]
    )


def test_beam_search_texts_are_the_decoded_hypotheses_cut_at_stop_strings(model):
    from shared.beam_search import BeamParams, search

    prompts = ["Hello", "How are you"]
    texts = model.beam_search(prompts, 12, num_beams=3, num_return=3, stop=["e"])
    ids = [model.tokenizer.encode(p) for p in prompts]
    stops = model._stop_tokens(("e", ENDOFTEXT))
    hypotheses = search(model.generator, ids, 12, BeamParams(3, num_return=3), stop_tokens=stops)
    rows = [h for row in hypotheses for h in row]
    assert [t.score for t in texts] == [h.score for h in rows]
    for text, hypothesis in zip(texts, rows, strict=True):
        ended = [hypothesis.stop_token] if hypothesis.stop_token is not None else []
        full = model.tokenizer.decode(hypothesis.tokens + ended)
        cuts = [i for stop in ("e", ENDOFTEXT) if (i := full.find(stop)) >= 0]
        assert text.text == full[: min(cuts, default=len(full))]
        assert text.finish_reason == hypothesis.finish_reason
    assert any(t.finish_reason == "stop" for t in texts)
    assert isinstance(texts[0], gpt2.BeamText)


def test_beam_search_refuses_bad_requests_in_one_sentence(model):
    with pytest.raises(ValueError, match="num_beams must be an integer >= 1, got 0"):
        model.beam_search("Hi", 5, num_beams=0)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
        model.beam_search("Hi", 0)
    with pytest.raises(ValueError, match="A stop string is empty"):
        model.beam_search("Hi", 5, stop=[""])
    with pytest.raises(ValueError, match="128 tokens; shorten the prompt"):
        model.beam_search("Hi " * 100, 40)
    with pytest.raises(
        ValueError, match="leave no room for a prompt in the model's context of 128"
    ):
        model.beam_search("Hi", 128, truncate=True)


def test_beam_search_with_truncate_sees_the_prompts_last_tokens(model):
    long_prompt = "Once upon a time " * 40
    room = model.config.n_ctx - 10
    end = model.tokenizer.decode(model.tokenizer.encode(long_prompt)[-room:])
    assert model.beam_search(long_prompt, 10, num_beams=2, truncate=True) == model.beam_search(
        end, 10, num_beams=2
    )


def test_an_empty_prompt_samples_unconditionally_from_endoftext(model):
    """As OpenAI's `generate_unconditional_samples.py` and HF's `generate()` without input ids:
    the row starts from `<|endoftext|>` alone, batched with other prompts or not."""
    from shared.beam_search import BeamParams, search

    unconditional = model.tokenizer.decode(greedy_tokens(model, [model.tokenizer.eot_id], 12))
    assert unconditional  # the tiny model does not end at once, so the test compares text
    assert model.generate("", 12, temperature=0.0) == [unconditional]
    assert model.generate(["Hello", ""], 12, temperature=0.0)[1] == unconditional
    sampled = model.generate("", 12, temperature=50.0, seed=2, num_samples=2)
    assert len(set(sampled)) == 2 and all(ENDOFTEXT not in text for text in sampled)
    (best,) = model.beam_search("", 8, num_beams=2)
    (hypotheses,) = search(model.generator, [[model.tokenizer.eot_id]], 8, BeamParams(2))
    assert best.score == hypotheses[0].score


def test_an_empty_prompt_to_a_character_model_is_refused_in_one_sentence():
    import jax

    from shared.config import GPT2Config
    from shared.params import init_params
    from shared.tokenizer import CharTokenizer

    config = GPT2Config(n_embd=16, n_head=2, n_layer=1, n_vocab=27, n_ctx=16)
    tokenizer = CharTokenizer(list(" abcdefghijklmnopqrstuvwxyz"))
    chars = gpt2.from_canonical(
        init_params(config, jax.random.PRNGKey(1)), config, tokenizer, "functional"
    )
    with pytest.raises(
        ValueError, match="Prompt 1 is empty, and this character-level model has no"
    ):
        chars.generate(["the", ""], 4)
    with pytest.raises(ValueError, match="Prompt 0 is empty, and this character-level model"):
        chars.beam_search("", 4)


def test_load_checkpoint_reads_every_weights_source_convert_reads(
    served, model, openai_checkpoint_dir, tmp_path, monkeypatch
):
    """HF and canonical files (what `gpt2 convert` writes) and OpenAI's TF folder load with
    GPT-2's tokenizer and generate what the same weights generate from the models folder."""
    import jax

    from shared.config import GPT2Config
    from shared.params import init_params
    from shared.weights import save_canonical, save_hf

    monkeypatch.setenv("GPT2_BASE_URL", served[0])
    tree = model.backend.to_canonical(model.params, model.config)
    save_hf(tree, model.config, tmp_path / "hf")
    save_canonical(tree, model.config, tmp_path / "weights.safetensors")
    expected = model.generate("Hello", 8, temperature=0.0)
    sources = [tmp_path / "hf", tmp_path / "hf" / "model.safetensors"]
    sources += [tmp_path / "weights.safetensors", openai_checkpoint_dir]
    for source in sources:
        loaded = gpt2.load_checkpoint(source, models_dir=served[1])
        assert loaded.backend.name == "functional"
        assert loaded.generate("Hello", 8, temperature=0.0) == expected, source
    haiku = gpt2.load_checkpoint(tmp_path / "hf", "haiku", models_dir=served[1])
    assert haiku.backend.name == "haiku"
    chars = GPT2Config(n_embd=16, n_head=2, n_layer=1, n_vocab=27, n_ctx=16)
    save_canonical(init_params(chars, jax.random.PRNGKey(0)), chars, tmp_path / "chars.safetensors")
    with pytest.raises(ValueError, match="has a vocabulary of 27 ids where GPT-2's tokenizer has"):
        gpt2.load_checkpoint(tmp_path / "chars.safetensors")


def test_load_checkpoint_is_part_of_the_facade():
    assert gpt2.load_checkpoint.__module__ == "shared.api"


def test_the_token_level_beam_search_is_part_of_the_facade():
    from shared import beam_search

    assert gpt2.beam_search is beam_search and "beam_search" in gpt2.__all__
