"""``train_stage=transfer``: train the Consis-CycleGAN translator (synthetic -> real depth) in this repository.

Domain A = synthetic crops rendered on the fly by :func:`dataloader.builders.build_synthetic` (stage
``transfer``: occlusion masks as configured), domain B = real crops of the data set's train split without labels
(:func:`dataloader.builders.build_real_loader`); both (B, 1, S, S) in [-1, 1], background +1. One epoch = one pass
over the real crops (or ``iters_per_epoch`` iterations). Networks, losses and pool: :mod:`model.cyclegan`.

Run folder (``run_dir``):

- ``latest_net_G_A.pth``, ``latest_net_G_B.pth``, ``latest_net_D_A.pth``, ``latest_net_D_B.pth``: plain state
  dicts in the CycleGAN naming and key layout (``transfer_net_path=<run_dir>`` loads G_A into pre-training and
  fine-tuning exactly like the released checkpoint);
- ``latest_transfer_state.pth``: everything needed to resume (the four networks, both optimisers and schedulers,
  both image pools, every RNG, epoch / step, the config) -- ``resume=auto`` or ``resume=<that file or folder>``;
- TensorBoard (``runs/``), ``train.log``, ``train_log.jsonl`` (:class:`util.train_log.TrainLog`): every loss term,
  the consistency metric (docs/method.md §12) and the learning rate every ``log_every`` iterations, image grids
  (synthetic, translated, cycled | real, translated back, cycled) every ``img_log_every`` iterations;
- ``transfer_examples.png``: the same grid at the end.

Every file is written atomically by the main process only.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from model.checkpoint import CheckpointError, read_checkpoint
from model.cyclegan import (
    CycleDiscriminators, CycleGANSettings, CycleGenerators, CycleOutputs, ImagePool, build_cyclegan,
    consistency_metric, discriminator_losses, generator_losses, linear_decay_factor,
)

NET_NAMES = ("G_A", "G_B", "D_A", "D_B")
STATE_FILE = "latest_transfer_state.pth"
EXAMPLES_PNG = "transfer_examples.png"
STATE_FORMAT = "dsf-transfer-state"
#: config keys that may change between a run and its resumption (everything else must match)
RESUME_IGNORE = {"resume", "transfer_epochs", "transfer_decay_epochs", "iters_per_epoch", "log_every",
                 "img_log_every", "num_workers", "device", "output_dir", "run_name", "demo", "phase"}


def net_file(run_dir: str | os.PathLike, name: str) -> Path:
    """``<run_dir>/latest_net_<name>.pth`` (CycleGAN naming)."""
    return Path(run_dir) / f"latest_net_{name}.pth"


def settings_from_config(cfg) -> CycleGANSettings:
    """The ``transfer_*`` config keys as :class:`model.cyclegan.CycleGANSettings`."""
    return CycleGANSettings(ngf=cfg.transfer_ngf, n_blocks=cfg.transfer_n_blocks, ndf=cfg.transfer_ndf,
                            d_layers=cfg.transfer_d_layers, lambda_cycle=cfg.transfer_lambda_cycle,
                            lambda_identity=cfg.transfer_lambda_identity,
                            lambda_consistency=cfg.transfer_consistency,
                            lambda_consistency_b=cfg.transfer_consistency_b)


# ----------------------------------------------------------------------------------------------------
# one iteration
# ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TransferModel:
    """The four networks with their optimisers, schedulers and pools (``gens`` / ``discs`` may be DDP-wrapped;
    ``gens_plain`` / ``discs_plain`` are the modules themselves)."""

    gens: nn.Module
    discs: nn.Module
    gens_plain: CycleGenerators
    discs_plain: CycleDiscriminators
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    sched_G: torch.optim.lr_scheduler.LambdaLR
    sched_D: torch.optim.lr_scheduler.LambdaLR
    pool_A: ImagePool  # history of G_B(real B) for D_B
    pool_B: ImagePool  # history of G_A(real A) for D_A
    settings: CycleGANSettings

    def nets(self) -> dict[str, nn.Module]:
        return {"G_A": self.gens_plain.G_A, "G_B": self.gens_plain.G_B,
                "D_A": self.discs_plain.D_A, "D_B": self.discs_plain.D_B}


def build_transfer_model(settings: CycleGANSettings, *, lr: float, beta1: float, n_epochs: int,
                         n_epochs_decay: int, pool_size: int, device: torch.device | str, seed: int = 0,
                         dist: Any = None) -> TransferModel:
    """Networks on ``device`` (DDP-wrapped when ``dist.distributed``), Adam(lr, (beta1, 0.999)) for the generator
    pair and the discriminator pair, CycleGAN's constant-then-linear schedule, pools seeded from ``seed``."""
    gens, discs = build_cyclegan(settings)
    gens, discs = gens.to(device), discs.to(device)
    gens_w, discs_w = gens, discs
    if dist is not None and getattr(dist, "distributed", False):
        from util.distributed import wrap_ddp

        gens_w, discs_w = wrap_ddp(gens, dist), wrap_ddp(discs, dist)
    opt_G = torch.optim.Adam(gens.parameters(), lr=lr, betas=(beta1, 0.999))
    opt_D = torch.optim.Adam(discs.parameters(), lr=lr, betas=(beta1, 0.999))

    def rule(epoch: int) -> float:
        return linear_decay_factor(epoch, n_epochs, n_epochs_decay)

    return TransferModel(gens_w, discs_w, gens, discs, opt_G, opt_D,
                         torch.optim.lr_scheduler.LambdaLR(opt_G, rule), torch.optim.lr_scheduler.LambdaLR(opt_D, rule),
                         ImagePool(pool_size, seed), ImagePool(pool_size, seed + 1), settings)


