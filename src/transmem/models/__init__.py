"""Predictive networks: recurrent cells, stacked backbones and the Transferable Memory Unit."""

from transmem.models.backbone import (
    BACKBONES,
    LayerLayout,
    RecurrentPredictor,
    Rollout,
    TransferLayout,
    layout_from_json,
    layout_to_json,
    patchify,
    rollout_mask,
    unpatchify,
)
from transmem.models.cells import CELLS, CellOutput, ConvLSTMCell, SpatioTemporalLSTMCell
from transmem.models.tmu import TransferableMemory

__all__ = [
    "BACKBONES",
    "CELLS",
    "CellOutput",
    "ConvLSTMCell",
    "LayerLayout",
    "RecurrentPredictor",
    "Rollout",
    "SpatioTemporalLSTMCell",
    "TransferLayout",
    "TransferableMemory",
    "build_predictor",
    "layout_from_json",
    "layout_to_json",
    "patchify",
    "rollout_mask",
    "unpatchify",
]


def build_predictor(
    model_config, channels: int, transfer_layout: TransferLayout | None = None, frame_size: int | None = None
) -> RecurrentPredictor:
    """Build the backbone described by a :class:`transmem.config.ModelConfig`; ``frame_size``
    (``data.frame_size``) is needed by ``model.norm = "release"``, whose weights it fixes."""
    return RecurrentPredictor(
        backbone=model_config.backbone,
        channels=channels,
        hidden=list(model_config.hidden),
        kernel=model_config.kernel,
        patch=model_config.patch,
        norm=model_config.norm,
        transfer_layout=transfer_layout,
        forget_bias=model_config.forget_bias,
        frame_size=frame_size,
    )
