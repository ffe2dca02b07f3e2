"""Cost of the fine-tuning real-batch loss block on the CPU, against the network step it serves.

The block is everything the two-stage fine-tuning computes on a real batch after the network's forward pass
(docs/method.md, self-supervised fine-tuning): the teacher (decode of sg(P2), MANO of sg(Theta2)), the hand crop,
per-pixel back-projection, sphere segmentation, point sampling (Q_all, Q_fin), the renders of Theta1 and Theta2, and
the terms of both stages (map / joint / mesh distillation, collision, m2d, d2m ICP, part-aware ICP, P2M, M2P
selection and M2P), forward + backward down to the leaf maps and MANO vectors. The Theta1 render is counted here
although in training it is produced (and paid for) by the network's stage-2 remap: the block is an upper bound.

Reference measured in the same run, interleaved with the block: one pre-training-like step of the two-stage
network at width 0.25, batch 32 (``bench/data.py``'s ``make_train_step``: forward with the remap render, Huber
losses, backward, AdamW). Target: the loss block costs less than that step. Both wall time and process CPU time
(all threads) are reported: on a shared, overloaded machine the CPU time is the load-robust measure of the work.

Inputs: the procedural stand-in MANO model; "real" crops are renders of camera-facing built-in poses with a far
background wall (so the hand crop has pixels to remove); predictions are those poses plus noise, maps are the
encoded joints plus noise (leaf tensors with gradient). Timing: best of ``--repeats`` (shared machine).

Run: ``nice -n 10 .venv/bin/python bench/losses.py [--batch 32] [--repeats 3] [--threads 2] [--step-width 0.25]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import model.losses as L  # noqa: E402
from bench.data import make_train_step  # noqa: E402
from bench.timing import best_wall_cpu  # noqa: E402
from dataloader.synthetic import builtin_pose_params  # noqa: E402
from model.offsets import decode_offsets, encode_offsets  # noqa: E402
from model.point_cloud import (  # noqa: E402
    CROP_HAND_MARGINS, crop_hand, foreground_points, sample_points, segment_crop, segment_points,
)
from render.hand_renderer import HandRenderer  # noqa: E402
from render.mano_layer import DSF_GLOBAL_SCALE, ManoLayer  # noqa: E402
from render.spheres import hand_spheres  # noqa: E402
from render.standin import load_standin  # noqa: E402
from util.camera import NYU_CAMERA  # noqa: E402
from util.geometry import norm_uvd_to_norm_xyz  # noqa: E402

CAM = NYU_CAMERA.as_tuple()


def make_batch(layer: ManoLayer, renderer: HandRenderer, b: int, seed: int = 0) -> dict:
    """A "real" batch (crops with a background wall) and noisy predictions of it (leaf tensors)."""
    g = torch.Generator().manual_seed(seed)
    model = load_standin()
    theta = torch.from_numpy(builtin_pose_params(model.hands_coeffs, b, seed=seed, rotation="cone")).float()
    joints0 = layer.forward_dsf(theta, global_scale=DSF_GLOBAL_SCALE).joints
    theta[:, 59:62] = -joints0.mean(dim=1)  # centre each hand in its crop
    centre = torch.tensor([[0.0, 0.0, 500.0]]).repeat(b, 1) + torch.randn(b, 3, generator=g) * 20
    cube = torch.full((b, 3), 250.0)
    with torch.no_grad():
        gt = renderer.render_prediction(theta, centre, cube)
    depth = torch.where(gt.depth >= 0.99, torch.full_like(gt.depth, 0.9), gt.depth)  # a wall 112 mm behind C
    maps_target = encode_offsets(gt.joints_uvd, depth)

    def noisy(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return (x + torch.randn(x.shape, generator=g) * sigma).requires_grad_(True)

    return {"depth": depth, "center_xyz": centre, "cube": cube, "M": gt.M,
            "joints_uvd": gt.joints_uvd, "theta1": noisy(theta, 0.03), "theta2": noisy(theta, 0.01),
            "maps1": noisy(maps_target, 0.02), "maps2": noisy(maps_target, 0.01)}


def loss_block(batch: dict, layer: ManoLayer, renderer: HandRenderer, g: torch.Generator) -> dict:
    """Every real-batch term of two-stage fine-tuning (unweighted), forward only; returns the terms."""
    depth, C, S, M = batch["depth"], batch["center_xyz"], batch["cube"], batch["M"]
    th1, th2, p1, p2 = batch["theta1"], batch["theta2"], batch["maps1"], batch["maps2"]
    faces = layer.faces_closed
    with torch.no_grad():  # teacher and pre-processing: constants
        t_uvd = decode_offsets(p2.detach(), depth)
        t_xyz = norm_uvd_to_norm_xyz(t_uvd, C, S, M, CAM)
        tm = layer.forward_dsf(th2.detach(), global_scale=DSF_GLOBAL_SCALE)
        crop = crop_hand(depth, tm.joints, C, S, M, CAM, CROP_HAND_MARGINS)
        spheres = hand_spheres(layer, tm.joints, tm.vertices, centre_joints=t_xyz)
        labels = segment_crop(crop, spheres, C, S, M, CAM)
        fin_img = torch.where(labels > 0, crop, torch.ones_like(crop))
        q_fin = sample_points(foreground_points(fin_img, C, S, M, CAM), 2048, g)
        q_fin_labels = segment_points(q_fin, spheres)
        q_all = sample_points(foreground_points(crop, C, S, M, CAM), 2048, g)
    r1 = renderer.render_prediction(th1, C, S)
    r2 = renderer.render_prediction(th2, C, S)
    uvd1, uvd2 = decode_offsets(p1, depth), decode_offsets(p2, depth)
    terms = {"distil_map": L.map_distillation_loss(p1, p2), "distil_pwe": L.pwe_joint_distillation_loss(uvd1, t_uvd),
             "distil_joint": L.mpe_joint_distillation_loss(r1.joints_xyz, t_xyz),
             "distil_mesh": L.mpe_mesh_distillation_loss(r1.verts_xyz, tm.vertices),
             "p2m": L.p2m_loss(r2.joints_uvd, t_uvd)}
    for s, r in (("1", r1), ("2", r2)):
        rcrop = crop_hand(r.depth, tm.joints, C, S, r.M, CAM, CROP_HAND_MARGINS)
        icp = L.icp_loss(q_all, r.verts_xyz, faces)
        part = L.part_icp_loss(q_fin, q_fin_labels, r.verts_xyz, faces, layer.part_bits)
        terms.update({f"coll{s}": L.prediction_collision_loss(layer, r.joints_xyz, r.verts_xyz),
                      f"m2d{s}": L.m2d_loss(crop, rcrop).mean(), f"d2m{s}": icp.mean(), f"pd2m{s}": part.mean()})
    depth_ok, fit_ok, joint_mask = L.m2p_selection(crop, rcrop, icp, part)
    terms["m2p"] = L.m2p_loss(uvd2, r2.joints_uvd, (depth_ok & fit_ok)[:, None] & joint_mask)
    terms["_selected"] = ((depth_ok & fit_ok)[:, None] & joint_mask).sum()
    return terms


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--step-width", type=float, default=0.25, help="network width of the step reference")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layer = ManoLayer(load_standin())
    renderer = HandRenderer(layer, CAM)
    batch = make_batch(layer, renderer, args.batch)
    g = torch.Generator().manual_seed(1)
    leaves = [batch[k] for k in ("theta1", "theta2", "maps1", "maps2")]

    def full():
        for x in leaves:
            x.grad = None
        terms = loss_block(batch, layer, renderer, g)
        sum(v for k, v in terms.items() if not k.startswith("_")).backward()

    def renders_only():
        for x in leaves:
            x.grad = None
        r = [renderer.render_prediction(batch[k], batch["center_xyz"], batch["cube"]) for k in ("theta1", "theta2")]
        sum(x.depth.sum() + x.verts_xyz.sum() for x in r).backward()

    synth = {"depth": batch["depth"], "mano_joints_uvd_norm": batch["joints_uvd"],
             "center_xyz": batch["center_xyz"], "cube": batch["cube"]}
    step = make_train_step(args.step_width, layer, synth)
    # interleaved, so that a change of machine load biases neither side much
    block, render, net = [], [], []
    for _ in range(args.repeats):
        block.append(best_wall_cpu(full, 1, warmup=not block))
        render.append(best_wall_cpu(renders_only, 1, warmup=not render))
        net.append(best_wall_cpu(step, 1, warmup=not net))
    (bw, bc), (rw, rc), (nw, nc) = ((min(w for w, _ in x), min(c for _, c in x)) for x in (block, render, net))
    terms = loss_block(batch, layer, renderer, g)

    print(f"batch {args.batch}, torch threads {torch.get_num_threads()}, best of {args.repeats} (wall / process CPU)")
    print("terms: " + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items()))
    print(f"network step (width {args.step_width:g}, fwd+remap render+bwd+AdamW): "
          f"wall {nw * 1e3:8.1f} ms  CPU {nc * 1e3:8.1f} ms")
    rows = (("real-batch loss block fwd+bwd, both renders", bw, bc),
            ("  of which the two renders (fwd+bwd)", rw, rc),
            ("  loss terms and pre-processing alone", bw - rw, bc - rc))
    for name, w, c in rows:
        print(f"{name:46s} wall {w * 1e3:8.1f} ms ({w / nw:.3f} of the step)  CPU {c * 1e3:8.1f} ms "
              f"({c / nc:.3f})")


if __name__ == "__main__":
    main()
