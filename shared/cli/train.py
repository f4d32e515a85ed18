"""`gpt2 train`: train from scratch, fine-tune a GPT-2 size, resume exactly where a run stopped, or
only evaluate a model (`--eval-only`). A resume takes every setting not given from its run.
SIGTERM or Ctrl-C saves and exits with 128 + the signal's number (143, 130)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.training.config import TrainingConfig


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
    parser.add_argument(
        "--dtype", dest="compute_dtype", default=None,
        help="--compute-dtype by the name `gpt2 generate` gives its weights' dtype (float32 or "
        "bfloat16; int8 weights are for inference only)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run_config(values: dict[str, Any]) -> TrainingConfig:
    """The run that `values` (the `--config` file's fields and the flags given) describe; a resume,
    asked by either, starts from its checkpoint's config with those fields changed."""
    from shared.training.config import TrainingConfig

    if values.get("init_from") != "resume":
        return TrainingConfig.from_dict(values)
    from shared.distributed import runtime
    from shared.training.trainer import changed_settings, resume_config

    config = resume_config(values.get("out_dir", TrainingConfig.out_dir), values)
    changes = changed_settings(config)
    if changes and runtime.is_primary():
        print(
            f"Resuming {config.out_dir} with settings changed from its run: {', '.join(changes)}.",
            file=sys.stderr,
        )
    return config


def run(args: argparse.Namespace) -> int:
    from shared.training.config import TrainingConfig, given_values

    values = given_values(args, args.config)
    # Refuse a bad setting, or a run to resume that is not there, before JAX loads.
    if values.get("init_from") == "resume":
        from shared.sources import check_run_dir

        check_run_dir(values.get("out_dir", TrainingConfig.out_dir))
    else:
        run_config(values)
    from shared.distributed import runtime

    # Before anything touches JAX (reading a checkpoint to resume does).
    runtime.initialize(
        values.get("coordinator"), values.get("num_processes"), values.get("process_id")
    )
    config = run_config(values)
    from shared import compilation_cache

    compilation_cache.enable()
    from shared.training.trainers import trainer_for

    trainer = trainer_for(config)
    result = trainer.run()
    if config.eval_only:
        from shared.training.metrics import console_line

        print(console_line(result["iter"], result))
    elif trainer.stop_signal is not None:
        return 128 + trainer.stop_signal  # the shell's status for a process a signal ended
    else:
        print(f"done at iter {result['iter']}; checkpoints in {config.out_dir}")
    return 0