def train_step(m: TransferModel, real_A: Tensor, real_B: Tensor) -> tuple[dict[str, float], CycleOutputs]:
    """One CycleGAN iteration (``optimize_parameters``): generators first with the discriminators frozen, then
    both discriminators on real images and pooled fakes.

    Args:
        real_A: (B_a, 1, S, S) synthetic crops; real_B: (B_b, 1, S, S) real crops (same device as the model).
    Returns:
        ({"loss/<term>": value} for every generator and discriminator term, the iteration's images (detached)).
    Raises:
        FloatingPointError: a non-finite loss (the message lists the terms).
    """
    m.gens.train()
    m.discs.train()
    out = m.gens(real_A, real_B)
    m.discs_plain.requires_grad_(False)  # the generator step must not touch D's gradients
    m.opt_G.zero_grad(set_to_none=True)
    g = generator_losses(out, m.discs_plain.D_A, m.discs_plain.D_B, m.settings)
    _check_finite(g, "generator")
    g["total"].backward()
    m.opt_G.step()
    m.discs_plain.requires_grad_(True)
    m.opt_D.zero_grad(set_to_none=True)
    fake_B, fake_A = m.pool_B.query(out.fake_B.detach()), m.pool_A.query(out.fake_A.detach())
    d = discriminator_losses(m.discs(real_B, fake_B, real_A, fake_A))
    _check_finite(d, "discriminator")
    d["total"].backward()
    m.opt_D.step()
    losses = _read_losses(g, d)
    detached = CycleOutputs(**{f.name: (getattr(out, f.name).detach() if getattr(out, f.name) is not None else None)
                               for f in dataclasses.fields(CycleOutputs)})
    return losses, detached


def _read_losses(g: dict[str, Tensor], d: dict[str, Tensor]) -> dict[str, float]:
    """``{"loss/<term>": value}`` of both steps (totals as G_total / D_total), read back in one host sync."""
    names = [f"loss/{k}" for k in g if k != "total"] + [f"loss/{k}" for k in d if k != "total"]
    terms = [v for k, v in g.items() if k != "total"] + [v for k, v in d.items() if k != "total"]
    names += ["loss/G_total", "loss/D_total"]
    terms += [g["total"], d["total"]]
    # float64 holds every float32 / float16 / bfloat16 value exactly: the same numbers as float() per term
    values = torch.stack([v.detach().reshape(()).double() for v in terms]).tolist()
    return dict(zip(names, values))


