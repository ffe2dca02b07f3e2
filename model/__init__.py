"""DSF networks: the two-stage pose network, the offset representation, the Consis-CycleGAN translator, Huber."""
from model.checkpoint import CheckpointError
from model.fuse import fold_batchnorm, prepare_for_inference
from model.losses import huber
from model.offsets import decode_offsets, encode_offsets
from model.pose_net import (
    PoseNet, PoseNetOutput, StageOutput, build_pose_net, load_pose_checkpoint, stage_parameters,
)
from model.prediction import PosePrediction, StagePrediction, place_mano_prediction, predict
from model.transfer_net import (
    build_transfer_discriminator, build_transfer_generator, load_transfer_generator,
)

__all__ = [
    "PoseNet", "PoseNetOutput", "StageOutput", "build_pose_net", "stage_parameters", "load_pose_checkpoint",
    "CheckpointError",
    "encode_offsets", "decode_offsets", "huber", "fold_batchnorm", "prepare_for_inference",
    "PosePrediction", "StagePrediction", "place_mano_prediction", "predict",
    "build_transfer_generator", "build_transfer_discriminator", "load_transfer_generator",
]
