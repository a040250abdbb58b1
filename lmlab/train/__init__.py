"""lmlab.train: the one training loop, its objectives and schedules, and ``pretrain``."""

from .objectives import OBJECTIVES, CausalLM, ScheduledSampling, token_loss
from .pretrain import FAMILIES, PretrainResult, build_model, pretrain, read_run
from .schedules import SCHEDULES, lr_at
from .streams import stream_loss
from .trainer import TrainConfig, TrainResult, make_optimizer, train

__all__ = ["FAMILIES", "OBJECTIVES", "SCHEDULES", "CausalLM", "PretrainResult", "ScheduledSampling",
           "TrainConfig", "TrainResult", "build_model", "lr_at", "make_optimizer", "pretrain", "read_run",
           "stream_loss", "token_loss", "train"]
