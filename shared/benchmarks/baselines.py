"""Other libraries' GPT-2, timed in the same process as ours: HF transformers on PyTorch (decode
with its cache, and a nanoGPT-style training step) and keras-hub's GPT2CausalLM on JAX.

Each baseline needs its own environment (`nox -s bench-oracle` makes them, one after the other), so
this module imports torch, transformers and keras_hub only inside the functions that use them.
Run as `python -m shared.benchmarks.baselines {hf,keras-hub} --json PATH`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from shared import beam_search, host_memory
from shared.benchmarks import generation, machine, results, training
from shared.benchmarks.results import Report, Result
from shared.benchmarks.timing import best_seconds
from shared.cli.bench import comma_integers
from shared.config import GPT2Config, config_for_size
from shared.generation import Generator

# The character-level Tiny Shakespeare recipe the training docs use (nanoGPT's CPU example).
CHAR_RECIPE = GPT2Config(n_embd=128, n_head=4, n_layer=4, n_vocab=65, n_ctx=64)
CHAR_BATCH = 12


def ours_decode(size: str, batch: int, prompt_len: int, new_tokens: int) -> float:
    backend, params, config = generation.random_model(size, "functional")
    tokens_per_s, _ = generation.decode_tokens_per_s(
        Generator(backend, params, config), batch, prompt_len, new_tokens
    )
    return tokens_per_s


def ours_beam_search(size: str, num_beams: int, prompt_len: int, new_tokens: int) -> float:
    """Search steps/s of a one-prompt beam search that never stops early."""
    backend, params, config = generation.random_model(size, "functional")
    generator = Generator(backend, params, config)
    prompts = generation.random_prompts(1, prompt_len, config)
    beams = beam_search.BeamParams(num_beams)

    def run() -> None:
        [[best]] = beam_search.search(generator, prompts, new_tokens, beams)
        assert len(best.tokens) == new_tokens

    return new_tokens / best_seconds(run, repeats=2)


def hf_decode(size: str, batch: int, prompt_len: int, new_tokens: int, num_beams: int = 1) -> float:
    """HF transformers `generate` (greedy, or beam search with `num_beams`; KV cache) on
    PyTorch's CPU build, random weights: generated tokens/s over all rows (beam search: search
    steps/s)."""
    # only the baseline's own environment has these (`nox -s bench-oracle`)
    import torch  # pyright: ignore[reportMissingImports]
    import transformers  # pyright: ignore[reportMissingImports]

    torch.set_num_threads(os.cpu_count() or 1)
    shape = config_for_size(size)
    config = transformers.GPT2Config(
        n_embd=shape.n_embd, n_head=shape.n_head, n_layer=shape.n_layer
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    prompts = torch.tensor(generation.random_prompts(batch, prompt_len, shape))

    def run() -> None:
        with torch.inference_mode():
            model.generate(
                prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0,
                num_beams=num_beams,
            )  # fmt: skip

    return batch * new_tokens / best_seconds(run, repeats=2)


def pytorch_train_tokens_per_s(steps: int = 20) -> float:
    """A nanoGPT-style PyTorch step on the char recipe: GPT-2 blocks (HF's), AdamW, clipping."""
    # only the baseline's own environment has these (`nox -s bench-oracle`)
    import torch  # pyright: ignore[reportMissingImports]
    import transformers  # pyright: ignore[reportMissingImports]

    torch.set_num_threads(os.cpu_count() or 1)
    config = transformers.GPT2Config(
        vocab_size=CHAR_RECIPE.n_vocab, n_positions=CHAR_RECIPE.n_ctx,
        n_embd=CHAR_RECIPE.n_embd, n_head=CHAR_RECIPE.n_head, n_layer=CHAR_RECIPE.n_layer,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    rng = np.random.default_rng(0)
    batch = torch.tensor(rng.integers(0, CHAR_RECIPE.n_vocab, (CHAR_BATCH, CHAR_RECIPE.n_ctx + 1)))

    def step() -> None:
        loss = model(batch[:, :-1], labels=batch[:, :-1]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(3):  # the allocator and AdamW's state settle over the first steps
        step()
    # Best of `steps` single steps, the statistic `ours_train_tokens_per_s` reports too.
    return CHAR_BATCH * CHAR_RECIPE.n_ctx / best_seconds(step, repeats=steps)


def ours_train_tokens_per_s(steps: int = 20) -> float:
    measured = training.train_step_throughput(
        "functional", CHAR_RECIPE, CHAR_BATCH, CHAR_RECIPE.n_ctx, "float32", steps=steps
    )
    return measured["tokens_per_s"]


def keras_hub_decode(size: str, batch: int, prompt_len: int, new_tokens: int) -> float:
    """keras-hub GPT2CausalLM on the JAX backend: random GPT2Backbone, no preprocessor, greedy."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras_hub  # pyright: ignore[reportMissingImports]  # the baselines' own environment

    shape = config_for_size(size)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=shape.n_vocab, num_layers=shape.n_layer, num_heads=shape.n_head,
        hidden_dim=shape.n_embd, intermediate_dim=4 * shape.n_embd,
        max_sequence_length=shape.n_ctx,
    )  # fmt: skip
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(sampler="greedy")
    total = prompt_len + new_tokens
    token_ids = np.zeros((batch, total), np.int32)
    token_ids[:, :prompt_len] = generation.random_prompts(batch, prompt_len, shape)
    padding_mask = np.zeros((batch, total), bool)
    padding_mask[:, :prompt_len] = True
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}

    def run() -> None:
        model.generate(inputs, stop_token_ids=None)

    return batch * new_tokens / best_seconds(run, repeats=2)


def compare(
    baseline: str,
    size: str = "124M",
    prompt_len: int = 32,
    new_tokens: int = 256,
    batch_sizes: tuple[int, ...] = (1,),
) -> Report:
    """The baseline and ours, greedy decode at each batch size (and for `hf` a 4-beam search and
    a training step), as ratios."""
    report = Report(
        f"GPT-2 {size} vs {baseline}, random weights, batch {', '.join(map(str, batch_sizes))}, "
        f"prompt {prompt_len}, {new_tokens} new tokens, greedy",
        machine.description(),
    )
    theirs_decode = {"hf": hf_decode, "keras-hub": keras_hub_decode}[baseline]
    for batch in batch_sizes:
        theirs = theirs_decode(size, batch, prompt_len, new_tokens)
        ours = ours_decode(size, batch, prompt_len, new_tokens)
        label = f"decode batch {batch}, greedy"
        report.add(
            Result("generation", label, theirs, "tokens/s", baseline),
            Result("generation", label, ours, "tokens/s", "functional"),
            Result("ratios", f"ours / {baseline}, batch-{batch} greedy decode", ours / theirs, "x"),
        )
    if baseline == "hf":
        beams, label = 4, "beam search, 4 beams, batch 1"
        theirs = hf_decode(size, 1, prompt_len, new_tokens, num_beams=beams)
        ours = ours_beam_search(size, beams, prompt_len, new_tokens)
        report.add(
            Result("generation", label, theirs, "steps/s", baseline),
            Result("generation", label, ours, "steps/s", "functional"),
            Result("ratios", f"ours / {baseline}, 4-beam search", ours / theirs, "x"),
        )
        host_memory.reuse_freed_memory()  # both steps under a training process's malloc settings
        theirs = pytorch_train_tokens_per_s()
        ours = ours_train_tokens_per_s()
        label = "train step, char recipe (4x128, block 64, batch 12)"
        report.add(
            Result(
                "training", label, theirs, "tokens/s", "PyTorch (HF GPT-2 blocks, nanoGPT step)"
            ),
            Result("training", label, ours, "tokens/s", "functional"),
            Result("ratios", "ours / PyTorch, char-recipe train step", ours / theirs, "x"),
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("baseline", choices=["hf", "keras-hub"])
    parser.add_argument("--model-size", default="124M")
    parser.add_argument(
        "--batch-sizes", type=comma_integers, default=(1,), help="decode batches, e.g. 1,8"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    report = compare(args.baseline, args.model_size, batch_sizes=args.batch_sizes)
    print(results.markdown(report))
    results.write(report, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
