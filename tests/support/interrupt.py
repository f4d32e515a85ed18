"""`gpt2` that sends itself a signal at a chosen point of a training run's saves.

`python -m tests.support.interrupt SIGNAL WHERE STEP GPT2_ARGS...` runs the command line with
checkpoints saved synchronously (each save is complete when `Checkpoints.save` returns, so the
points below are exact) and sends SIGNAL to itself:
  - `before`: as the save of STEP starts, nothing of it written yet (the metrics of STEP are);
  - `during`: as orbax is about to rename the finished save of STEP into place, its files written
    into `STEP.orbax-checkpoint-tmp`;
  - `after`: once the save of STEP is complete and iteration STEP + 1 has been logged.
Only `checkpoints/` saves count, not `best/` ones.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from orbax.checkpoint._src.path import atomicity

from shared.cli import main
from shared.training import checkpoints, metrics

WHERE = ("before", "during", "after")


def install(signum: int, where: str, step: int) -> None:
    def fire() -> None:
        os.kill(os.getpid(), signum)

    plain_save = checkpoints.Checkpoints.save

    def save(self: Any, at: int, state: Any, meta: dict, *, best: bool = False) -> None:
        if where == "before" and at == step and not best:
            fire()
        plain_save(self, at, state, meta, best=best)
        self.wait()

    plain_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self: Any) -> None:
        final = self._final_path
        if where == "during" and (final.parent.name, final.name) == (checkpoints.LAST, str(step)):
            fire()
        await plain_finalize(self)

    plain_write = metrics.MetricsLog.write

    def write(self: Any, at: int, values: dict) -> None:
        plain_write(self, at, values)
        if where == "after" and at == step + 1:
            fire()

    checkpoints.Checkpoints.save = save
    atomicity.AtomicRenameTemporaryPath.finalize = finalize
    metrics.MetricsLog.write = write


if __name__ == "__main__":
    name, where, step, *args = sys.argv[1:]
    assert where in WHERE, where
    install(signal.Signals[name], where, int(step))
    sys.exit(main(args))
