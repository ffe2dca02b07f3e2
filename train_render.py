"""DSF entry point: ``python train_render.py key=value ...`` (every key is a field of ``config.Config``).

The trainer (synthetic pre-training, dual-branch self-supervised fine-tuning, test) switches on
``phase`` / ``train_stage``. Status: the building blocks (MANO model, renderer, data, network, evaluation) are in
place; the training loops are the next milestone. Until they land, ``demo=true`` runs the whole data -> network
-> evaluation pipeline once on the generated stand-in assets and writes its outputs into the run folder.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

import torch

from config import Config, ConfigError, load_config


def resolve_device(cfg: Config) -> torch.device:
    """``cfg.device`` or CUDA when available, else CPU."""
    if cfg.device:
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_dir(cfg: Config) -> str:
    """``<output_dir>/<dataset>/<run_name>``; the name is derived from the mode when not given."""
    name = cfg.run_name or f"{cfg.phase}_{cfg.train_stage}_s{cfg.stage_num}_w{cfg.width:g}" + ("_demo" if cfg.demo else "")
    return os.path.join(cfg.output_dir, cfg.dataset, name)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = load_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seed_everything(cfg.seed)
    out = run_dir(cfg)
    os.makedirs(out, exist_ok=True)
    cfg.save_json(os.path.join(out, "config.json"))
    print(cfg.summary())
    device = resolve_device(cfg)
    print(f"run folder: {out} (resolved config in config.json); device: {device}")
    if cfg.demo:
        try:
            run_demo(cfg, out, device)
        except (ImportError, FileNotFoundError) as err:  # e.g. renderer=pytorch3d not installed: one message
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    print("error: the training / test loops are not implemented yet in this version; run with demo=true to "
          "exercise the data -> network -> evaluation pipeline on stand-in assets.", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------------------------
# demo: the whole data -> network -> rendering -> evaluation pipeline once, on generated stand-in assets
# ------------------------------------------------------------------------------------------------------
def ensure_demo_assets(cfg: Config) -> tuple[str, str]:
    """Generate (first use only) the stand-in MANO model and NYU-format tree; return their paths."""
    from dataloader.standin_nyu import ensure_standin_nyu
    from render.standin import write_standin

    os.makedirs(cfg.demo_dir, exist_ok=True)
    mano_path = os.path.join(cfg.demo_dir, "MANO_RIGHT.pkl")
    if not os.path.isfile(mano_path):
        print(f"generating the procedural stand-in MANO model -> {mano_path}")
        write_standin(mano_path)
    tree = os.path.join(cfg.demo_dir, "nyu")
    print(f"stand-in NYU tree: {tree} (generated on first use)")
    ensure_standin_nyu(tree, cfg.demo_train_frames, cfg.demo_test_frames, seed=cfg.seed, mano_path=mano_path,
                       views=3, view_mode="copy")
    return mano_path, tree


@torch.no_grad()
def run_demo(cfg: Config, out: str, device: torch.device) -> None:
    """Run the untrained network over the stand-in test split, score it with the NYU protocol, write figures."""
    import numpy as np
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from dataloader.nyu import NYUDataset
    from dataloader.nyu_joints import nyu36_from_mano21
    from dataloader.synthetic import SyntheticParams, SyntheticSettings, render_synthetic_batch
    from model import build_pose_net, predict
    from render.hand_renderer import HandRenderer
    from render.mano_io import load_mano
    from render.mano_layer import ManoLayer
    from util.evaluate import evaluate_nyu, format_table, save_predictions, write_results
    from util.camera import Intrinsics
    from util.geometry import uvd_to_norm_uvd, xyz_to_uvd
    from util.joints import NYU_EVAL_14
    from util.visualize import save_crops_with_skeletons, save_render_comparison

    mano_path, tree = ensure_demo_assets(cfg)
    model = load_mano(mano_path)
    layer = ManoLayer(model).to(device)
    renderer = HandRenderer(layer, cfg.camera, cfg.input_size, cfg.renderer).to(device)
    net = build_pose_net(cfg.stage_num, cfg.joint_num, width=cfg.width).to(device)
    test = NYUDataset(tree, "test", view=cfg.view, cube=cfg.cube, size=cfg.input_size, camera=cfg.camera,
                      crop_sampling=cfg.crop_sampling)
    loader = DataLoader(test, batch_size=cfg.batch_size, shuffle=False, num_workers=0)
    def to_nyu14(joints21: torch.Tensor) -> torch.Tensor:
        # NYU's palm / wrist points have no MANO joint: placed on the hand like the stand-in labels (mean_11 skips
        # them, as DSF's metric does)
        return nyu36_from_mano21(joints21)[:, list(NYU_EVAL_14)]

    preds, gts, first = [], [], None
    for batch in tqdm(loader, desc="demo: test split"):
        b = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        pred = predict(net, b["depth"], b["center_xyz"], b["cube"], b["M"], camera=cfg.camera, renderer=renderer)
        nyu14 = to_nyu14(pred.final.mano_mm)  # (B, 14, 3) mm: the MANO branch of the last stage
        preds.append(xyz_to_uvd(nyu14.cpu().double(), cfg.camera))
        gt_mm = test_joints_mm(batch)
        gts.append(xyz_to_uvd(gt_mm.double(), cfg.camera))
        first = first or (b, pred)
    pred_uvd, gt_uvd = torch.cat(preds).numpy(), torch.cat(gts).numpy()
    save_predictions(os.path.join(out, "predictions_nyu14_uvd.txt"), pred_uvd)
    fx, fy, cx, cy = cfg.camera
    scores = evaluate_nyu(pred_uvd, gt_uvd, camera=Intrinsics(fx, fy, cx, cy, *cfg.image_size[::-1]))
    print(format_table(["untrained net (MANO branch)"], [scores]))
    write_results(os.path.join(out, "eval"), ["untrained"], ["predictions_nyu14_uvd.txt"], [scores], "stand-in")

    b, pred = first
    n = min(8, b["depth"].shape[0])
    rendered = renderer.render_prediction(net(b["depth"][:n], b["center_xyz"][:n], b["cube"][:n],
                                              renderer=renderer).final.mano, b["center_xyz"][:n], b["cube"][:n])
    save_render_comparison(os.path.join(out, "rendered_vs_observed.png"), b["depth"][:n, 0].cpu().numpy(),
                           rendered.depth[:, 0].cpu().numpy())
    params = SyntheticParams.from_source(cfg.hands_para_dir, model.hands_coeffs, n_builtin=64, seed=cfg.seed,
                                         search_roots=(os.path.dirname(cfg.data_root), cfg.data_root))
    theta = torch.as_tensor(np.stack([params[i]["params"] for i in range(n)])).to(device)
    settings = SyntheticSettings(cube=cfg.cube, size=cfg.input_size, depth_range=cfg.synth_depth_range)
    synth = render_synthetic_batch(theta, layer, cfg.camera, settings, torch.Generator().manual_seed(cfg.seed))
    save_crops_with_skeletons(os.path.join(out, "synthetic_crops.png"), synth["depth"][:, 0].cpu().numpy(),
                              [(synth["mano_joints_uvd_norm"].cpu().numpy(), "red")])
    save_crops_with_skeletons(os.path.join(out, "standin_real_crops.png"), b["depth"][:n, 0].cpu().numpy(),
                              [(b["joints_uvd_norm"][:n].cpu().numpy(), "white"),
                               (uvd_to_norm_uvd(xyz_to_uvd(to_nyu14(pred.final.pwe_mm[:n]), cfg.camera),
                                                b["center_xyz"][:n], b["cube"][:n], b["M"][:n],
                                                cfg.input_size).cpu().numpy(), "red")])
    print(f"demo outputs written to {out}: predictions, eval/ (scores, success curve, per-joint errors), "
          "synthetic_crops.png, standin_real_crops.png, rendered_vs_observed.png. The network is untrained: "
          "its errors only show that the pipeline runs end to end.")


def test_joints_mm(batch: dict) -> torch.Tensor:
    """Ground-truth NYU-14 joints of a loader batch in mm (camera frame, y down)."""
    from util.geometry import norm_xyz_to_xyz

    return norm_xyz_to_xyz(batch["joints_xyz_norm"].double(), batch["center_xyz"].double(), batch["cube"].double())


if __name__ == "__main__":
    sys.exit(main())
