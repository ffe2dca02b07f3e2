"""The single configuration of DSF: every setting with its paper / official-code default.

Override any field on the command line: ``python train_render.py key=value [--key=value] [--key value] ...``.
Values are parsed and type-checked against the defaults; an unknown key or a wrong type stops with one message
that names the key and lists close valid ones. Importing this module has no side effects.

Only ``train_render.py`` (and small CLIs) read a :class:`Config`; library code receives plain arguments.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from dataloader.crop import CROP_SAMPLINGS
from dataloader.nyu import CENTER_TYPES
from dataloader.synthetic import BUILTIN_ROTATIONS, VIEW_AUGS
from render.rasterizer import RENDERERS
from util.camera import CAMERAS, CENTER_DEPTH_RANGES, CUBE_SIZES, SYNTH_DEPTH_RANGES

PHASES = ("train", "test", "annotate")
TRAIN_STAGES = ("pretrain", "finetune", "transfer", "supervised")  # supervised: benchmark upper bound only
DATASETS = ("nyu", "icvl", "msra")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("step", "none")
TRANSFERS = ("consis", "none")


class ConfigError(ValueError):
    """A bad key or value in the configuration (the message names the key and what was expected)."""


@dataclass
class Config:
    # --- mode --------------------------------------------------------------------------------------------
    phase: str = "train"  # train | test
    train_stage: str = "pretrain"  # pretrain | finetune (case-insensitive; official code: 'Pretrain' / other)
    stage_num: int = 2  # 2 = two-stage network with the rendered "remap"; 1 = single-stage ablation
    dataset: str = "nyu"  # nyu | icvl | msra
    demo: bool = False  # run on generated stand-in assets (procedural MANO model + NYU-format tree)

    # --- paths (relative to the working directory) -------------------------------------------------------
    data_root: str = "data/nyu"  # NYU tree: <data_root>/{train,test}/...
    mano_path: str = "MANO/MANO_RIGHT.pkl"  # the licensed MANO model (or a chumpy-free .npz of it)
    hands_para_dir: str = ""  # dir with the official hands-{glb,pose,shape,scale,trans}.txt; "" = look for them
    #                           in <data_root>/../hands20/posePara_lm_collosion (then <data_root>/...), else use
    #                           the built-in substitute pose source (README "Synthetic pose source")
    transfer: str = "consis"  # consis = frozen Consis-CycleGAN G_A on synthetic input; none = identity
    transfer_net_path: str = ""  # folder holding latest_net_G_A.pth (required when transfer=consis in finetune)
    finetune_dir: str = ""  # pre-training checkpoint to start fine-tuning from
    fits_dir: str = ""  # released-format NYU MANO fits (train_stage=supervised, a benchmark bound, not DSF);
    #                    "" = <data_root>/posePara_lm_collosion
    load_model: str = ""  # checkpoint evaluated in phase=test
    resume: str = ""  # checkpoint to resume (model, optimiser, scheduler, epoch, step); "auto" = run's latest
    output_dir: str = "checkpoint"  # runs are written to <output_dir>/<dataset>/<run_name>
    run_name: str = ""  # "" = derived from phase/stage/width
    demo_dir: str = "data/demo"  # where the demo's stand-in assets are generated on first use
    demo_train_frames: int = 256  # size of the generated stand-in NYU tree (per split, per view)
    demo_test_frames: int = 64

    # --- data and crop -----------------------------------------------------------------------------------
    view: int = 1  # Kinect view (1 = front; the benchmark view)
    test_subject: int = 0  # MSRA leave-one-subject-out: held-out subject P0..P8 (official key test_id)
    icvl_mirror_width: float = 320.0  # ICVL mirror u' = W - u (official 320; 319 aligns labels with the pixels)
    camera_intrinsics: tuple = ()  # (fx, fy, cx, cy) override; empty = the dataset's sensor (util/camera.py)
    input_size: int = 128  # crop size in pixels
    cube_size: float = 0.0  # crop cube edge in mm; 0 = dataset default (NYU 250)
    test_cube_split: int = 2440  # NYU test frames >= this use cube * test_cube_scale ...
    test_cube_scale: float = 5.0 / 6.0  # ... only when the test set has the standard 8252 frames
    crop_sampling: str = "resize"  # resize: the official cv2.resize nearest crop (bit-exact with the official
    #                                loader); warp: crop pixel = frame pixel nearest M^-1(j,i), aligned with the
    #                                rendered crops (docs/DEVIATIONS.md "Data and crops")
    center_type: str = "refine"  # refine (refined centre files) | joint_mean (uses labels: not self-supervised)
    augment: bool = True  # training augmentation of real crops: one of rot / com / sc / none
    aug_rotation: float = 180.0  # max in-plane rotation in degrees
    aug_shift: float = 10.0  # max centre shift in mm
    aug_scale: float = 0.2  # max relative cube scale change
    num_workers: int = 2
    skip_bad: bool = False  # skip missing / corrupt frames with a warning instead of stopping
    center_depth_range: tuple = ()  # (min, max) mm a centre z may take; empty = dataset default (util/camera.py)

    # --- synthetic data (pre-training and the synthetic half of fine-tuning) -----------------------------
    synth_depth: tuple = ()  # (min, max) hand distance in mm; empty = dataset default (NYU 500-1200)
    synth_shape_noise: float = 3.0  # std of the beta noise added to file shapes
    synth_center_jitter: float = 20.0  # crop centre jitter, mm per axis
    synth_cube_jitter: float = 0.2  # cube scale factor U(1 - j, 1 + j)
    pretrain_view_aug: str = "none"  # view rotation of synthetic hands in pre-training (official: none)
    finetune_view_aug: str = "octant"  # ... in fine-tuning: octant (official U(0, 2pi)^3) | so3 | none
    occlusion: bool = True  # occlusion augmentation of synthetic crops (mask spheres at joints)
    occlusion_joints: tuple = (3, 9)  # min, max number of masked joints per batch
    occlusion_offset: float = 0.15  # centre offset, norm-uvd units
    occlusion_radius: float = 0.3  # max sphere radius, norm-uvd units
    synth_pose_noise: float = 0.2  # built-in pose source: std of noise on PCA coefficients (in component units)
    synth_builtin_poses: int = 20000  # built-in pose source: number of parameter vectors
    # built-in source's global rotation: so3 (uniform) | cone (camera-facing) | upright (fingers up, palm or back
    # to the camera: natural capture views)
    synth_builtin_rotation: str = "so3"
    synth_builtin_cone_deg: float = 90.0  # cone: max angle between palm normal and the direction to the camera

    # --- network -----------------------------------------------------------------------------------------
    width: float = 1.0  # channel-width multiplier (1.0 = official network, exact parameter names / counts)
    mano_scale_bias_init: float = 0.0  # 0 = official init (MANO scale output ~0: collapsed hand); > 0 sets the
    #   scale bias of both MANO heads at construction (short CPU runs; docs/DEVIATIONS.md "Network")
    joint_num: int = 21
    feature_size: int = 64  # resolution of the pixel-wise maps
    offset_kernel: float = 0.8  # K, kernel radius of the offset representation (norm-uvd units)
    decode_temperature: float = 30.0
    renderer: str = "torch"  # torch | pytorch3d (optional backend, own venv)

    # --- losses (docs/method.md §9; hidden constants of the official code exposed) ------------------------
    huber_delta: float = 0.01
    deconv_weight: float = 1.0  # pixel-wise map loss
    coord_weight: float = 100.0  # joint losses (PWE decoded joints, MANO joints / vertices, inter-branch)
    model_weight: float = 1.0  # data-to-model ICP (d2m)
    m2d_scale: float = 0.1  # extra factor on the rendered-depth loss: m2d weight = m2d_scale * model_weight
    partICP_weight: float = 1.0  # part-aware ICP (pd2m)
    M2P_weight: float = 1.0  # model-to-pixel inter-branch loss on reliable joints
    coll_weight: float = 1.0  # sphere collision penalty
    shape_prior_weight: float = 1000.0  # pre-training mean(beta^2) (official: coord_weight * 10)
    neg_scale_weight: float = 0.1  # pre-training penalty on negative MANO scale
    m2p_depth_threshold: float = 0.04  # M2P: mean |depth difference| of a sample must be below this
    m2p_fit_threshold: float = 1e-3  # M2P: d2m and per-part ICP values must be below this
    coll_row_threshold: float = 0.1  # collision: a sphere's penetration row sum >= this is dropped
    # hand box of the real-crop background removal, around the teacher's MANO joints (official "25/20/20")
    crop_hand_xy_margin: float = 25.0  # x and y: (min - 25, max + 25) mm
    crop_hand_z_near: float = 40.0  # z near side: min - 40 mm (20 mm margin + 20 mm hand thickness)
    crop_hand_z_far: float = 20.0  # z far side: max + 20 mm
    num_points: int = 2048  # points sampled from the real crop for ICP
    inter_branch: bool = True  # false (ablation): P2M, M2P and the stage-1 MANO-joint <- teacher-PWE term weigh 0
    m2p_foreground_1stage: float = 0.95  # stage_num=1 ablation: foreground threshold of its M2P depth test

    # --- optimisation ------------------------------------------------------------------------------------
    opt: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    scheduler: str = "step"  # step | none
    step_size: int = 10
    gamma: float = 0.1
    lr_offbyone: bool = True  # replicate the official scheduler.step(epoch) shift (11 epochs at lr, then decay)
    max_epoch: int = 15
    batch_size: int = 32
    iters_per_epoch: int = 0  # 0 = one pass over the data; > 0 caps an epoch (demo / smoke runs)

    # --- Consis-CycleGAN training (train_stage=transfer; model/transfer_train.py, DEVIATIONS "Consis-CycleGAN") --
    transfer_epochs: int = 20  # epochs at the initial learning rate (CycleGAN n_epochs; run names say 40 in all)
    transfer_decay_epochs: int = 20  # then linear decay towards 0 (CycleGAN n_epochs_decay)
    transfer_lr: float = 2e-4  # Adam, both generators and both discriminators
    transfer_beta1: float = 0.5
    transfer_batch_size: int = 1  # CycleGAN default (instance norm); synthetic and real batches alike
    transfer_lambda_cycle: float = 10.0  # cycle L1 weight (lambda_A = lambda_B)
    transfer_lambda_identity: float = 0.5  # identity L1 weight as a fraction of transfer_lambda_cycle
    transfer_consistency: float = 10.0  # foreground consistency of G_A on synthetic input (0 = plain CycleGAN)
    transfer_consistency_b: float = 0.0  # the symmetric term for G_B on real input
    transfer_pool_size: int = 50  # image history shown to the discriminators
    transfer_ngf: int = 64  # generator width (64 = DSF's G_A; other widths cannot be loaded by pre-training)
    transfer_n_blocks: int = 9  # generator residual blocks (9 = resnet_9blocks)
    transfer_ndf: int = 64  # PatchGAN width
    transfer_d_layers: int = 3  # PatchGAN layers (3 = CycleGAN 'basic')
    transfer_real_augment: bool = False  # rot / com / sc augmentation of the real crops (off: crops as they are)
    # (scalar / image logging intervals: log_every / img_log_every; epoch cap: iters_per_epoch; resume: resume)

    # --- runtime -----------------------------------------------------------------------------------------
    device: str = ""  # "" = cuda if available else cpu
    seed: int = 0
    log_every: int = 10  # iterations between TensorBoard scalar writes
    img_log_every: int = 200  # iterations between TensorBoard image writes
    test_views: tuple = (1,)  # Kinect views evaluated after training / in phase=test
    epoch_test: bool = True  # test view test_views[0] after every epoch (monitoring; best.pth is a diagnostic)
    # real train batches (unaugmented, unlabelled) over which the BN running statistics are re-estimated: at the end
    # of every fine-tuning epoch (before its test and checkpoint) and, in phase=test, before scoring; 0 = official
    # (statistics averaged over both domains' passes; docs/DEVIATIONS.md "Trainer")
    bn_recalibration: int = 0
    save_mesh: bool = False  # test: also write stage-2 meshes (779 x 3 mm per frame) and 62-d MANO parameters
    save_obj: bool = False  # test: also write one OBJ mesh per frame into <run>/obj/

    # --- distributed / resume / speed (torchrun for several GPUs: README, "Several GPUs and resuming") ------
    keep_last: int = 3  # epoch_XXX.pth files kept in the run folder (latest.pth and best.pth always kept); 0 = none
    ckpt_every: int = 0  # iterations between mid-epoch saves of latest.pth (0 = only at the end of each epoch)
    nan_max_consecutive: int = 10  # non-finite steps (skipped, counted) in a row before the run stops, checkpointed
    amp: bool = False  # CUDA: bf16 autocast for the network (MANO, renderer, distances, losses stay float32)
    torch_compile: bool = False  # torch.compile the pose network (first iterations slower while it compiles)
    channels_last: bool = True  # CUDA: channels-last memory format for the convolutions (same numbers, faster)
    cudnn_benchmark: bool = True  # CUDA: cuDNN autotuning (official: on); ignored when deterministic
    deterministic: bool = False  # CUDA: deterministic kernels only (slower); CPU runs are repeatable regardless
    sync_bn: bool = False  # several GPUs: BatchNorm statistics over the global batch (CUDA only; default per rank)

    # --- phase=annotate (util/annotate.py): regenerated labels of a whole split from load_model -----------
    annotate_split: str = "test"  # train | test
    annotate_branch: str = "mano"  # joints from the final stage's MANO branch (matches the mesh) or pixel branch
    annotate_mesh: str = "none"  # none | npy (one (N, 779, 3) array) | obj (one file per frame)
    annotate_chunk: int = 256  # frames per resumable chunk file
    annotate_sheet: int = 16  # random frames in the contact sheet PNG (0 = none)

    def __post_init__(self) -> None:
        self.validate()

    # --- derived values (computed, never stored) ---------------------------------------------------------
    @property
    def camera(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) of the dataset's sensor (or the ``camera_intrinsics`` override)."""
        if self.camera_intrinsics:
            return tuple(float(c) for c in self.camera_intrinsics)
        return CAMERAS[self.dataset].as_tuple()

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the dataset's full frames."""
        cam = CAMERAS[self.dataset]
        return (cam.height, cam.width)

    @property
    def cube(self) -> float:
        """Crop cube edge in mm (``cube_size`` or the dataset default)."""
        return self.cube_size if self.cube_size > 0 else CUBE_SIZES[self.dataset]

    @property
    def synth_depth_range(self) -> tuple[float, float]:
        """(min, max) distance of synthetic hands in mm."""
        if self.synth_depth:
            return (float(self.synth_depth[0]), float(self.synth_depth[1]))
        return SYNTH_DEPTH_RANGES[self.dataset]

    @property
    def center_depth_limits(self) -> tuple[float, float]:
        """(min, max) mm a hand-centre z may take (centre files outside it are refused)."""
        if self.center_depth_range:
            return (float(self.center_depth_range[0]), float(self.center_depth_range[1]))
        return CENTER_DEPTH_RANGES[self.dataset]

    @property
    def is_pretrain(self) -> bool:
        return self.train_stage == "pretrain"

    def validate(self) -> None:
        """Check every value at load time (normalising the case of mode strings); raise :class:`ConfigError`.

        Driven by the tables below the class, so a new key gets its check by adding one entry:
        ``CHOICES`` (allowed strings), ``RANGES`` (numeric bounds; tuples: every element) and ``CHECKS``
        (functions for rules that involve several keys or strings). Every float is also required finite.
        """
        self.train_stage = self.train_stage.lower()
        self.phase = self.phase.lower()
        validate_config(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_json(self, path: str) -> None:
        """Write the resolved config (all fields plus derived values) atomically."""
        data = self.to_dict()
        data["_derived"] = {"camera": self.camera, "image_size": self.image_size, "cube": self.cube}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False)
        os.replace(tmp, path)

    def diff(self) -> dict[str, tuple[Any, Any]]:
        """Fields that differ from the defaults: {key: (value, default)}."""
        default = Config()
        return {f.name: (getattr(self, f.name), getattr(default, f.name))
                for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(default, f.name)}

    def summary(self) -> str:
        """One line per field, marking changed ones with their default (CycleGAN style)."""
        changed = self.diff()
        lines = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            note = f"\t[default: {changed[f.name][1]!r}]" if f.name in changed else ""
            lines.append(f"{f.name:>22}: {v!r}{note}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------
# validation tables (docs/DEVIATIONS.md "Input validation" lists the ranges and why they are generous)
#
# To validate a new key, add ONE entry: its allowed strings to CHOICES, or its numeric bounds to RANGES
# (``Range(lo, hi)`` inclusive; ``lo_open`` / ``hi_open`` for strict bounds; tuple values are checked element
# by element), or - for a rule involving several keys or a string format - a function ``(cfg) -> None`` that
# raises ConfigError, decorated with ``@config_check``. Every float (and every element of a float tuple) is
# required finite without an entry. tests/test_config_validation.py checks that every entry names a key.
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """Allowed interval of a numeric config value; ``why`` is appended to the error message."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""

    def contains(self, value: float) -> bool:
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return bool(above and below)

    def describe(self) -> str:
        lo = "" if self.lo == -math.inf else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = "" if self.hi == math.inf else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return " and ".join(p for p in (lo, hi) if p) or "any finite number"


#: enumerations: key -> allowed values
CHOICES: dict[str, tuple] = {
    "phase": PHASES, "train_stage": TRAIN_STAGES, "dataset": DATASETS, "renderer": RENDERERS,
    "opt": OPTIMIZERS, "scheduler": SCHEDULERS, "pretrain_view_aug": VIEW_AUGS, "finetune_view_aug": VIEW_AUGS,
    "transfer": TRANSFERS, "center_type": CENTER_TYPES, "crop_sampling": CROP_SAMPLINGS,
    "synth_builtin_rotation": BUILTIN_ROTATIONS,
    "stage_num": (1, 2), "view": (1, 2, 3), "joint_num": (21,),
    "annotate_split": ("train", "test"), "annotate_branch": ("mano", "pwe"), "annotate_mesh": ("none", "npy", "obj"),
}

_POSITIVE = Range(0.0, lo_open=True)
_NONNEGATIVE = Range(0.0)
_FRACTION = Range(0.0, 1.0, hi_open=True)
#: numeric bounds: key -> Range (generous: they stop nonsense, not unusual experiments)
RANGES: dict[str, Range] = {
    "demo_train_frames": Range(1, 100_000),
    "demo_test_frames": Range(1, 100_000),
    "camera_intrinsics": Range(-1e5, 1e5),  # fx, fy > 0 checked below
    "input_size": Range(32, 1024, why="crop size in pixels, a multiple of 16 (the network halves it 4 times)"),
    "cube_size": Range(0.0, 1000.0, why="mm; 0 = dataset default; a hand fits in 300 mm"),
    "test_subject": Range(0, 8, why="MSRA subjects P0..P8"),
    "annotate_chunk": Range(1, 10**7, why="frames per chunk file"),
    "annotate_sheet": Range(0, 400, why="frames"),
    "icvl_mirror_width": Range(0.0, 10_000.0, why="pixels"),
    "center_depth_range": Range(1.0, 20_000.0, why="mm"),
    "test_cube_split": _NONNEGATIVE,
    "test_cube_scale": Range(0.0, 4.0, lo_open=True),
    "aug_rotation": Range(0.0, 360.0, why="degrees"),
    "aug_shift": Range(0.0, 200.0, why="mm"),
    "aug_scale": Range(0.0, 0.5, why="relative cube change; the crop grows with 1 + aug_scale"),
    "num_workers": Range(0, 256),
    "synth_depth": Range(1.0, 20_000.0, why="mm"),
    "synth_shape_noise": Range(0.0, 100.0),
    "synth_center_jitter": Range(0.0, 200.0, why="mm"),
    "synth_cube_jitter": _FRACTION,
    "occlusion_joints": Range(0, 21),
    "occlusion_offset": _NONNEGATIVE,
    "occlusion_radius": _NONNEGATIVE,
    "synth_pose_noise": _NONNEGATIVE,
    "synth_builtin_poses": Range(1, 10**8),
    "synth_builtin_cone_deg": Range(0.0, 180.0, why="degrees"),
    "width": Range(0.0, 16.0, lo_open=True),
    "feature_size": Range(16, 512),
    "offset_kernel": _POSITIVE,
    "decode_temperature": _POSITIVE,
    "huber_delta": _POSITIVE,
    **{k: _NONNEGATIVE for k in ("deconv_weight", "coord_weight", "model_weight", "m2d_scale", "partICP_weight",
                                 "M2P_weight", "coll_weight", "shape_prior_weight", "neg_scale_weight", "mano_scale_bias_init",
                                 "m2p_depth_threshold", "m2p_fit_threshold", "coll_row_threshold",
                                 "crop_hand_xy_margin", "crop_hand_z_near", "crop_hand_z_far")},
    "num_points": Range(1, 1_000_000),
    "lr": Range(0.0, 10.0, lo_open=True),
    "weight_decay": Range(0.0, 10.0),
    "step_size": Range(1, 1_000_000),
    "gamma": Range(0.0, 1.0, lo_open=True, why="StepLR factor"),
    "max_epoch": Range(1, 1_000_000),
    "batch_size": Range(1, 65_536),
    "iters_per_epoch": Range(0, 10**9),
    "seed": Range(0, 2**32 - 1, why="numpy's np.random.seed accepts 0..2**32-1"),
    "log_every": Range(1, 10**9),
    "keep_last": Range(0, 10**6, why="epoch checkpoints kept"),
    "ckpt_every": Range(0, 10**9, why="iterations; 0 = end of epoch only"),
    "nan_max_consecutive": Range(1, 10**6, why="consecutive skipped steps"),
    "bn_recalibration": Range(0, 10**9, why="real train batches; 0 = off"),
    "img_log_every": Range(1, 10**9),
    "test_views": Range(1, 3, why="Kinect views"),
    # Consis-CycleGAN training (train_stage=transfer)
    "transfer_epochs": Range(0, 1_000_000),
    "transfer_decay_epochs": Range(0, 1_000_000),
    "transfer_lr": Range(0.0, 10.0, lo_open=True),
    "transfer_beta1": Range(0.0, 1.0, hi_open=True, why="Adam beta1"),
    "transfer_batch_size": Range(1, 65_536),
    **{k: _NONNEGATIVE for k in ("transfer_lambda_cycle", "transfer_lambda_identity", "transfer_consistency",
                                 "transfer_consistency_b")},
    "transfer_pool_size": Range(0, 100_000),
    "transfer_ngf": Range(1, 4096),
    "transfer_n_blocks": Range(0, 64),
    "transfer_ndf": Range(1, 4096),
    "transfer_d_layers": Range(1, 5, why="PatchGAN layers; a 128 px crop has no patch map beyond 5"),
}

#: cross-key / string rules, run in order after CHOICES and RANGES
CHECKS: list[Callable[["Config"], None]] = []


def config_check(fn: Callable[["Config"], None]) -> Callable[["Config"], None]:
    """Register ``fn(cfg)`` (raises ConfigError) as a validation rule of every Config."""
    CHECKS.append(fn)
    return fn


def _numbers(key: str, value: Any, numeric: bool = False) -> list:
    """The numbers of a value (scalars as one element, tuples element-wise; strings and bools are skipped).

    ``numeric``: the key has a RANGES entry, so a tuple holding anything but numbers is an error.
    """
    items = value if isinstance(value, (tuple, list)) else (value,)
    numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numeric and isinstance(value, (tuple, list)) and len(numbers) != len(items):
        raise ConfigError(f"{key} must hold numbers only, got {value!r}")
    return numbers


def validate_config(cfg: "Config") -> None:
    """Apply CHOICES, finiteness, RANGES and CHECKS to ``cfg``; the first violation raises ConfigError."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {getattr(cfg, key)!r}")
    for f in dataclasses.fields(cfg):
        for v in _numbers(f.name, getattr(cfg, f.name)):
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{f.name} must be finite, got {getattr(cfg, f.name)!r}")
    for key, bound in RANGES.items():
        value = getattr(cfg, key)
        for v in _numbers(key, value, numeric=True):
            if not bound.contains(v):
                why = f" ({bound.why})" if bound.why else ""
                raise ConfigError(f"{key} must be {bound.describe()}{why}, got {value!r}")
    for check in CHECKS:
        check(cfg)