def _check_finite(terms: dict[str, Tensor], which: str) -> None:
    finite = torch.stack([torch.isfinite(v).all() for v in terms.values()]).tolist()  # one host sync per step
    bad = [k for k, ok in zip(terms, finite) if not ok]
    if bad:
        values = ", ".join(f"{k}={float(terms[k].detach()):.4g}" for k in terms)
        raise FloatingPointError(f"non-finite {which} loss ({', '.join(bad)}): {values}")


# ----------------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------------
def translation_grid(out: CycleOutputs, max_rows: int = 4) -> np.ndarray:
    """(rows * S, 6 * S) float in [0, 1]: per row synthetic | G_A(synthetic) | cycled || real | G_B(real) | cycled.

    Depth -1 (near) is dark, +1 (background) white.
    """
    rows = min(max_rows, out.real_A.shape[0], out.real_B.shape[0])
    cols = [out.real_A, out.fake_B, out.rec_A, out.real_B, out.fake_A, out.rec_B]
    grid = torch.cat([torch.cat([c[r, 0] for c in cols], 1) for r in range(rows)], 0)
    return ((grid.float().cpu().clamp(-1, 1) + 1.0) / 2.0).numpy()


def save_grid_png(path: str | os.PathLike, grid: np.ndarray) -> Path:
    """Write a [0, 1] grayscale grid as an 8-bit PNG (atomically: temp file + rename)."""
    import cv2

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    if not cv2.imwrite(str(tmp), np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)):
        raise OSError(f"could not write {path}")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------------
