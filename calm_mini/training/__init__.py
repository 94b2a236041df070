"""Training: the loop (:func:`train`, :class:`TrainConfig`), batching, checkpoints, loss targets
(soft targets, the output layer only where there is a label) and feature caching."""

from .batching import batch_indices, encode_examples, left_pad, pad, trim_padding
from .checkpoints import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .features import CachedAnswerWindow, anchor_features, anchor_stack
from .loop import lr_factor, make_optimizer, train
from .targets import AnswerWindow, TargetsOnlyLoss, labelled_loss, soft_targets

__all__ = [
    "AnswerWindow", "CachedAnswerWindow", "TargetsOnlyLoss", "TrainConfig", "anchor_features", "anchor_stack",
    "batch_indices", "encode_examples", "labelled_loss", "left_pad", "load_checkpoint", "lr_factor",
    "make_optimizer", "pad", "save_checkpoint", "soft_targets", "train", "trim_padding",
]
