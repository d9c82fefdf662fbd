"""Step 2 of MLSL: optimiser groups, the training engine, checkpoints, devices and kvstore."""
from mlsl_gluon.training.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from mlsl_gluon.training.engine import (
    NonFiniteLossError,
    build_trainer,
    round_learning_rate,
    set_learning_rate,
    train_epoch,
)

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "build_trainer",
    "load_checkpoint",
    "read_checkpoint",
    "round_learning_rate",
    "save_checkpoint",
    "set_learning_rate",
    "train_epoch",
]

# --- rounds ---
