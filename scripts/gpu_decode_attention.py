"""GPU experiment: decode with the Pallas decode-attention kernel against the default attention.

Times the library's Generator (124M, random weights, 32-token prompt, 256 new tokens, greedy) at
batch 1, where a step reads mostly weights, and batch 64, where it reads mostly the KV cache, with
`shared.attention.pallas_decode_attention` off and on (`shared.decode_attention`'s kernel, through
Pallas' Triton backend). Rounds alternate the two; the greedy tokens of both are compared first.
`scripts/gpu-bench experiments` runs it; `python scripts/gpu_decode_attention.py haiku keras`
picks other backends.
"""

from __future__ import annotations

import sys

import jax

from shared.attention import pallas_decode_attention
from shared.benchmarks.generation import decode_tokens_per_s, random_model, random_prompts
from shared.generation import GREEDY, Generator

SIZE, PROMPT_LEN, NEW_TOKENS, BATCHES, ROUNDS = "124M", 32, 256, (1, 64), 2
ATTENTIONS = {"attend (now)": False, "Pallas kernel": True}


def main() -> None:
    print(jax.devices()[0].device_kind, flush=True)
    for name in sys.argv[1:] or ["functional"]:
        generator = Generator(*random_model(SIZE, name))
        prompts = random_prompts(BATCHES[-1], PROMPT_LEN, generator.config)
        tokens = {}
        for label, enabled in ATTENTIONS.items():
            with pallas_decode_attention(enabled):
                tokens[label] = [c.tokens for c in generator.generate(prompts, NEW_TOKENS, GREEDY)]
        rows = zip(*tokens.values(), strict=True)
        pairs = [pair for row in rows for pair in zip(*row, strict=True)]
        same = sum(a == b for a, b in pairs)
        print(f"{name}: greedy tokens equal with and without the kernel: {same}/{len(pairs)}",
              flush=True)  # fmt: skip
        for batch in BATCHES:
            for round_ in range(ROUNDS):
                for label, enabled in ATTENTIONS.items():
                    with pallas_decode_attention(enabled):
                        rate, compile_s = decode_tokens_per_s(
                            generator, batch, PROMPT_LEN, NEW_TOKENS, GREEDY
                        )
                    print(f"{name} batch {batch} round {round_ + 1} {label:14s} "
                          f"{rate:9.1f} tokens/s (first run {compile_s:.1f} s)",
                          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
