"""Step 2 of MLSL: optimiser groups, the training engine, checkpoints, devices and kvstore."""
from mlsl_gluon.training.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from mlsl_gluon.training.distributed import num_workers, process_kvstore, shard_indices, worker_rank
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
    "num_workers",
    "process_kvstore",
    "read_checkpoint",
    "round_learning_rate",
    "save_checkpoint",
    "set_learning_rate",
    "shard_indices",
    "train_epoch",
    "worker_rank",
]

# --- rounds ---
# The round loop (Sec. 4.1.3), source-only training and run folders.
from mlsl_gluon.training.experiment import run_experiment  # noqa: E402
from mlsl_gluon.training.rounds import run_rounds  # noqa: E402
from mlsl_gluon.training.run_folder import RunFolder  # noqa: E402
from mlsl_gluon.training.source_only import run_source_only  # noqa: E402
from mlsl_gluon.training.stage import TrainingStopped  # noqa: E402

__all__ += ["RunFolder", "TrainingStopped", "run_experiment", "run_rounds", "run_source_only"]
