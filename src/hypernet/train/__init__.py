"""Training: a small loop with progress, metrics, atomic safetensors checkpoints and exact resume."""

from hypernet.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hypernet.train.loop import TrainConfig, TrainingDiverged, train

__all__ = ["CheckpointError", "TrainConfig", "TrainingDiverged", "load_checkpoint", "save_checkpoint", "train"]
