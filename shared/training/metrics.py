"""Where training metrics go: one console line per interval, JSONL always, TensorBoard and Weights &
Biases when asked (W&B honours WANDB_MODE=offline).

A run continues its logs from the step it starts at: the records a killed run logged after its
last checkpoint are dropped, since the resumed run logs those iterations again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from shared.atomic import atomic_path
from shared.errors import GPT2Error, writing
from shared.training.config import TrainingConfig

# Dense bf16 peak FLOP/s by device kind, for MFU; devices not listed report no MFU.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
}


def flops_per_token(n_params: int, n_layer: int, n_embd: int, block_size: int) -> float:
    """Training FLOPs per token: 6N for the weights plus the attention scores (PaLM appendix B)."""
    return 6 * n_params + 12 * n_layer * n_embd * block_size


class MetricsLog:
    """The logs of a run starting at `start_step` (0, or the step a resume restored).

    `enabled=False` (every process of a multi-process run but the first) writes nothing.
    """

    def __init__(
        self,
        config: TrainingConfig,
        model_hparams: dict,
        start_step: int = 0,
        *,
        enabled: bool = True,
    ) -> None:
        self.path = Path(config.out_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tensorboard = self._wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _keep_records_until(self.path, start_step)
        if config.tensorboard:
            from tensorboardX import SummaryWriter

            # TensorBoard hides the earlier events from this step on.
            self._tensorboard = SummaryWriter(
                str(Path(config.out_dir) / "tensorboard"), purge_step=start_step + 1
            )
        if config.use_wandb:
            try:
                import wandb
                from wandb.errors import Error as WandbError
            except ImportError:
                raise GPT2Error("use_wandb needs wandb: pip install 'gpt2-jax[wandb]'.") from None
            try:
                self._wandb = wandb.init(
                    project=config.project_name, name=config.run_name, dir=config.out_dir,
                    config={**config.to_dict(), "model": model_hparams}, resume="allow",
                )  # fmt: skip
            except WandbError as error:
                raise GPT2Error(
                    f"W&B could not start ({error}); run `wandb login`, or set WANDB_MODE=offline "
                    "to log locally, or train without --use-wandb (--no-use-wandb on a resume)."
                ) from None

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"iter": step, **{k: v for k, v in values.items() if v is not None}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "iter"}
        if self._tensorboard is not None:
            for name, value in numbers.items():
                self._tensorboard.add_scalar(name, value, step)
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def _keep_records_until(path: Path, step: int) -> None:
    """Drop the records of `path` past `step` (atomically: a kill now leaves the file as it was)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _iteration(line) <= step]
    if len(kept) == len(lines):
        return
    with writing(path), atomic_path(path) as tmp:
        tmp.write_text("".join(kept))


def _iteration(line: str) -> float:
    """The iteration of a JSONL record; a line cut short by a kill counts as past every step."""
    try:
        return json.loads(line)["iter"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def console_line(step: int, values: dict[str, Any]) -> str:
    parts = [f"iter {step}:"]
    for name, fmt in (
        ("train_loss", ".4f"),
        ("val_loss", ".4f"),
        ("lr", ".1e"),
        ("tok/s", ",.0f"),
        ("mfu", ".1%"),
    ):
        value = values.get(name)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{name}={value:{fmt}}")
    return " ".join(parts)
