"""``phase=annotate``: regenerate the annotation of every frame of a data set split with a trained checkpoint.

``python train_render.py phase=annotate dataset=icvl|msra|nyu load_model=RUN/latest.pth [annotate_split=train]
[annotate_mesh=npy|obj] [annotate_chunk=256] [annotate_sheet=16]`` (``torchrun`` shards the frames over ranks).

Work is done in chunks of ``annotate_chunk`` frames: each chunk is predicted once (network in eval mode, final
stage) and stored atomically as ``chunks/chunk_NNNNN.npz`` (frame ids, 21 MANO-order joints in mm, the 62
parameters, optionally the mesh). A chunk file that exists is never recomputed, so an interrupted run resumes
where it stopped; under ``torchrun`` every rank takes a contiguous block of chunks (``util.distributed.shard_range``).
When all chunks exist, rank 0 writes the annotation in the data set's own formats (``<run>/annotations/``):

- joints, ready to replace the original label file: ICVL ``train.txt`` / ``test_seq_{1,2}.txt`` (name + 16 x
  (u v d), un-mirrored, CRLF for the test files as the public ones); MSRA ``P<k>/<gesture>/joint.txt`` (count, then
  21 x (x y z) mm, y up, z negative); NYU the community 14-joint uvd file (palm points filled from the MANO joints);
  all data sets also ``joints_uvd.txt`` (community evaluator format, the data set's joint order) and ``frames.txt``;
- ``mano_params.txt``: the 62 parameters per frame (network output: global rotation, 45 PCA pose, 10 shape, scale
  and translation in the normalised crop frame of ``centers_cubes.txt``, as the official ``MANO_result`` files);
  ``centers_cubes.txt``: crop centre C (3) and cube S (3) mm per frame (mesh_mm = V(params) * S / 2 + C);
- meshes (``annotate_mesh``): ``meshes.npy`` (N, 779, 3) float32 mm or one OBJ per frame in ``meshes/``, in the data
  set's original camera frame (ICVL: mirrored back, face winding reversed);
- ``contact_sheet.png``: ``annotate_sheet`` random frames, crop with the original (white) and regenerated (red)
  skeletons; ``annotate.json``: summary.
"""
from __future__ import annotations

import json
import os
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from util.checkpointing import atomic_write

CHUNK_DIR = "chunks"
#: keys of a chunk file
_CHUNK_KEYS = ("frames", "joints21", "theta", "centers", "cubes")


def chunk_path(out_dir: Path, c: int) -> Path:
    return out_dir / CHUNK_DIR / f"chunk_{c:05d}.npz"


