"""phase=annotate on stand-in splits with an untrained small network: files in each data set's own format that
the loaders read back, and resumption that never rewrites finished chunks."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from config import load_config
from dataloader.dataset_joints import dataset_joints
from dataloader.icvl import ICVLDataset, read_icvl_labels
from dataloader.msra import MSRADataset, read_joint_txt
from dataloader.standin_icvl import generate_standin_icvl
from dataloader.standin_msra import generate_standin_msra
from util.annotate import CHUNK_DIR, annotate
from util.evaluate import PROTOCOLS, load_predictions


def _checkpoint(cfg, path):
    from train_render import build_models

    torch.manual_seed(0)
    models = build_models(cfg, torch.device("cpu"), transfer=False)
    torch.save({"model": models.net.state_dict(), "epoch": 0}, path)
    return path


def _cfg(tmp_path, dataset, root, pkl, *extra):
    """Config of a small untrained network (single stage: no rasteriser compile in the test)."""
    args = [f"dataset={dataset}", f"data_root={root}", f"mano_path={pkl}", "width=0.25", "batch_size=2",
            "num_workers=0", "device=cpu", "transfer=none", "phase=annotate", "annotate_chunk=2", "stage_num=1",
            "annotate_sheet=3", f"output_dir={tmp_path / 'runs'}", *extra]
    cfg = load_config(args)
    ckpt = _checkpoint(cfg, tmp_path / f"{dataset}.pth")
    return load_config(args + [f"load_model={ckpt}"])


@pytest.fixture(scope="module")
def icvl_root(tmp_path_factory):
    return generate_standin_icvl(tmp_path_factory.mktemp("icvl"), n_train=3, n_test=5, seed=1)


@pytest.mark.slow
def test_icvl_annotation_reads_back_and_resumes(tmp_path, icvl_root, standin_pkl):
    cfg = _cfg(tmp_path, "icvl", icvl_root, standin_pkl, "annotate_mesh=npy")
    run = tmp_path / "run"
    res = annotate(cfg, str(run))
    out = run / "annotations"
    assert (res["frames"], res["chunks"], res["computed"], res["skipped"]) == (5, 3, 3, 0)
    theta = np.loadtxt(out / "mano_params.txt")
    assert theta.shape == (5, 62) and np.isfinite(theta).all()
    assert np.load(out / "meshes.npy").shape == (5, 779, 3)
    assert (out / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"
    # the regenerated label files replace the originals: the loader reads them back
    ds = ICVLDataset(icvl_root, "test")
    lab = read_icvl_labels([out / "test_seq_1.txt", out / "test_seq_2.txt"])
    assert list(lab.names) == ds.names
    assert (out / "test_seq_1.txt").read_bytes().count(b"\r\n") == len([n for n in ds.names if "seq_1" in n])
    np.testing.assert_array_equal(
        lab.uvd, load_predictions(out / "joints_uvd.txt", joint_names=PROTOCOLS["icvl"].joint_names))
    tree = tmp_path / "tree"
    shutil.copytree(icvl_root, tree)
    for name in ("test_seq_1.txt", "test_seq_2.txt"):
        shutil.copy(out / name, tree / name)
    back = ICVLDataset(tree, "test")
    chunks = np.concatenate([np.load(out / CHUNK_DIR / f"chunk_{c:05d}.npz")["joints21"] for c in range(3)])
    regen = dataset_joints(chunks, "icvl")  # mm, loader (mirrored) frame
    np.testing.assert_allclose(back.joints_mm(), regen, atol=0.02)  # 3-decimal files
    assert back[0]["joints_xyz_norm"].shape == (16, 3)
    # meshes in ICVL's own (un-mirrored) frame: x negated relative to the loader frame
    verts = np.concatenate([np.load(out / CHUNK_DIR / f"chunk_{c:05d}.npz")["verts"] for c in range(3)])
    np.testing.assert_allclose(np.load(out / "meshes.npy")[..., 0], -verts[..., 0], atol=1e-4)

    # interruption: chunk 1 lost; a rerun recomputes only it and leaves the others untouched
    files = sorted((out / CHUNK_DIR).glob("chunk_*.npz"))
    stamps = {f.name: f.stat().st_mtime_ns for f in files}
    kept = {f.name: f.read_bytes() for f in files}
    (out / CHUNK_DIR / "chunk_00001.npz").unlink()
    res2 = annotate(cfg, str(run))
    assert (res2["computed"], res2["skipped"]) == (1, 2)
    for name in ("chunk_00000.npz", "chunk_00002.npz"):
        assert (out / CHUNK_DIR / name).stat().st_mtime_ns == stamps[name]
    assert (out / CHUNK_DIR / "chunk_00001.npz").read_bytes() == kept["chunk_00001.npz"]  # deterministic
    # a truncated chunk (killed while writing without the atomic rename) is redone too
    (out / CHUNK_DIR / "chunk_00002.npz").write_bytes(kept["chunk_00002.npz"][:100])
    assert annotate(cfg, str(run))["computed"] == 1


def test_msra_annotation_reads_back(tmp_path, standin_pkl):
    root = generate_standin_msra(tmp_path / "msra", 1, ("1", "T"), seed=2)
    cfg = _cfg(tmp_path, "msra", root, standin_pkl, "test_subject=5", "annotate_mesh=obj")
    res = annotate(cfg, str(tmp_path / "run"))
    out = tmp_path / "run" / "annotations"
    assert res["frames"] == 2
    j = [read_joint_txt(out / "P5" / g / "joint.txt") for g in ("1", "T")]
    assert all(x.shape == (1, 21, 3) and (x[..., 2] < 0).all() for x in j)
    assert len(list((out / "meshes").glob("*.obj"))) == 2
    tree = tmp_path / "tree"
    shutil.copytree(root, tree)
    for g in ("1", "T"):
        shutil.copy(out / "P5" / g / "joint.txt", tree / "P5" / g / "joint.txt")
    back = MSRADataset(tree, "test", 5, gestures=("1", "T"), center_type="joint_mean")
    chunks = np.load(out / CHUNK_DIR / "chunk_00000.npz")["joints21"]
    np.testing.assert_allclose(back.joints_mm(), dataset_joints(chunks, "msra"), atol=1e-5)


def test_ranks_take_contiguous_chunk_blocks(tmp_path, standin_pkl, monkeypatch):
    """Two ranks (process group replaced by a no-op barrier): rank 1 computes only its block and writes no final
    files; rank 0 computes the rest and assembles everything."""
    import util.distributed as distributed
    from util.distributed import DistInfo

    monkeypatch.setattr(distributed, "barrier", lambda info: None)
    # each "rank" runs alone here: its own counts stand for the sum over ranks
    monkeypatch.setattr(distributed, "reduce_mean",
                        lambda values, info: {k: float(v) / info.world_size for k, v in values.items()})
    root = generate_standin_msra(tmp_path / "msra", 1, ("1", "T", "Y"), seed=3)
    cfg = _cfg(tmp_path, "msra", root, standin_pkl, "test_subject=0", "annotate_chunk=1", "annotate_sheet=0")
    run = tmp_path / "run"
    cpu = torch.device("cpu")
    r1 = annotate(cfg, str(run), DistInfo(rank=1, world_size=2, local_rank=1, device=cpu))
    chunks = run / "annotations" / CHUNK_DIR
    assert r1["computed"] == 1 and sorted(p.name for p in chunks.iterdir()) == ["chunk_00002.npz"]
    assert not (run / "annotations" / "joints_uvd.txt").exists()
    r0 = annotate(cfg, str(run), DistInfo(rank=0, world_size=2, local_rank=0, device=cpu))
    assert r0["computed"] == 2 and (run / "annotations" / "joints_uvd.txt").is_file()
    assert len(np.loadtxt(run / "annotations" / "mano_params.txt")) == 3


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path, standin_pkl):
    """``torchrun --nproc_per_node=2 train_render.py phase=annotate``: every chunk written once, by its rank, with
    the same numbers as a single-process run."""
    from pathlib import Path

    from tests.launch import run_torchrun

    repo = Path(__file__).resolve().parents[2]
    root = generate_standin_msra(tmp_path / "msra", 1, ("1", "T", "Y"), seed=4)
    cfg = _cfg(tmp_path, "msra", root, standin_pkl, "test_subject=2", "annotate_chunk=1", "annotate_sheet=0")
    single = annotate(cfg, str(tmp_path / "one"))
    assert single["computed"] == 3
    args = [f"{k}={getattr(cfg, k)}" for k in ("dataset", "data_root", "mano_path", "width", "stage_num",
                                                "batch_size", "num_workers", "transfer", "load_model",
                                                "test_subject", "annotate_chunk", "annotate_sheet")]
    run_torchrun(repo / "train_render.py", "phase=annotate", f"output_dir={tmp_path / 'two'}", "run_name=r", *args,
                 timeout=300)
    out = tmp_path / "two" / "msra" / "r" / "annotations"
    meta = __import__("json").loads((out / "annotate.json").read_text())
    assert (meta["computed"], meta["skipped"]) == (3, 0)
    for c in range(3):
        a = np.load(out / CHUNK_DIR / f"chunk_{c:05d}.npz")
        b = np.load(tmp_path / "one" / "annotations" / CHUNK_DIR / f"chunk_{c:05d}.npz")
        np.testing.assert_allclose(a["joints21"], b["joints21"], atol=1e-6)
    assert (out / "joints_uvd.txt").read_text() == (tmp_path / "one" / "annotations" / "joints_uvd.txt").read_text()
