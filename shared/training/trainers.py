"""Which trainer runs a `gpt2 train`: the shared `Trainer`, for every backend, or one a backend
brings (Keras' `model.fit`).

A backend's trainer registers here by (backend, name) as a "module:attribute" string, imported on
first use as `shared.backend` imports the backends, so `shared/` imports no backend package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.training.config import TrainingConfig


class Run(Protocol):
    stop_signal: int | None
    """SIGINT or SIGTERM when one stopped the run (saved) before max_iters, else None."""

    def run(self) -> dict[str, Any]:
        """Train (or evaluate) to the end; the last logged figures, "iter" included."""
        ...


_NATIVE: dict[tuple[str, str], str] = {
    ("keras", "fit"): "keras_impl.fit:KerasFit",
}


def trainer_for(config: TrainingConfig) -> Run:
    """The trainer of `config`: the backend's own `fit` for `keras_fit`, else the shared one,
    which also evaluates a `keras_fit` run (`eval_only`): the same loss, any backend."""
    if config.keras_fit and not config.eval_only:
        module_name, attribute = _NATIVE[(config.backend, "fit")].split(":")
        return getattr(importlib.import_module(module_name), attribute)(config)
    from shared.training.trainer import Trainer

    return Trainer(config)
