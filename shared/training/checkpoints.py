"""Checkpoints through orbax: the last N by step, and the best by validation loss.

A checkpoint holds the backend's parameters and optimizer state, the step, and as JSON the training
and model configs, the backend's name and the data's metadata. The data stream and dropout are
keyed by (seed, step), so the step is all the PRNG state a resumed run needs.
"""

from __future__ import annotations

import contextlib
import functools
import math
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from shared.errors import GPT2Error, check_writable

LAST, BEST = "checkpoints", "best"


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


def latest_step(out_dir: str | Path, which: str = LAST) -> int | None:
    folder = Path(out_dir).resolve() / which
    if not folder.is_dir():
        return None
    with ocp.CheckpointManager(folder, item_names=("state", "meta")) as manager:
        return manager.latest_step()


def read_meta(out_dir: str | Path, which: str = LAST) -> tuple[int, dict]:
    """(step, meta) of the newest checkpoint in `out_dir`, or a clear error when there is none."""
    step = latest_step(out_dir, which)
    if step is None:
        raise GPT2Error(
            f"No checkpoint in {Path(out_dir) / which}; train first (init_from scratch or a size) "
            "before resuming or sampling."
        )
    args = ocp.args.Composite(meta=ocp.args.JsonRestore())
    return step, _restore(out_dir, which, step, args)["meta"]


def restore_state(out_dir: str | Path, step: int, target: Any, which: str = LAST) -> Any:
    """The saved state of `step`, restored into the structure (and shardings) of `target`."""
    args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
    return _restore(out_dir, which, step, args)["state"]


def restore_params(out_dir: str | Path, step: int, target: Any, which: str = LAST) -> Any:
    """Only the parameters of `step`, restored into the structure (and shardings) of `target`:
    the optimizer state, twice their size, is not read."""
    item = {"params": target}
    restore = ocp.args.PyTreeRestore(
        item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
    )
    return _restore(out_dir, which, step, ocp.args.Composite(state=restore))["state"]["params"]


def _restore(out_dir: str | Path, which: str, step: int, args: ocp.args.Composite) -> Any:
    """`args` of checkpoint `step`, or one sentence naming a damaged checkpoint and the step
    before it, instead of orbax's or tensorstore's own errors."""
    folder = Path(out_dir).resolve() / which
    with ocp.CheckpointManager(folder, item_names=("state", "meta")) as manager:
        try:
            return manager.restore(step, args=args)
        except Exception as error:  # orbax raises anything from KeyError to tensorstore's own
            older = [s for s in manager.all_steps() if s < step]
            reason = next(iter(str(error).strip().splitlines()), "")[:200]
            fallback = (
                f"delete that folder to go back to step {max(older)}, the newest one before it"
                if older
                else "no older checkpoint is left, so train again"
            )
            raise GPT2Error(
                f"Checkpoint {folder / str(step)} is damaged or incomplete "
                f"({type(error).__name__}: {reason}); {fallback}."
            ) from None


def load_for_inference(path: str | Path) -> tuple[dict, Any, dict]:
    """(canonical tree, GPT2Config, meta) of a training run's newest checkpoint: `path` is its
    out_dir (or its `checkpoints/` folder), or its `best/` folder for the best by val loss."""
    from shared.backend import get_backend
    from shared.config import GPT2Config

    out_dir, which = run_folder(path)
    step, meta = read_meta(out_dir, which)
    backend, config = get_backend(meta["backend"]), GPT2Config.from_hparams(meta["model"])
    target = jax.eval_shape(functools.partial(backend.init, config), jax.random.PRNGKey(0))
    params = restore_params(out_dir, step, target, which)
    return backend.to_canonical(params, config), config, meta


def run_folder(path: str | Path) -> tuple[Path, str]:
    """(out_dir, LAST or BEST) that `path` names: an out_dir, or one of its two checkpoint
    folders (a run's out_dir may itself be named `best`, hence the look inside)."""
    path = Path(path)
    if path.name in (LAST, BEST) and not (path / LAST).is_dir():
        return path.parent, path.name
    return path, LAST


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
