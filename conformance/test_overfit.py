"""Every backend trains through the shared trainer: a tiny model memorises one batch."""

from __future__ import annotations

from shared import data
from shared.training.config import TrainingConfig
from shared.training.trainer import Trainer

BLOCK = 24


def test_a_tiny_model_overfits_one_batch(backend, tmp_path, report):
    """The train split is exactly one block + 1 characters, so every batch is the same window."""
    text = ("To be, or not to be, that is the question:\n" * 2)[: 2 * (BLOCK + 1)]
    (tmp_path / "one.txt").write_text(text)
    data.prepare([tmp_path / "one.txt"], tmp_path / "data", "char", val_fraction=0.5)
    config = TrainingConfig(
        data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / "out"), backend=backend.name,
        n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, batch_size=4, max_iters=200,
        learning_rate=1e-2, min_lr=1e-2, warmup_iters=10, weight_decay=0.0, eval_interval=200,
        eval_iters=1, log_interval=200, save_interval=200,
    )  # fmt: skip
    result = Trainer(config).run()
    loss = result["train_loss"]
    report.check("overfit one batch: final train loss", backend.name, "tiny", loss, 0.01)
