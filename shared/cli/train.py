"""`gpt2 train`: train from scratch, fine-tune a GPT-2 size, resume exactly where a run stopped, or
only evaluate a model (`--eval-only`)."""

from __future__ import annotations

import argparse
import dataclasses


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from shared.training import config as training_config

    parser = subparsers.add_parser(
        "train",
        help="train, fine-tune or evaluate GPT-2 on prepared token files",
        description=__doc__,
    )
    parser.add_argument(
        "--config", default=None, help="a TOML or JSON file of TrainingConfig fields"
    )
    training_config.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shared.distributed import runtime
    from shared.training.config import TrainingConfig, from_arguments

    # Before anything touches JAX (reading a checkpoint to resume does).
    runtime.initialize(args.coordinator, args.num_processes, args.process_id)

    if args.init_from == "resume":
        from shared.training.trainer import resume_config

        given = {
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(TrainingConfig)
            if getattr(args, f.name) is not None and f.name != "init_from"
        }
        config = resume_config(given.get("out_dir", "out"), given)
    else:
        config = from_arguments(args, args.config)
    from shared import compilation_cache

    compilation_cache.enable()
    if config.keras_fit and not config.eval_only:
        from keras_impl.fit import KerasFit

        result = KerasFit(config).run()
    else:  # the shared trainer also evaluates for --keras-fit runs: the same loss, any backend
        from shared.training.trainer import Trainer

        result = Trainer(config).run()
    if config.eval_only:
        from shared.training.metrics import console_line

        print(console_line(result["iter"], result))
    else:
        print(f"done at iter {result['iter']}; checkpoints in {config.out_dir}")
    return 0
