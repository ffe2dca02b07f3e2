"""Basin of attraction of DSF's model-fitting terms on the stand-in (a diagnostic of the DSF-claim benchmark,
issue 16: why self-supervised fine-tuning from a weak pre-training makes the MANO branch worse).

No network: each real train crop gets a free 62-d MANO vector (the network's output convention, norm-xyz of the
crop) that is optimised directly on the method's real-data fitting objective of one stage,
0.1 m2d + d2m + pd2m + collision (docs/method.md §6, weights as the config defaults), with the hand box, the sphere
segmentation and the point sets recomputed every step from the current (detached) fit, as the one-stage variant
does. The vectors start at the frames' true MANO fits (``posePara_lm_collosion``, fitted once to their 21 joints
and 779 vertices) disturbed by ``level`` times a fixed random perturbation (rotation 0.2 rad, pose PCA 0.5, translation
0.05 per component), and at a collapsed hand (scale 0, the official initialisation's output). For each start it prints the joint
error before and after fitting, the surface fit reached (RMS point-to-mesh distance of d2m), and how many frames
pass M2P's global-fit gate (d2m < ``m2p_fit_threshold``) and, of those, how many are truly within 10 mm.

Usage: ``.venv/bin/python bench/dsf_fit_basin.py [--frames 16] [--steps 200] [--levels 0,1,2,3,4,6]``
(default data: the demo's stand-in assets, generated on first use). Prints one table row per start.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

#: perturbation scale per parameter block at level 1 (axis-angle rad, PCA coefficients, norm-xyz translation)
PERTURBATION = {"rotation": 0.2, "pose": 0.5, "translation": 0.05}
FIT_WEIGHTS = {"m2d": 0.1, "d2m": 1.0, "pd2m": 1.0, "coll": 1.0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="", help="NYU-format tree with posePara_lm_collosion (default: demo)")
    p.add_argument("--mano", default="", help="MANO pickle (default: the demo's stand-in)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=200, help="Adam steps of the self-supervised fit per start")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--levels", default="0,1,2,3,4,6", help="perturbation levels (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def fit_to_labels(ren, C, S, joints, verts, steps: int = 400) -> torch.Tensor:
    """Free MANO vectors (B, 62) fitted to labelled joints / vertices (norm-xyz) with the supervised terms."""
    import model.losses as L

    theta = torch.zeros(joints.shape[0], 62)
    theta[:, 58] = 1.0
    theta.requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=2e-2)
    for _ in range(steps):
        j, v = ren.mesh(theta)
        loss = L.mano_joint_loss(j, joints, 0.01) + L.mano_vertex_loss(v, verts, 0.01)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return theta.detach()


def self_fit(theta0: torch.Tensor, real: dict, models, cfg, steps: int, lr: float, gen: torch.Generator
             ) -> tuple[torch.Tensor, dict]:
    """Optimise the fitting objective from ``theta0``; returns (final theta, raw per-sample terms at the end)."""
    import train_render as T

    ren, layer = models.renderer, models.layer
    C, S = real["center_xyz"], real["cube"]
    th = theta0.clone().requires_grad_(True)
    opt = torch.optim.Adam([th], lr=lr)
    raw = {}
    for i in range(steps + 1):
        r = ren.render_prediction(th, C, S)
        j, v = r.joints_xyz.detach(), r.verts_xyz.detach()
        fit = T.prepare_real(real["depth"], real, j, j, j, v, layer, cfg, gen)
        terms, raw = T.model_fit_terms(r, fit, real, layer, cfg, "s")
        if i == steps:
            break
        loss = sum(w * terms[f"real/{k}/s"] for k, w in FIT_WEIGHTS.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return th.detach(), {k: v.detach() for k, v in raw.items() if k != "crop"}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import train_render as T
    from config import load_config
    from dataloader.builders import build_real_loader
    from model.supervised import fit_point_labels, supervised_targets

    cfg = load_config(["num_workers=0", "augment=false", f"batch_size={args.frames}", f"seed={args.seed}"])
    if not args.data_root or not args.mano:
        mano, tree = T.ensure_demo_assets(cfg)
    cfg = load_config(["num_workers=0", "augment=false", f"batch_size={args.frames}", f"seed={args.seed}",
                       f"mano_path={args.mano or mano}", f"data_root={args.data_root or tree}", "width=0.25"])
    models = T.build_models(cfg, torch.device("cpu"), transfer=False)
    labels = fit_point_labels("", cfg.data_root, "train", 1, models.layer)
    real = next(iter(build_real_loader(cfg, "train", train=True, point_labels=labels)))
    tg = supervised_targets(real)
    gt = tg["mano_joints_xyz_norm"]
    B = gt.shape[0]

    def err_mm(theta) -> torch.Tensor:  # (B,) mean 21-joint error, mm (norm-xyz x cube / 2)
        with torch.no_grad():
            j, _ = models.renderer.mesh(theta)
        return (j - gt).norm(dim=-1).mean(1) * real["cube"][:, 0] / 2

    t0 = time.time()
    theta_gt = fit_to_labels(models.renderer, real["center_xyz"], real["cube"], gt, tg["mano_verts_xyz_norm"])
    print(f"{B} stand-in train frames ({cfg.data_root}); true MANO vectors refitted to the labels: "
          f"{float(err_mm(theta_gt).mean()):.2f} mm; fitting objective 0.1 m2d + d2m + pd2m + coll, {args.steps} Adam "
          f"steps (lr {args.lr:g}) per start; M2P gate d2m < {cfg.m2p_fit_threshold:g}")
    g = torch.Generator().manual_seed(args.seed)
    noise = torch.zeros(B, 62)
    noise[:, 0:3] = PERTURBATION["rotation"] * torch.randn(B, 3, generator=g)
    noise[:, 3:48] = PERTURBATION["pose"] * torch.randn(B, 45, generator=g)
    noise[:, 59:62] = PERTURBATION["translation"] * torch.randn(B, 3, generator=g)
    starts = [(f"truth + {lv:g} x perturbation", theta_gt + float(lv) * noise)
              for lv in (float(x) for x in args.levels.split(","))]
    collapsed = theta_gt.clone()
    collapsed[:, 58] = 0.0  # the official initialisation's output: scale ~0, a point at the crop centre
    collapsed[:, 59:62] = 0.0
    starts.append(("collapsed hand at the crop centre", collapsed))
    head = (f"{'start':36s} {'err start':>9s} {'err end':>8s} {'RMS d2m end':>11s} {'frames <10mm':>12s} "
            f"{'pass gate':>9s} {'gate & <10mm':>12s}")
    print(head + "\n" + "-" * len(head))
    fit_gen = torch.Generator().manual_seed(args.seed + 1)
    for name, th0 in starts:
        e0 = err_mm(th0)
        th, raw = self_fit(th0, real, models, cfg, args.steps, args.lr, fit_gen)
        e1 = err_mm(th)
        rms = (raw["icp"].clamp_min(0).sqrt() * real["cube"][:, 0] / 2)
        gate = raw["icp"] < cfg.m2p_fit_threshold
        good = e1 < 10.0
        print(f"{name:36s} {float(e0.mean()):9.1f} {float(e1.mean()):8.1f} {float(rms.mean()):8.1f} mm "
              f"{int(good.sum()):6d}/{B:<5d} {int(gate.sum()):5d}/{B:<3d} {int((gate & good).sum()):8d}/{int(gate.sum()):<3d}",
              flush=True)
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
