"""The Python API: `load_model` gives a ready model whose `generate` and `stream` take and return text.

Generated text excludes the prompt and stops before the first stop string; `<|endoftext|>` always
stops a row.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from shared import weights
from shared.backend import Backend, get_backend
from shared.beam_search import BeamParams, search
from shared.config import GPT2Config
from shared.generation import GREEDY, Generator, check_chunk
from shared.generation_windows import sliding_stream
from shared.internals import attention_patterns, residual_stream
from shared.jax_types import PyTree
from shared.params import Params
from shared.quantization import WEIGHT_DTYPES, weights_in
from shared.request import Request
from shared.sampling import SamplingParams, sampling_from
from shared.scoring import Scorer, TextScore
from shared.stopping import StopStringCutter, tokens_containing
from shared.tokenizer import ENDOFTEXT, TextTokenizer

if TYPE_CHECKING:
    from typing import Unpack

    from shared.sampling import SamplingKeywords


@dataclasses.dataclass
class BeamText:
    """A beam search result: the continuation, its score (summed log-probability / length **
    length_penalty) and why it ended ("stop" or "length")."""

    text: str
    score: float
    finish_reason: str


class GPT2:
    """A loaded GPT-2: tokenizer, config, backend and its parameters, and a compiled-once generator.

    `mesh` ("data=D,fsdp=F", see `shared.distributed`) generates on several devices: rows split
    over data, parameters over fsdp.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        config: GPT2Config,
        backend: Backend,
        params: PyTree,
        *,
        mesh: str | None = None,
    ) -> None:
        self.tokenizer, self.config, self.backend = tokenizer, config, backend
        on_mesh = None
        if mesh is not None:
            from shared.distributed.mesh import make_mesh

            on_mesh = make_mesh(mesh)
        self.generator = Generator(backend, params, config, mesh=on_mesh)
        self.params = self.generator.params

    def generate(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int = 50,
        *,
        sampling: SamplingParams | None = None,
        stop: str | Sequence[str] = (),
        seed: int | None = None,
        num_samples: int = 1,
        truncate: bool = False,
        **keywords: Unpack[SamplingKeywords],
    ) -> list[str]:
        """Continuations of every prompt, `num_samples` each (rows ordered prompt by prompt).

        The sampling settings come as `sampling=SamplingParams(...)` or as its keywords
        (`temperature`, `top_k`, `top_p`, `repetition_penalty`, `no_repeat_ngram_size`), not both.
        """
        request = Request(
            prompts, max_new_tokens, sampling_from(sampling, keywords), stop, seed, num_samples,
            truncate,
        )  # fmt: skip
        return self.generate_request(request)

    def generate_request(self, request: Request) -> list[str]:
        """`generate` for a request already built (and so already checked)."""
        texts: list[str] | None = None
        for deltas in self.stream_request(request, chunk=32 if request.stop else None):
            texts = deltas if texts is None else [t + d for t, d in zip(texts, deltas, strict=True)]
        assert texts is not None
        return texts

    def stream(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int = 50,
        *,
        sampling: SamplingParams | None = None,
        stop: str | Sequence[str] = (),
        seed: int | None = None,
        num_samples: int = 1,
        truncate: bool = False,
        chunk: int | None = 1,
        **keywords: Unpack[SamplingKeywords],
    ) -> Iterator[list[str]]:
        """Yield, for every row, the text produced since the last yield (every `chunk` tokens).

        `truncate` lets prompt + new tokens exceed the context: the model sees the prompt's end,
        then a window sliding along the text that leaves room for the segment's new tokens, at
        least half a context of them (`shared.generation_windows`).
        """
        request = Request(
            prompts, max_new_tokens, sampling_from(sampling, keywords), stop, seed, num_samples,
            truncate,
        )  # fmt: skip
        yield from self.stream_request(request, chunk)

    def stream_request(self, request: Request, chunk: int | None = 1) -> Iterator[list[str]]:
        """`stream` for a request already built (and so already checked): the CLI builds its
        request before loading the model and serves it here."""
        check_chunk(chunk)
        encoded = self.encode_prompts(request.prompts, request.max_new_tokens, request.truncate)
        rows = [ids for ids in encoded for _ in range(request.num_samples)]
        stops = (*request.stop, ENDOFTEXT)
        decoders = [self.tokenizer.stream_decoder() for _ in rows]
        cutters = [StopStringCutter(stops) for _ in rows]
        seed = (
            int.from_bytes(os.urandom(4), "little") >> 1 if request.seed is None else request.seed
        )
        tokens = sliding_stream(
            self.generator, rows, request.max_new_tokens, request.sampling,
            stop_tokens=self._stop_tokens(stops), seed=seed, chunk=chunk, slide=request.truncate,
        )  # fmt: skip
        for new, done in tokens:
            deltas = []
            for ids, finished, decoder, cutter in zip(new, done, decoders, cutters, strict=True):
                text = cutter.push(decoder.push(ids) + (decoder.flush() if finished else ""))
                deltas.append(text + (cutter.flush() if finished else ""))
            yield deltas
            if all(c.stopped or d for c, d in zip(cutters, done, strict=True)):
                return

    def beam_search(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int = 50,
        *,
        num_beams: int = 4,
        length_penalty: float = 1.0,
        num_return: int = 1,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        stop: str | Sequence[str] = (),
        truncate: bool = False,
    ) -> list[BeamText]:
        """The `num_return` most likely continuations of every prompt that a search keeping
        `num_beams` of them finds (Hugging Face's `num_beams`, `length_penalty`,
        `num_return_sequences`; see `shared.beam_search`), best first, rows ordered prompt by
        prompt. Deterministic, so it takes no temperature or seed. A hypothesis ends at
        `<|endoftext|>`, a token holding a stop string, or after max_new_tokens; its text stops
        before the first stop string. `truncate` keeps each prompt's last tokens that leave
        room for max_new_tokens in the context (the search does not slide along the text).
        """
        beam = BeamParams(
            num_beams, length_penalty, num_return, repetition_penalty, no_repeat_ngram_size
        )
        return self.beam_search_request(
            Request(prompts, max_new_tokens, stop=stop, truncate=truncate), beam
        )

    def beam_search_request(self, request: Request, beam: BeamParams) -> list[BeamText]:
        """`beam_search` for a request and beam settings already built (and so already checked);
        the request's sampling settings and seed play no part."""
        max_new_tokens = request.max_new_tokens
        encoded = self.prompt_ids(request.prompts)
        if request.truncate:
            room = self.config.n_ctx - max_new_tokens
            if room < 1:
                raise ValueError(
                    f"{max_new_tokens} new tokens leave no room for a prompt in the model's "
                    f"context of {self.config.n_ctx} tokens; beam search does not slide along "
                    "the text, so ask for fewer."
                )
            encoded = [ids[-room:] for ids in encoded]
        stops = (*request.stop, ENDOFTEXT)
        results = []
        for hypotheses in search(
            self.generator, encoded, max_new_tokens, beam,
            stop_tokens=self._stop_tokens(stops),
        ):  # fmt: skip
            for hypothesis in hypotheses:
                ended = [] if hypothesis.stop_token is None else [hypothesis.stop_token]
                ids = hypothesis.tokens + ended
                cutter = StopStringCutter(stops)
                text = cutter.push(self.tokenizer.decode(ids)) + cutter.flush()
                results.append(BeamText(text, hypothesis.score, hypothesis.finish_reason))
        return results

    def score(
        self,
        text: str,
        *,
        context: str = "",
        stride: int | None = None,
        batch_size: int = 1,
        progress: bool = False,
    ) -> TextScore:
        """How likely the model finds `text`: each token's log-probability given the text before
        it, read in context-long windows `stride` tokens apart (default half the context; see
        `shared.scoring`), with the mean NLL, perplexity and bits per byte they give.

        The first token is predicted from `<|endoftext|>`, GPT-2's document boundary, so every
        token counts; a character-level model has no such token and scores from the second.
        `context` comes before `text` and conditions its score without being scored: log p(text |
        context), for ranking answers or cloze tests. The two are tokenized apart, so a space
        between them belongs at the start of `text` (" Paris", not "Paris").
        """
        if not isinstance(text, str) or not text:
            raise ValueError(f"Give a non-empty text to score, got {text!r}.")
        if not isinstance(context, str):
            raise ValueError(f"context must be text (or empty), got {context!r}.")
        stride = self.config.n_ctx // 2 if stride is None else stride
        boundary = self.tokenizer.eot_id
        text_ids = self.tokenizer.encode(text)
        ids = [*([boundary] if boundary is not None else []), *self.tokenizer.encode(context)]
        ids += text_ids
        log_probs = self.scorer.log_probs(ids, stride, batch_size=batch_size, progress=progress)
        scored = min(len(text_ids), len(log_probs))  # all but a first token without context
        token_ids = np.asarray(ids[len(ids) - scored :])
        return TextScore(
            token_ids, log_probs[-scored:], len(self.tokenizer.decode_bytes(token_ids)), stride
        )

    def hidden_states(self, text: str) -> np.ndarray:
        """The residual stream over `text`'s tokens, float32 [n_layer + 1, n_tokens, n_embd], as
        Hugging Face's `output_hidden_states`: entry 0 is the token plus position embeddings,
        entry i the input to block i, the last the final LayerNorm's output (the logits are its
        product with `wte`). For probes and interpretability. The tokens are
        `tokenizer.encode(text)`, nothing prepended; at most the context's worth.
        """
        if not isinstance(text, str) or not text:
            raise ValueError(f"Give a non-empty text to read the hidden states of, got {text!r}.")
        ids = self.tokenizer.encode(text)
        return residual_stream(self.backend, self.params, self.config, ids)

    def attentions(self, text: str) -> np.ndarray:
        """Every block's attention probabilities over `text`'s tokens, float32 [n_layer, n_head,
        n_tokens, n_tokens], as Hugging Face's `output_attentions`: entry [l, h, i, j] is how much
        token i attends to token j (0 for j > i) in head h of block l; each row sums to 1. The
        tokens are `tokenizer.encode(text)`, nothing prepended; at most the context's worth.
        """
        if not isinstance(text, str) or not text:
            raise ValueError(f"Give a non-empty text to read the attentions of, got {text!r}.")
        ids = self.tokenizer.encode(text)
        return attention_patterns(self.backend, self.params, self.config, ids)

    @functools.cached_property
    def scorer(self) -> Scorer:
        return Scorer(self.backend, self.params, self.config)

    def encode_prompts(
        self, prompts: Sequence[str], max_new_tokens: int, truncate: bool = False
    ) -> list[list[int]]:
        """Token ids of each prompt; with `truncate`, only the last tokens that fit the context
        (the text then slides along the context if it outgrows it)."""
        rows = self.prompt_ids(prompts)
        if truncate:
            keep = max(self.config.n_ctx - min(max_new_tokens, self.config.n_ctx // 2), 1)
            rows = [ids[-keep:] for ids in rows]
            self.generator.check_lengths(rows, 1)
        else:
            self.generator.check_lengths(rows, max_new_tokens)
        return rows

    def prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt. An empty prompt is `<|endoftext|>` alone, GPT-2's document
        boundary, so its row is an unconditional sample, as OpenAI's
        `generate_unconditional_samples.py` and Hugging Face's `generate()` without input ids
        start one."""
        boundary = self.tokenizer.eot_id
        rows = []
        for i, prompt in enumerate(prompts):
            if not prompt and boundary is None:
                raise ValueError(
                    f"Prompt {i} is empty, and this character-level model has no <|endoftext|> "
                    "token to start an unconditional sample from; give at least one character."
                )
            rows.append(self.tokenizer.encode(prompt) if prompt else [boundary])
        return rows

    @functools.lru_cache(maxsize=16)  # noqa: B019 - one model lives as long as its cache
    def _stop_tokens(self, stops: tuple[str, ...]) -> frozenset[int]:
        return frozenset(tokens_containing(self.tokenizer, stops))


def load_model(
    model_size: str = "124M",
    backend: str = "functional",
    *,
    models_dir: str | Path | None = None,
    dtype: str = "float32",
    progress: bool = True,
    mesh: str | None = None,
) -> GPT2:
    """Download (once) and load OpenAI's GPT-2 of `model_size` into `backend` (on `mesh`)."""
    _check_options(dtype, mesh)
    impl = get_backend(backend)
    source = weights.pretrained(model_size, models_dir=models_dir, progress=progress)
    return from_canonical(source.tree, source.config, source.tokenizer, impl, dtype, mesh=mesh)


def load_checkpoint(
    path: str | Path,
    backend: str | None = None,
    *,
    models_dir: str | Path | None = None,
    dtype: str = "float32",
    mesh: str | None = None,
) -> GPT2:
    """A model from weights on disk. A `gpt2 train` out_dir gives its newest checkpoint
    (`out_dir/best` the best by val loss) with the tokenizer its data was prepared with (GPT-2 BPE
    or the stored character alphabet), on the backend it was trained on unless `backend` is
    given. Any other source `gpt2 convert` reads (an HF folder or `model.safetensors`, a
    canonical `.safetensors`, an OpenAI TF folder, a size name) gives those weights with GPT-2's
    tokenizer (`shared.weights.resolve`)."""
    _check_options(dtype, mesh)
    source = weights.resolve(path, models_dir=models_dir)
    impl = get_backend(backend or source.backend or "functional")
    return from_canonical(source.tree, source.config, source.tokenizer, impl, dtype, mesh=mesh)


def _check_options(dtype: str, mesh: str | None) -> None:
    """Refuse a bad dtype or mesh before minutes of downloading and loading."""
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; allowed: {', '.join(WEIGHT_DTYPES)}.")
    if mesh is not None and dtype == "int8":
        raise ValueError(
            f"dtype int8 runs on one device, not on mesh {mesh!r}; drop the mesh or load the "
            "weights in float32 or bfloat16."
        )
    if mesh is not None:
        from shared.distributed.mesh import parse

        parse(mesh, jax.device_count())


def from_canonical(
    tree: Params,
    config: GPT2Config,
    tokenizer: TextTokenizer,
    backend: Backend | str,
    dtype: str = "float32",
    *,
    mesh: str | None = None,
) -> GPT2:
    """A GPT2 from a canonical tree (e.g. one you trained or converted yourself); `backend` is a
    Backend or its name. `dtype` "int8" holds the projections and the tied embedding as int8
    with one float32 scale per output channel (`shared.quantization`), for inference."""
    _check_options(dtype, mesh)
    backend = get_backend(backend) if isinstance(backend, str) else backend
    params = backend.from_canonical(weights_in(tree, dtype), config)
    return GPT2(tokenizer, config, backend, params, mesh=mesh)


def main(
    prompt: str,
    n_tokens_to_generate: int = 40,
    model_size: str = "124M",
    models_dir: str | Path | None = None,
    *,
    sampling: SamplingParams | None = None,
    seed: int | None = None,
    backend: str = "functional",
    **keywords: Unpack[SamplingKeywords],
) -> str:
    """picoGPT's entry point: the continuation of `prompt` (greedy unless a temperature is given,
    as keywords or `sampling`, as in `GPT2.generate`)."""
    request = Request(
        prompt, n_tokens_to_generate, sampling_from(sampling, keywords, GREEDY), seed=seed
    )
    model = load_model(model_size, backend, models_dir=models_dir)
    return model.generate_request(request)[0]
