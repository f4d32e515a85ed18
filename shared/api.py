"""The Python API: `load_model` gives a ready model whose `generate` and `stream` take and return text.

Generated text excludes the prompt and stops before the first stop string; `<|endoftext|>` always
stops a row.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from shared import weights
from shared.backend import Backend, get_backend
from shared.config import GPT2Config
from shared.generation import Generator, check_prompts
from shared.params import Params, cast
from shared.sampling import SamplingParams
from shared.stopping import StopStringCutter, tokens_containing
from shared.tokenizer import ENDOFTEXT, Tokenizer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_request(
    prompts: Sequence[str], max_new_tokens: int, num_samples: int = 1, stop: Sequence[str] = ()
) -> None:
    """Fail with one sentence on a request no model could serve, before any model is loaded.

    What depends on the model (a prompt longer than its context) is checked when it runs.
    """
    check_prompts(prompts, max_new_tokens)
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}.")
    if "" in stop:
        raise ValueError("A stop string is empty; give text to stop before, or no --stop.")


class GPT2:
    """A loaded GPT-2: tokenizer, config, backend and its parameters, and a compiled-once generator.

    `mesh` ("data=D,fsdp=F", see `shared.distributed`) generates on several devices: rows split
    over data, parameters over fsdp.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        config: GPT2Config,
        backend: Backend,
        params: Any,
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
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        num_samples: int = 1,
        truncate: bool = False,
    ) -> list[str]:
        """Continuations of every prompt, `num_samples` each (rows ordered prompt by prompt)."""
        chunk = 32 if stop else None
        texts: list[str] | None = None
        for deltas in self.stream(
            prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            stop=stop, seed=seed, num_samples=num_samples, truncate=truncate, chunk=chunk,
        ):  # fmt: skip
            texts = deltas if texts is None else [t + d for t, d in zip(texts, deltas, strict=True)]
        assert texts is not None
        return texts

    def stream(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int = 50,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        num_samples: int = 1,
        truncate: bool = False,
        chunk: int | None = 1,
    ) -> Iterator[list[str]]:
        """Yield, for every row, the text produced since the last yield (every `chunk` tokens).

        `truncate` lets prompt + new tokens exceed the context: the model always sees the last
        tokens that fit (the prompt's end, then a window sliding along the text).
        """
        sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        check_request(prompts, max_new_tokens, num_samples, stop)
        encoded = self.encode_prompts(prompts, max_new_tokens, truncate)
        rows = [ids for ids in encoded for _ in range(num_samples)]
        stops = (*stop, ENDOFTEXT)
        decoders = [self.tokenizer.stream_decoder() for _ in rows]
        cutters = [StopStringCutter(stops) for _ in rows]
        seed = int.from_bytes(os.urandom(4), "little") >> 1 if seed is None else seed
        tokens = self._ids_stream(
            rows, max_new_tokens, sampling, self._stop_tokens(stops), seed, chunk, truncate
        )
        for new, done in tokens:
            deltas = []
            for ids, finished, decoder, cutter in zip(new, done, decoders, cutters, strict=True):
                text = cutter.push(decoder.push(ids) + (decoder.flush() if finished else ""))
                deltas.append(text + (cutter.flush() if finished else ""))
            yield deltas
            if all(c.stopped or d for c, d in zip(cutters, done, strict=True)):
                return

    def _ids_stream(
        self,
        rows: list[list[int]],
        max_new_tokens: int,
        sampling: SamplingParams,
        stop_tokens: frozenset[int],
        seed: int,
        chunk: int | None,
        slide: bool,
    ) -> Iterator[tuple[list[list[int]], list[bool]]]:
        """The generator's stream; with `slide`, text longer than the context keeps going in
        segments that each see the last half-context of what came before."""
        n_ctx = self.config.n_ctx
        history = [list(r) for r in rows]
        stopped = [False] * len(rows)
        remaining, segment = max_new_tokens, 0
        while remaining > 0 and not all(stopped):
            new_tokens = remaining
            if slide:  # use the whole context at first, then half-context steps
                new_tokens = min(remaining, max(n_ctx - max(map(len, history)), n_ctx // 2))
            contexts = [h[-(n_ctx - new_tokens) :] for h in history]
            remaining -= new_tokens
            for new, done in self.generator.stream(
                contexts, new_tokens, sampling, stop_tokens=stop_tokens, seed=seed + 7919 * segment,
                chunk=chunk,
            ):  # fmt: skip
                new = [[] if s else ids for s, ids in zip(stopped, new, strict=True)]
                for row, ids in enumerate(new):
                    history[row] += ids
                    stopped[row] |= done[row] and bool(ids) and ids[-1] in stop_tokens
                yield new, [s or (d and remaining == 0) for s, d in zip(stopped, done, strict=True)]
            segment += 1

    def encode_prompts(
        self, prompts: Sequence[str], max_new_tokens: int, truncate: bool = False
    ) -> list[list[int]]:
        """Token ids of each prompt; with `truncate`, only the last tokens that fit the context
        (the text then slides along the context if it outgrows it)."""
        rows = [self.tokenizer.encode(p) for p in prompts]
        if truncate:
            keep = max(self.config.n_ctx - min(max_new_tokens, self.config.n_ctx // 2), 1)
            rows = [ids[-keep:] for ids in rows]
            self.generator.check_lengths(rows, 1)
        else:
            self.generator.check_lengths(rows, max_new_tokens)
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
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}.")
    impl = get_backend(backend)
    tree, config, folder = weights.load_pretrained(
        model_size, models_dir=models_dir, progress=progress
    )
    return from_canonical(tree, config, Tokenizer(folder, cache_ranks=True), impl, dtype, mesh=mesh)


def load_checkpoint(
    out_dir: str | Path,
    backend: str | None = None,
    *,
    models_dir: str | Path | None = None,
    dtype: str = "float32",
    mesh: str | None = None,
) -> GPT2:
    """A model trained with `gpt2 train`, from the newest checkpoint in `out_dir`, with the
    tokenizer its data was prepared with (GPT-2 BPE or the stored character alphabet)."""
    from shared.data import CharTokenizer, downloaded_gpt2_tokenizer
    from shared.training.checkpoints import load_for_inference

    tree, config, meta = load_for_inference(out_dir)
    data = meta["data"]
    if data["tokenizer"] == "char":
        tokenizer = CharTokenizer(data["alphabet"])
    else:
        tokenizer = downloaded_gpt2_tokenizer(models_dir, progress=False)
    impl = get_backend(backend or meta["backend"])
    return from_canonical(tree, config, tokenizer, impl, dtype, mesh=mesh)


def from_canonical(
    tree: Params,
    config: GPT2Config,
    tokenizer: Tokenizer,
    backend: Backend,
    dtype: str = "float32",
    *,
    mesh: str | None = None,
) -> GPT2:
    """A GPT2 from a canonical tree (e.g. one you trained or converted yourself)."""
    params = backend.from_canonical(cast(tree, DTYPES[dtype]), config)
    return GPT2(tokenizer, config, backend, params, mesh=mesh)


def main(
    prompt: str,
    n_tokens_to_generate: int = 40,
    model_size: str = "124M",
    models_dir: str | Path | None = None,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    seed: int | None = None,
    backend: str = "functional",
) -> str:
    """picoGPT's entry point: the continuation of `prompt` (greedy unless a temperature is given)."""
    model = load_model(model_size, backend, models_dir=models_dir)
    return model.generate(
        prompt, n_tokens_to_generate, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
    )[0]
