"""Checkpoints through orbax: the last N by step, and the best by validation loss.

A checkpoint holds the backend's parameters and optimizer state, the step, and as JSON the training
and model configs, the backend's name and the data's metadata. The data stream and dropout are
keyed by (seed, step), so the step is all the PRNG state a resumed run needs. This module writes
them and restores a run's whole state; reading them (`read_meta`, the parameters for inference)
is `shared.weights.runs`, which inference uses without importing training.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from shared.distributed import runtime
from shared.errors import GPT2Error, check_writable
from shared.weights.runs import BEST, LAST, check_finite, latest_step, read_meta, restore

logger = logging.getLogger(__name__)

UNFINISHED = "*.orbax-checkpoint-tmp*"
"""The folders of saves that were still being written when their run was killed."""


class Checkpoints:
    def __init__(self, out_dir: str | Path, keep_last: int) -> None:
        root = Path(out_dir).resolve()
        # Each manager names its own multi-process barriers: both may save the same step at once.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep_last, create=True, multiprocessing_options=_barriers(LAST)
        )
        self.last = ocp.CheckpointManager(
            root / LAST, options=options, item_names=("state", "meta")
        )
        best_options = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, multiprocessing_options=_barriers(BEST)
        )
        self.best = ocp.CheckpointManager(
            root / BEST, options=best_options, item_names=("state", "meta")
        )

    def save(self, step: int, state: Any, meta: dict, *, best: bool = False) -> None:
        """Save `step`, replacing a checkpoint of that step that a resumed run left behind (a
        kill between `best/` and `checkpoints/` saving the same step leaves one in `best/`)."""
        manager = self.best if best else self.last
        manager.wait_until_finished()
        if step in manager.all_steps():
            manager.delete(step)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        manager.save(step, args=args, force=True)

    def wait(self) -> None:
        self.last.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.last.close()
        self.best.close()


def _barriers(prefix: str) -> ocp.options.MultiprocessingOptions:
    return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)


def restore_state(out_dir: str | Path, step: int, target: Any, which: str = LAST) -> Any:
    """The saved state of `step`, restored into the structure (and shardings) of `target`."""
    args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
    state = restore(out_dir, which, step, args)["state"]
    check_finite(state["params"], out_dir, which, step)
    return state


def resume_point(out_dir: str | Path) -> tuple[int, dict]:
    """(step, meta) of the checkpoint a resumed run continues from, said once on the console.

    Saves a killed run left unfinished are removed first and named in one warning: orbax would
    otherwise warn about each when it next saves that step, and they hold nothing to resume from.
    """
    if runtime.is_primary():
        discard_unfinished(out_dir)
    step, meta = read_meta(out_dir)
    logger.info("resuming from step %d (checkpoint %s)", step, Path(out_dir) / LAST / str(step))
    return step, meta


def discard_unfinished(out_dir: str | Path) -> None:
    """Remove the unfinished saves in `out_dir`'s checkpoint folders, naming them once."""
    unfinished = sorted(
        folder for which in (LAST, BEST) for folder in (Path(out_dir) / which).glob(UNFINISHED)
    )
    if not unfinished:
        return
    logger.warning(
        "Removing %s: %s that a stopped run left unfinished, not a checkpoint to resume from.",
        ", ".join(str(folder) for folder in unfinished),
        "a save" if len(unfinished) == 1 else "saves",
    )
    for folder in unfinished:
        shutil.rmtree(folder, ignore_errors=True)


def best_val_loss(out_dir: str | Path, meta: dict) -> float:
    """The lowest val loss of the run a checkpoint's `meta` belongs to (inf: none yet), so a
    resumed run replaces `best/` only with a better model: `best/` may hold a newer step than the
    checkpoint resumed from (a run killed between its two saves), whose loss counts too."""
    losses = [meta.get("best_val_loss")]
    with contextlib.suppress(GPT2Error):  # no best/ yet, or a damaged one the run will replace
        losses.append(read_meta(out_dir, BEST)[1].get("best_val_loss"))
    return min((loss for loss in losses if loss is not None), default=math.inf)


def check_new_run(out_dir: str | Path) -> None:
    """Refuse to start a run where one has saved checkpoints (their steps, `best/` and
    metrics.jsonl would mix with the new run's), or where none could be written."""
    check_writable("out_dir", Path(out_dir), folder=True)
    if any(latest_step(out_dir, which) is not None for which in (LAST, BEST)):
        raise GPT2Error(
            f"{out_dir} already holds a training run's checkpoints; continue it with --init-from "
            "resume or give another --out-dir."
        )
