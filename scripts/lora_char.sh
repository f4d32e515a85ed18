#!/usr/bin/env bash
# LoRA against full fine-tuning on the character-level Tiny Shakespeare recipe: a base trained
# (docs/training.md's recipe, 2000 iterations) on the first half of the text, then fine-tuned on
# the second half both ways, from the same weights, on the same batches. Prints the validation
# loss on the second half before and after each fine-tuning; docs/benchmarks.md has the figures.
#
# Usage: scripts/lora_char.sh [OUT_DIR]   (default /tmp/lora-char; a few minutes on two cores)
# Environment: GPT2 (the command, default `gpt2`), BACKEND (default functional),
#   FT_ITERS (fine-tuning iterations, default 500), LORA_RANK (default 8),
#   LORA_TARGETS (default all four projections: c_attn,attn_c_proj,c_fc,mlp_c_proj).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/lora-char}
gpt2=${GPT2:-gpt2}
backend=${BACKEND:-functional}
ft_iters=${FT_ITERS:-500}
rank=${LORA_RANK:-8}
targets=${LORA_TARGETS:-c_attn,attn_c_proj,c_fc,mlp_c_proj}
text=tests/data/tinyshakespeare/input.txt
mkdir -p "$out"

# The two halves, cut at a line break; both read with the whole text's 65 characters.
half=$(($(wc -l <"$text") / 2))
head -n "$half" "$text" >"$out/first.txt"
tail -n "+$((half + 1))" "$text" >"$out/second.txt"
$gpt2 prepare "$text" --out-dir "$out/all" --tokenizer char
$gpt2 prepare "$out/first.txt" --out-dir "$out/base-data" --tokenizer char --alphabet-from "$out/all"
$gpt2 prepare "$out/second.txt" --out-dir "$out/ft-data" --tokenizer char --alphabet-from "$out/all"

recipe=(--n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 --dropout 0.0
  --beta2 0.99 --eval-iters 200 --backend "$backend")
if [ ! -d "$out/base/best" ]; then
  $gpt2 train --data-dir "$out/base-data" --out-dir "$out/base" --init-from scratch "${recipe[@]}" \
    --learning-rate 1e-3 --min-lr 1e-4 --max-iters 2000 --warmup-iters 100 \
    --eval-interval 250 --log-interval 250
fi

fine_tune=(--data-dir "$out/ft-data" --init-from "$out/base/best" "${recipe[@]}"
  --max-iters "$ft_iters" --warmup-iters 50 --eval-interval "$ft_iters" --log-interval 100)
echo "base weights on the second half:"
$gpt2 train "${fine_tune[@]}" --eval-only
rm -rf "$out/full" "$out/lora"
$gpt2 train "${fine_tune[@]}" --out-dir "$out/full" --learning-rate 3e-4 --min-lr 3e-5
$gpt2 train "${fine_tune[@]}" --out-dir "$out/lora" --learning-rate 1e-3 --min-lr 1e-4 \
  --lora-rank "$rank" --lora-alpha $((2 * rank)) --lora-targets "$targets"
for run in full lora; do
  echo "$run fine-tuning, its last step:"
  $gpt2 train --out-dir "$out/$run" --init-from resume --eval-only
done