def save_transfer_checkpoint(run_dir: str | os.PathLike, m: TransferModel, *, epoch: int, step: int,
                             config: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Write the resumable state file first, then the four ``latest_net_*.pth`` exports (each atomically).

    ``epoch`` = completed epochs, ``step`` = completed iterations in total.
    """
    from util.checkpointing import atomic_save, rng_state

    nets = {name: {k: v.detach().cpu() for k, v in net.state_dict().items()} for name, net in m.nets().items()}
    state = {
        "format": STATE_FORMAT, "epoch": int(epoch), "step": int(step), "nets": nets,
        "opt_G": m.opt_G.state_dict(), "opt_D": m.opt_D.state_dict(),
        "sched_G": m.sched_G.state_dict(), "sched_D": m.sched_D.state_dict(),
        "pool_A": m.pool_A.state_dict(), "pool_B": m.pool_B.state_dict(),
        "rng": rng_state(generators), "config": _plain_config(config), "torch_version": str(torch.__version__),
    }
    atomic_save(state, Path(run_dir) / STATE_FILE)
    for name, sd in nets.items():
        atomic_save(sd, net_file(run_dir, name))


def _plain_config(config: dict) -> dict:
    """Tuples as lists (the config survives a weights-only round trip unchanged in meaning)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def load_transfer_checkpoint(path: str | os.PathLike, m: TransferModel, *, config: dict,
                             generators: dict[str, torch.Generator] | None = None,
                             device: torch.device | str = "cpu") -> tuple[int, int]:
    """Restore a :func:`save_transfer_checkpoint` state into ``m`` (and the RNGs); returns (epoch, step).

    Raises:
        FileNotFoundError: no such file.
        model.checkpoint.CheckpointError: not a transfer state file, a config that differs in a key outside
            :data:`RESUME_IGNORE`, or networks / optimisers / pools that do not fit (the message names the file).
    """
    from model.checkpoint import check_state_dict
    from util.checkpointing import check_resume_compatible, set_rng_state

    expected = "a Consis-CycleGAN training state (latest_transfer_state.pth written by train_stage=transfer)"
    state = read_checkpoint(path, expected=expected, map_location="cpu")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not {expected}")
    check_resume_compatible(state["config"], _plain_config(config), RESUME_IGNORE, source=str(path))
    try:
        for name, net in m.nets().items():
            check_state_dict(net, state["nets"][name], source=f"{path} [{name}]", expected=f"the {name} network")
            net.load_state_dict(state["nets"][name])
        m.opt_G.load_state_dict(state["opt_G"])
        m.opt_D.load_state_dict(state["opt_D"])
        m.sched_G.load_state_dict(state["sched_G"])
        m.sched_D.load_state_dict(state["sched_D"])
        m.pool_A.load_state_dict(state["pool_A"], device)
        m.pool_B.load_state_dict(state["pool_B"], device)
        set_rng_state(state["rng"], generators)
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: saved training state does not fit ({type(err).__name__}: {err})") from None
    return int(state["epoch"]), int(state["step"])


# ----------------------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------------------
def _device(cfg, dist) -> torch.device:
    if dist is not None and getattr(dist, "device", None) is not None:
        return torch.device(dist.device)
    if cfg.device:
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _data(cfg, device, dist):
    """(synthetic source, real train loader) of the transfer stage, built from the Config."""
    from dataloader.builders import build_real_loader, build_synthetic

    real_cfg = dataclasses.replace(cfg, augment=cfg.transfer_real_augment)
    real = build_real_loader(real_cfg, "train", train=True, dist=dist, labels=False,
                             batch_size=cfg.transfer_batch_size)
    synthetic = build_synthetic(cfg, device, "transfer", dist=dist, batch_size=cfg.transfer_batch_size)
    return synthetic, real


def train_transfer(cfg, run_dir: str | os.PathLike, dist: Any = None, *, synthetic: Any = None,
                   real_loader: Any = None) -> dict:
    """Train Consis-CycleGAN for ``transfer_epochs + transfer_decay_epochs`` epochs (see the module docstring).

    Args:
        cfg: the Config (``transfer_*`` keys, ``iters_per_epoch``, ``log_every``, ``img_log_every``, ``resume``,
            ``seed``; data keys through the builders).
        run_dir: the run folder (created).
        dist: :class:`util.distributed.DistInfo` or None (single process).
        synthetic: optional domain-A source with ``.next_batch() -> {"depth": (B, 1, S, S), ...}`` (and optionally a
            ``.generator`` to checkpoint); default :func:`dataloader.builders.build_synthetic` (stage 'transfer').
        real_loader: optional iterable of domain-B batches ``{"depth": (B, 1, S, S), ...}``; default the real train
            loader without labels.
    Returns:
        {"run_dir", "generator" (path of latest_net_G_A.pth), "epochs" (completed), "steps" (in total),
        "steps_this_run", "resumed_from" (epoch or None), "losses" (mean of each term over the last epoch),
        "consistency" (mean consistency metric, docs/method.md §12, over the last epoch's logged iterations),
        "seconds"}.
    """
    from tqdm import tqdm

    from util.checkpointing import resolve_resume
    from util.train_log import TrainLog

    t0 = time.time()
    device = _device(cfg, dist)
    is_main = dist is None or getattr(dist, "is_main", True)
    rank = int(getattr(dist, "rank", 0)) if dist is not None else 0
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if synthetic is None or real_loader is None:
        built_syn, built_real = _data(cfg, device, dist)
        synthetic = synthetic if synthetic is not None else built_syn
        real_loader = real_loader if real_loader is not None else built_real
    settings = settings_from_config(cfg)
    m = build_transfer_model(settings, lr=cfg.transfer_lr, beta1=cfg.transfer_beta1, n_epochs=cfg.transfer_epochs,
                             n_epochs_decay=cfg.transfer_decay_epochs, pool_size=cfg.transfer_pool_size,
                             device=device, seed=cfg.seed + 7919 * rank, dist=dist)
    generators = {}
    if isinstance(getattr(synthetic, "generator", None), torch.Generator):
        generators["synthetic"] = synthetic.generator
    if isinstance(getattr(real_loader, "generator", None), torch.Generator):
        generators["real_order"] = real_loader.generator
    config = cfg.to_dict()
    start_epoch, step, resumed = 0, 0, None
    resume_path = resolve_resume(cfg.resume, run_dir, STATE_FILE)
    if resume_path is not None:
        start_epoch, step = load_transfer_checkpoint(resume_path, m, config=config, generators=generators,
                                                     device=device)
        resumed = start_epoch
        if is_main:
            print(f"transfer: resumed from {resume_path} after epoch {start_epoch} (step {step})")
    start_step = step
    total_epochs = cfg.transfer_epochs + cfg.transfer_decay_epochs
    log = TrainLog(run_dir, enabled=is_main)
    means: dict[str, float] = {}
    last: CycleOutputs | None = None
    try:
        for epoch in range(start_epoch, total_epochs):
            sampler = getattr(real_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            sums, consis, n_it = {}, [], 0
            lr = m.opt_G.param_groups[0]["lr"]
            bar = tqdm(real_loader, desc=f"transfer epoch {epoch + 1}/{total_epochs}", disable=not is_main,
                       total=_epoch_len(real_loader, cfg.iters_per_epoch), leave=False)
            for i, batch in enumerate(bar):
                if cfg.iters_per_epoch and i >= cfg.iters_per_epoch:
                    break
                real_B = batch["depth"].to(device, torch.float32)
                real_A = synthetic.next_batch()["depth"].to(device, torch.float32)
                losses, last = train_step(m, real_A, real_B)
                step += 1
                n_it += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                if step % cfg.log_every == 0 or i == 0:
                    metric = float(consistency_metric(last.real_A, last.fake_B))
                    consis.append(metric)
                    log.scalars(step, {**losses, "metric/consistency": metric, "lr": lr})
                    bar.set_postfix(G=f"{losses['loss/G_total']:.3f}", D=f"{losses['loss/D_total']:.3f}",
                                    consis=f"{metric:.4f}")
                if step % cfg.img_log_every == 0:
                    log.image("transfer/grid", step, _rgb(translation_grid(last)))
            bar.close()
            m.sched_G.step()
            m.sched_D.step()
            means = {k: v / max(n_it, 1) for k, v in sums.items()}
            if consis:
                means["metric/consistency"] = float(np.mean(consis))
            log.epoch_line(epoch + 1, {**means, "lr": lr, "iters": n_it})
            if is_main:
                save_transfer_checkpoint(run_dir, m, epoch=epoch + 1, step=step, config=config,
                                         generators=generators)
        if is_main and last is not None:
            grid = translation_grid(last)
            save_grid_png(run_dir / EXAMPLES_PNG, grid)
            log.image("transfer/grid", step, _rgb(grid))
    finally:
        log.close()
    if is_main:
        consis = means.get("metric/consistency")
        print(f"transfer: {total_epochs} epochs, {step} iterations; G_A -> {net_file(run_dir, 'G_A')} (use "
              f"transfer_net_path={run_dir}); last-epoch G loss {means.get('loss/G_total', float('nan')):.4f}, "
              f"D loss {means.get('loss/D_total', float('nan')):.4f}, consistency metric "
              + (f"{consis:.4f}" if consis is not None else "-") + f"; examples: {run_dir / EXAMPLES_PNG}")
    return {"run_dir": str(run_dir), "generator": str(net_file(run_dir, "G_A")),
            "epochs": max(start_epoch, total_epochs), "steps": step, "steps_this_run": step - start_step,
            "resumed_from": resumed,
            "losses": means, "consistency": means.get("metric/consistency"), "seconds": time.time() - t0}


def _epoch_len(loader, cap: int) -> int | None:
    try:
        n = len(loader)
    except TypeError:
        return cap or None
    return min(n, cap) if cap else n


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)
