"""DSF networks, their losses and checkpoints.

    pose_net        the two-stage pose network (``PoseNet``; docs/method.md §7), official parameter names
    resnet          ResNet-18 blocks, stem and deconvolution heads of the pose network
    offsets         the offset representation: encode joints into maps, decode maps into joints (§6)
    prediction      from network outputs to joints in mm (``predict``), MANO prediction placement
    losses          every loss term as a named, unweighted function (§9)
    point_cloud     real-crop pre-processing of fine-tuning: hand crop, back-projection, points, segmentation
    checkpoint      safe checkpoint reading and state-dict checks with errors that name the file
    fuse            inference-only BatchNorm folding
    transfer_net    Consis-CycleGAN generator / discriminator (§12)
    cyclegan        the Consis-CycleGAN training model
    transfer_train  ``train_stage=transfer``: train the translator
    transfer_eval   evaluate translators (consistency metric, domain distance)
    supervised      the supervised upper bound of the claim benchmark (not part of DSF)
"""
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
