"""A `gpt2 train` run's checkpoints, read: the newest (or best) step, its metadata, and its
parameters as the canonical tree for inference.

A run's out_dir holds orbax checkpoints in `checkpoints/` (the last N by step) and `best/` (the
best by validation loss); each holds the backend's parameters and optimizer state, the step, and
as JSON the training and model configs, the backend's name and the data's metadata. Reading them
is here, beside the other weights formats, so inference never imports the training package;
`shared.training.checkpoints` writes them and resumes runs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from shared.errors import GPT2Error

LAST, BEST = "checkpoints", "best"


def latest_step(out_dir: str | Path, which: str = LAST) -> int | None:
    """The newest step saved in `out_dir`'s `which` folder, None when there is none."""
    folder = Path(out_dir).resolve() / which
    if not folder.is_dir():
        return None
    with ocp.CheckpointManager(folder, item_names=("state", "meta")) as manager:
        return manager.latest_step()


def read_meta(out_dir: str | Path, which: str = LAST) -> tuple[int, dict]:
    """(step, meta) of the newest checkpoint in `out_dir`, or a clear error when there is none."""
    if not Path(out_dir).is_dir():
        raise GPT2Error(
            f"{out_dir} does not exist, so it holds no training run to resume or sample; give the "
            "out_dir of a `gpt2 train` run that has saved a checkpoint."
        )
    step = latest_step(out_dir, which)
    if step is None:
        raise GPT2Error(
            f"No checkpoint in {Path(out_dir) / which}; train first (init_from scratch or a size) "
            "before resuming or sampling."
        )
    args = ocp.args.Composite(meta=ocp.args.JsonRestore())
    return step, restore(out_dir, which, step, args)["meta"]


def restore_params(out_dir: str | Path, step: int, target: Any, which: str = LAST) -> Any:
    """Only the parameters of `step`, restored into the structure (and shardings) of `target`:
    the optimizer state, twice their size, is not read."""
    item = {"params": target}
    params = ocp.args.PyTreeRestore(
        item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
    )
    return restore(out_dir, which, step, ocp.args.Composite(state=params))["state"]["params"]


def restore(out_dir: str | Path, which: str, step: int, args: ocp.args.Composite) -> Any:
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