def chunk_complete(path: Path, frames: np.ndarray, with_mesh: bool) -> bool:
    """True when ``path`` is a readable chunk for exactly these frame ids (and holds meshes when needed)."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            ok = all(k in z.files for k in _CHUNK_KEYS) and np.array_equal(z["frames"], frames)
            return bool(ok and (not with_mesh or "verts" in z.files))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # truncated / foreign file: redo the chunk
        return False


def _save_chunk(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic: write a temporary file in the same folder, then rename it."""
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _load_chunks(out_dir: Path, n_chunks: int) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {}
    for c in range(n_chunks):
        with np.load(chunk_path(out_dir, c), allow_pickle=False) as z:
            for k in z.files:
                parts.setdefault(k, []).append(z[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


@torch.no_grad()
def predict_chunk(models, ds, indices: range, cfg, device: torch.device, branch: str, with_mesh: bool) -> dict:
    """Final-stage prediction for dataset items ``indices``: frames, joints21 (K, 21, 3) mm, theta (K, 62),
    centers / cubes (K, 3) mm, and verts (K, 779, 3) mm when ``with_mesh``."""
    from torch.utils.data import DataLoader, Subset

    from train_render import stage_joints_mm

    loader = DataLoader(Subset(ds, list(indices)), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=cfg.num_workers)
    acc: dict[str, list] = {}
    for batch in loader:
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        out = models.forward(b["depth"], b)
        final = stage_joints_mm(out, b, models.layer, cfg)[-1]
        acc.setdefault("frames", []).append(np.asarray(batch["index"]))
        acc.setdefault("joints21", []).append(final[branch].double().cpu().numpy())
        acc.setdefault("theta", []).append(final["theta"].double().cpu().numpy())
        acc.setdefault("centers", []).append(batch["center_xyz"].double().numpy())
        acc.setdefault("cubes", []).append(batch["cube"].double().numpy())
        if with_mesh:
            acc.setdefault("verts", []).append(final["verts"].float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in acc.items()}


def annotate(cfg, run_dir: str, dist: Any = None) -> dict:
    """Annotate ``cfg.annotate_split`` of ``cfg.dataset`` with the checkpoint ``cfg.load_model``.

    Returns {'out_dir', 'frames', 'chunks', 'computed', 'skipped' (chunks, summed over ranks), 'files' (rank 0
    only), 'seconds'}.
    Raises ValueError without ``load_model``.
    """
    from tqdm import tqdm

    from dataloader.builders import build_real_dataset
    from train_render import adopt_checkpoint_architecture, build_models, load_network_weights, resolve_device
    from util.distributed import DistInfo, barrier, reduce_mean, shard_range

    if not cfg.load_model:
        raise ValueError("phase=annotate needs a trained checkpoint: pass load_model=<run folder or .pth>")
    if dist is None:
        dev = resolve_device(cfg)
        dist = DistInfo(rank=0, world_size=1, local_rank=0, device=dev)
    device = dist.device
    t0 = time.time()
    cfg = adopt_checkpoint_architecture(cfg, cfg.load_model)
    models = build_models(cfg, device, transfer=False)
    load_network_weights(models.net, cfg.load_model)
    models.net.eval()
    split = cfg.annotate_split
    ds = build_real_dataset(cfg, split, augment=False)
    out_dir = Path(run_dir) / "annotations"
    with_mesh = cfg.annotate_mesh != "none"
    n, size = len(ds), cfg.annotate_chunk
    n_chunks = (n + size - 1) // size
    mine = shard_range(n_chunks, dist)
    computed = skipped = 0
    bar = tqdm(mine, desc=f"annotate {cfg.dataset} {split} (rank {dist.rank})", disable=not dist.is_main,
               dynamic_ncols=True)
    for c in bar:
        idx = range(c * size, min(n, (c + 1) * size))
        frames = np.asarray(ds.frames[idx.start:idx.stop])
        if chunk_complete(chunk_path(out_dir, c), frames, with_mesh):
            skipped += 1
            continue
        res = predict_chunk(models, ds, idx, cfg, device, cfg.annotate_branch, with_mesh)
        _save_chunk(chunk_path(out_dir, c), res)
        computed += 1
    counts = reduce_mean({"computed": float(computed), "skipped": float(skipped)}, dist)  # also a barrier
    computed, skipped = (int(round(counts[k] * dist.world_size)) for k in ("computed", "skipped"))
    summary = {"out_dir": str(out_dir), "frames": n, "chunks": n_chunks, "computed": computed,
               "skipped": skipped, "files": []}
    if dist.is_main:
        data = _load_chunks(out_dir, n_chunks)
        files = write_annotation(out_dir, ds, cfg, data, faces=models.layer.faces_closed.cpu().numpy())
        files.append(contact_sheet(out_dir / "contact_sheet.png", ds, cfg, data))
        summary["files"] = [str(f) for f in files]
        summary["seconds"] = time.time() - t0
        meta = {k: v for k, v in summary.items() if k != "files"} | {
            "dataset": cfg.dataset, "split": split, "checkpoint": cfg.load_model, "branch": cfg.annotate_branch,
            "files": [os.path.relpath(f, out_dir) for f in summary["files"]]}
        (out_dir / "annotate.json").write_text(json.dumps(meta, indent=1))
        print(f"annotated {n} {cfg.dataset} {split} frames ({computed} chunks computed, {skipped} already there) "
              f"-> {out_dir}")
    barrier(dist)
    summary.setdefault("seconds", time.time() - t0)
    return summary


# ----------------------------------------------------------------------------------------------------
# writers in each data set's own format
# ----------------------------------------------------------------------------------------------------
def _mirror_back(ds) -> bool:
    return bool(getattr(ds, "mirror", False))


def write_annotation(out_dir: Path, ds, cfg, data: dict, faces: np.ndarray) -> list[Path]:
    """Write the label / parameter / mesh files of the module docstring from the assembled chunk ``data``."""
    from dataloader.dataset_joints import community_uvd, dataset_joints
    from util.evaluate import save_predictions

    out_dir.mkdir(parents=True, exist_ok=True)
    joints = dataset_joints(data["joints21"], cfg.dataset)  # (N, J, 3) mm, loader frame
    uvd = community_uvd(joints, ds, cfg.camera)  # (N, J, 3) community frame
    files = [out_dir / "joints_uvd.txt", out_dir / "frames.txt", out_dir / "mano_params.txt",
             out_dir / "centers_cubes.txt"]
    save_predictions(files[0], uvd, decimals=3, num_joints=uvd.shape[1])
    names = _frame_names(ds, cfg)
    files[1].write_text("".join(f"{f} {nm}\n" for f, nm in zip(data["frames"], names)))
    np.savetxt(files[2], data["theta"], fmt="%.6f")
    np.savetxt(files[3], np.concatenate([data["centers"], data["cubes"]], 1), fmt="%.4f")
    if cfg.dataset == "icvl":
        from dataloader.icvl import write_icvl_labels

        sources = ds.label_files()
        for src in dict.fromkeys(sources):
            sel = [i for i, s in enumerate(sources) if s == src]
            write_icvl_labels(out_dir / src, [names[i] for i in sel], uvd[sel], crlf=src.startswith("test_seq"))
            files.append(out_dir / src)
    elif cfg.dataset == "msra":
        from dataloader.msra import internal_to_msra_file, write_joint_txt

        keys = ds.frame_keys()
        file_xyz = internal_to_msra_file(joints)
        for folder in dict.fromkeys((s, g) for s, g, _ in keys):
            sel = [i for i, k in enumerate(keys) if k[:2] == folder]
            path = out_dir / f"P{folder[0]}" / folder[1] / "joint.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_joint_txt(path, file_xyz[sel])
            files.append(path)
    else:  # NYU: the community 14-joint file of this view
        path = out_dir / f"nyu_{cfg.annotate_split}_view{cfg.view}_uvd.txt"
        save_predictions(path, uvd, decimals=3)
        files.append(path)
    if cfg.annotate_mesh != "none":
        verts = data["verts"].astype(np.float32)
        f = np.asarray(faces)
        if _mirror_back(ds):  # ICVL: the original (left-hand) frame; mirroring flips the triangle orientation
            verts = verts * np.array([-1.0, 1.0, 1.0], np.float32)
            f = f[:, ::-1]
        if cfg.annotate_mesh == "npy":
            np.save(out_dir / "meshes.npy", verts)
            files.append(out_dir / "meshes.npy")
        else:
            mesh_dir = out_dir / "meshes"
            mesh_dir.mkdir(exist_ok=True)
            for k, (frame, v) in enumerate(zip(data["frames"], verts)):
                path = mesh_dir / f"{int(frame):07d}.obj"
                with open(path, "w") as fh:
                    fh.write("".join(f"v {x:.3f} {y:.3f} {z:.3f}\n" for x, y, z in v))
                    fh.write("".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in f))
            files.append(mesh_dir)
    return files


def _frame_names(ds, cfg) -> list[str]:
    if cfg.dataset == "icvl":
        return list(ds.names)
    if cfg.dataset == "msra":
        from dataloader.msra import frame_name

        return [f"P{s}/{g}/{frame_name(i)}" for s, g, i in ds.frame_keys()]
    return [os.path.basename(str(ds.file_path(i))) for i in range(len(ds))]


def contact_sheet(path: Path, ds, cfg, data: dict, seed: int | None = None) -> Path:
    """PNG grid of ``cfg.annotate_sheet`` random frames: crop, original labels (white), regenerated (red)."""
    from matplotlib.figure import Figure

    from dataloader.dataset_joints import dataset_joints
    from util.geometry import uvd_to_norm_uvd, xyz_to_uvd
    from util.joints import ICVL_BONES, MSRA_BONES, NYU14_BONES

    bones = {"icvl": ICVL_BONES, "msra": MSRA_BONES, "nyu": NYU14_BONES}[cfg.dataset]
    n = min(cfg.annotate_sheet, len(ds))
    if n == 0:
        return path
    picks = sorted(random.Random(cfg.seed if seed is None else seed).sample(range(len(ds)), n))
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(cols * 2.4, rows * 2.4), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    regen = dataset_joints(data["joints21"], cfg.dataset)
    for ax, i in zip(axes, picks):
        item = ds.load(i, None) if hasattr(ds, "load") else ds[i]
        C, S, M = (item[k].double().numpy() for k in ("center_xyz", "cube", "M"))
        size = item["depth"].shape[-1]
        ax.imshow(item["depth"][0].numpy(), cmap="viridis", vmin=-1.0, vmax=1.0)
        new = uvd_to_norm_uvd(xyz_to_uvd(regen[i], cfg.camera), C, S, M, size)
        layers = [(new, "red")]
        if "joints_uvd_norm" in item:
            layers.insert(0, (item["joints_uvd_norm"].numpy(), "white"))
        for joints, color in layers:
            px = (np.asarray(joints)[:, :2] + 1.0) * size / 2.0
            for a, b in bones:
                ax.plot(px[[a, b], 0], px[[a, b], 1], "-", color=color, lw=1.0)
            ax.plot(px[:, 0], px[:, 1], "o", color=color, ms=1.5)
        ax.set_title(f"frame {int(data['frames'][i])}", fontsize=7)
    fig.suptitle("white: original labels, red: regenerated", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
