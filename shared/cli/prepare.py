"""`gpt2 prepare`: text files or folders -> train.bin / val.bin (uint16 token ids) + meta.json."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare", help="tokenize text into training files", description=__doc__
    )
    parser.add_argument("inputs", nargs="+", help="text files or folders of them")
    parser.add_argument("--out-dir", "--out_dir", required=True, help="where the files go")
    parser.add_argument(
        "--tokenizer", default="gpt2", choices=["gpt2", "char"], help="GPT-2 BPE or characters"
    )
    parser.add_argument(
        "--val-fraction", "--val_fraction", type=float, default=0.1,
        help="share of the characters (at the end) held out for validation; default 0.1",
    )  # fmt: skip
    parser.add_argument(
        "--bpe-dir", default=None,
        help="folder with encoder.json and vocab.bpe (default: the downloaded 124M files)",
    )  # fmt: skip
    parser.add_argument(
        "--alphabet-from", "--alphabet_from", default=None, metavar="PATH",
        help="with --tokenizer char: the characters (and ids) of another prepared folder or "
        "training run's out_dir, to fine-tune that run's model on this text",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shared.data import prepare

    meta = prepare(
        args.inputs, args.out_dir, args.tokenizer, args.val_fraction, args.bpe_dir,
        args.alphabet_from,
    )  # fmt: skip
    print(
        f"{meta['tokenizer']} tokenizer, vocabulary {meta['vocab_size']:,}: "
        f"{meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens in {args.out_dir}"
    )
    return 0