@config_check
def _check_sizes(cfg: "Config") -> None:
    if cfg.input_size % 16:
        raise ConfigError(f"input_size must be a multiple of 16 (the network halves it 4 times), got {cfg.input_size}")
    if cfg.feature_size * 2 != cfg.input_size:
        raise ConfigError(f"feature_size must be input_size / 2 = {cfg.input_size // 2} (the pixel-wise maps are "
                          f"half the crop size), got {cfg.feature_size}")


@config_check
def _check_pairs(cfg: "Config") -> None:
    if cfg.camera_intrinsics:
        if len(cfg.camera_intrinsics) != 4:
            raise ConfigError(f"camera_intrinsics must be 4 numbers (fx, fy, cx, cy), got {cfg.camera_intrinsics!r}")
        fx, fy, cx, cy = cfg.camera_intrinsics
        if not (fx > 0 and fy > 0 and cx >= 0 and cy >= 0):
            raise ConfigError(f"camera_intrinsics (fx, fy, cx, cy) need fx, fy > 0 px and cx, cy >= 0 px (y-down "
                              f"frame), got {cfg.camera_intrinsics!r}")
    for key in ("synth_depth", "center_depth_range"):
        value = getattr(cfg, key)
        if value and not (len(value) == 2 and 0 < value[0] < value[1]):
            raise ConfigError(f"{key} must be (min, max) mm with 0 < min < max, got {value!r}")
    lo, hi = cfg.occlusion_joints
    if lo > hi:
        raise ConfigError(f"occlusion_joints must be (min, max) with min <= max, got {cfg.occlusion_joints!r}")


