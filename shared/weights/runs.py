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
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from shared.errors import GPT2Error
from shared.sources import check_run_dir

if TYPE_CHECKING:
    from shared.backend import Backend
    from shared.config import GPT2Config
    from shared.jax_types import PyTree
    from shared.lora import LoraConfig

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
    check_run_dir(out_dir)
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
    restored = restore(out_dir, which, step, ocp.args.Composite(state=params))["state"]["params"]
    check_finite(restored, out_dir, which, step)
    return restored


def restore(out_dir: str | Path, which: str, step: int, args: ocp.args.Composite) -> Any:
    """`args` of checkpoint `step`, or one sentence naming a damaged checkpoint and the step
    before it, instead of orbax's or tensorstore's own errors."""
    folder = Path(out_dir).resolve() / which
    _quiet_abandoned_reads()
    with ocp.CheckpointManager(folder, item_names=("state", "meta")) as manager:
        try:
            return manager.restore(step, args=args)
        except Exception as error:  # orbax raises anything from KeyError to tensorstore's own
            raise GPT2Error(
                f"Checkpoint {folder / str(step)} is damaged or incomplete ({_reason(error)}); "
                f"{_go_back(folder, step)}."
            ) from None


def check_finite(params: Any, out_dir: str | Path, which: str, step: int) -> None:
    """Refuse restored parameters holding NaN or Inf, naming the first such one: they would
    train or generate garbage without a word. One compiled pass over them, where they are."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    finite = jax.device_get(_finite_leaves([leaf for _, leaf in leaves]))
    for (path, _), ok in zip(leaves, finite, strict=True):
        if not ok:
            folder = Path(out_dir).resolve() / which
            name = jax.tree_util.keystr(path, simple=True, separator="/")
            raise GPT2Error(
                f"Parameter {name} of checkpoint {folder / str(step)} holds NaN or Inf values; "
                f"{_go_back(folder, step)}."
            )


@jax.jit
def _finite_leaves(leaves: list[jax.Array]) -> list[jax.Array]:
    return [jnp.all(jnp.isfinite(leaf)) for leaf in leaves]


def _go_back(folder: Path, step: int) -> str:
    """What to do about a bad checkpoint `step` in `folder`: the newest one before it, if any."""
    older = [int(p.name) for p in folder.iterdir() if p.name.isdigit() and int(p.name) < step]
    if not older:
        return "no older checkpoint is left, so train again"
    return f"delete that folder to go back to step {max(older)}, the newest one before it"


_STATUS = re.compile(r"[A-Z_]{4,}: ")
_SPEC = re.compile(r" \[(tensorstore_spec|source locations)\S*=.*?(?=\]?$|\]:)\]?")
_ARRAY = re.compile(r'Error reading "([^"/]+)')


def _reason(error: BaseException) -> str:
    """Why a restore failed, in a line: TensorStore's own error where there is one (orbax wraps
    it in messages holding whole object reprs), naming the array it could not read."""
    cause: BaseException | None = error
    while cause is not None:
        text = _SPEC.sub("", " ".join(str(cause).split()))
        if _STATUS.match(text):
            array = _ARRAY.search(text)
            detail = text.rsplit(": ", 1)[-1][:160]
            return f"array {array.group(1)}: {detail}" if array else detail
        cause = cause.__cause__ or cause.__context__
    first = next(iter(str(error).strip().splitlines()), "")
    return f"{type(error).__name__}: {_REPR.sub('…', first)[:160]}"


_REPR = re.compile(r"<[^<>]*>")
"""An object's repr (`<bound method ...>`), which says nothing to a user."""


@functools.cache
def _quiet_abandoned_reads() -> None:
    """A failed restore abandons TensorStore reads whose completions call into orbax's closed
    event loop, during and after the failure; without this each prints a traceback of 'Event
    loop is closed'. Installed once, before the first restore."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = hook


def load_for_inference(path: str | Path) -> tuple[dict, Any, dict]:
    """(canonical tree, GPT2Config, meta) of a training run's newest checkpoint: `path` is its
    out_dir (or its `checkpoints/` folder), or its `best/` folder for the best by val loss.

    A LoRA run's checkpoint holds only its adapters: they are merged into the base weights it
    was fine-tuned from (`lora_base`)."""
    from shared import lora as lora_lib
    from shared.backend import get_backend
    from shared.config import GPT2Config

    out_dir, which = run_folder(path)
    step, meta = read_meta(out_dir, which)
    backend, config = get_backend(meta["backend"]), GPT2Config.from_hparams(meta["model"])
    if "lora" not in meta:
        target = jax.eval_shape(functools.partial(backend.init, config), jax.random.PRNGKey(0))
        params = restore_params(out_dir, step, target, which)
        return backend.to_canonical(params, config), config, meta
    lora = lora_lib.LoraConfig.from_dict(meta["lora"])
    target = jax.eval_shape(lambda: fresh_adapters(backend, config, lora))
    adapters = backend.adapters_to_canonical(
        restore_params(out_dir, step, target, which), config, lora
    )
    return lora_lib.merge(lora_base(out_dir, meta), adapters, lora.scale), config, meta


def fresh_adapters(
    backend: Backend, config: GPT2Config, lora: LoraConfig, key: jax.Array | None = None
) -> PyTree:
    """`backend`'s fresh LoRA adapters for `config` (`shared.lora.init_adapters`)."""
    from shared import lora as lora_lib

    key = jax.random.PRNGKey(0) if key is None else key
    return backend.adapters_from_canonical(lora_lib.init_adapters(lora, config, key), config, lora)


def lora_base(out_dir: str | Path, meta: dict) -> dict:
    """The canonical base weights a LoRA run fine-tunes, read again from the source it names and
    cropped to its context; refused in one sentence when they are not the ones it started from."""
    from shared import lora as lora_lib
    from shared import weights

    base = meta["lora"]["base"]
    tree = weights.resolve(base["source"]).tree
    tree = {**tree, "wpe": tree["wpe"][: meta["model"]["n_ctx"]]}
    if lora_lib.base_digest(tree) != base["sha256"]:
        raise GPT2Error(
            f"The LoRA adapters in {out_dir} were fine-tuned from {base['source']} with sha256 "
            f"{base['sha256'][:12]}..., but {base['source']} now holds other weights, which "
            "adapters do not fit; restore those base weights to use this run."
        )
    return tree


def run_folder(path: str | Path) -> tuple[Path, str]:
    """(out_dir, LAST or BEST) that `path` names: an out_dir, or one of its two checkpoint
    folders (a run's out_dir may itself be named `best`, hence the look inside)."""
    path = Path(path)
    if path.name in (LAST, BEST) and not (path / LAST).is_dir():
        return path.parent, path.name
    return path, LAST