@config_check
def _check_run_name(cfg: "Config") -> None:
    name = cfg.run_name
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in name for s in seps) or ".." in name or "\0" in name or name.strip() != name:
        raise ConfigError(f"run_name must be a plain folder name (no path separators, no '..', no surrounding "
                          f"spaces): runs are written to <output_dir>/<dataset>/<run_name>; got {name!r}")


@config_check
def _check_device(cfg: "Config") -> None:
    dev = cfg.device
    if dev in ("", "cpu"):
        return
    if not re.fullmatch(r"cuda(:\d+)?", dev):
        raise ConfigError(f"device must be '', 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
    import torch  # only when CUDA is asked for: validating a CPU config stays cheap

    if not torch.cuda.is_available():
        raise ConfigError(f"device={dev!r} but this PyTorch build sees no CUDA device (torch {torch.__version__}, "
                          f"CUDA build {torch.version.cuda}); use device=cpu or leave device empty")
    index = int(dev.split(":")[1]) if ":" in dev else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={dev!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")


@config_check
def _check_transfer_epochs(cfg: "Config") -> None:  # Consis-CycleGAN training
    if cfg.transfer_epochs + cfg.transfer_decay_epochs < 1:
        raise ConfigError("transfer_epochs + transfer_decay_epochs must be >= 1, got "
                          f"{cfg.transfer_epochs} + {cfg.transfer_decay_epochs}")


# ------------------------------------------------------------------------------------------------------
# command-line overrides
# ------------------------------------------------------------------------------------------------------
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_value(key: str, text: str, default: Any) -> Any:
    """Parse ``text`` into the type of ``default`` (bool / int / float / str / tuple of numbers)."""
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"config key {key!r} expects {expected} (default {default!r}), got {text!r}")

    if isinstance(default, bool):
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise bad("a boolean (true/false/1/0)")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise bad("an integer") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise bad("a number") from None
    if isinstance(default, tuple):
        parts = [p for p in text.strip().strip("()[]").replace(",", " ").split() if p]
        elem = type(default[0]) if default else float
        try:
            values = tuple(elem(p) for p in parts)
        except ValueError:
            raise bad(f"a comma-separated list of {elem.__name__}") from None
        if default and len(values) != len(default) and key != "test_views":
            raise bad(f"{len(default)} comma-separated values")
        return values
    return text


def _split_args(argv: Sequence[str]) -> list[tuple[str, str]]:
    """``key=value``, ``--key=value``, ``--key value``, and a bare ``--flag`` for boolean keys."""
    bools = {f.name for f in dataclasses.fields(Config) if isinstance(f.default, bool)}
    pairs: list[tuple[str, str]] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        body = arg[2:] if arg.startswith("--") else arg
        if "=" in body:
            key, value = body.split("=", 1)
        elif arg.startswith("--") and body.replace("-", "_") in bools and (
                i + 1 == len(argv) or argv[i + 1].startswith("--")
                or argv[i + 1].strip().lower() not in _TRUE | _FALSE):
            key, value = body, "true"
        elif arg.startswith("--") and i + 1 < len(argv):
            key, value = body, argv[i + 1]
            i += 1
        else:
            raise ConfigError(f"cannot parse argument {arg!r}: use key=value, --key=value or --key value")
        pairs.append((key.strip().replace("-", "_"), value))
        i += 1
    return pairs


def load_config(argv: Sequence[str] | None = None, **overrides: Any) -> Config:
    """Build a :class:`Config` from command-line style ``argv`` and/or Python keyword overrides.

    Raises:
        ConfigError: unknown key (with close valid ones), wrong type or invalid value.
    """
    defaults = Config()
    names = [f.name for f in dataclasses.fields(Config)]
    values: dict[str, Any] = {}
    for key, text in _split_args(argv or []):
        if key not in names:
            close = difflib.get_close_matches(key, names, n=4, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint} (see config.py for all keys)")
        values[key] = _parse_value(key, text, getattr(defaults, key))
    for key, value in overrides.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=4, cutoff=0.5)
            raise ConfigError(f"unknown config key {key!r}; did you mean {', '.join(close)}?")
        default = getattr(defaults, key)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise ConfigError(f"config key {key!r} expects {type(default).__name__}, got {value!r}")
        values[key] = value
    for key, value in dataset_defaults(values.get("dataset", defaults.dataset)).items():
        values.setdefault(key, value)  # per-dataset defaults, unless given explicitly
    return dataclasses.replace(defaults, **values)


#: per-dataset training schedule of the official config (``EPOCH``, ``STEP``): (max_epoch, step_size)
DATASET_SCHEDULES: dict[str, tuple[int, int]] = {"nyu": (15, 10), "icvl": (8, 4), "msra": (10, 5)}


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """Keys whose default depends on the data set (ICVL / MSRA): schedule and data root. :func:`load_config`
    applies them unless they are given explicitly; a ``Config(dataset=...)`` built directly keeps the NYU
    values. (The cube is derived: :attr:`Config.cube`; MSRA uses per-subject cubes unless ``cube_size`` > 0.)"""
    if dataset not in DATASET_SCHEDULES or dataset == "nyu":
        return {}
    epochs, step = DATASET_SCHEDULES[dataset]
    return {"max_epoch": epochs, "step_size": step, "data_root": f"data/{dataset}"}


def default_config() -> Config:
    return Config()


__all__ = ["Config", "ConfigError", "load_config", "default_config", "field"]
