"""Consis-CycleGAN training model (docs/DEVIATIONS.md "Consis-CycleGAN"; docs/method.md §12 reconstruction).

Domain A = synthetic crops, domain B = real crops, both (B, 1, S, S) in [-1, 1] with background +1.
CycleGAN conventions (junyanz code): ``G_A: A -> B`` (the translator DSF uses), ``G_B: B -> A``; ``D_A`` judges
domain B (real B vs G_A(A)), ``D_B`` judges domain A (real A vs G_B(B)). Losses: LSGAN adversarial, cycle L1
(``lambda_cycle``), identity L1 (``lambda_identity * lambda_cycle``), plus the **foreground consistency** term of
Consis-CycleGAN: ``lambda_consistency * mean over hand pixels of |G_A(x) - x|`` on synthetic inputs (hand = x below
``fg_threshold``), optionally ``lambda_consistency_b`` times the same for G_B on real inputs.

The pieces are plain modules and functions so that the training loop (:mod:`model.transfer_train`) owns the
optimisers, schedulers, pools and checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from model.transfer_net import build_transfer_discriminator, build_transfer_generator

#: a pixel is "hand" (foreground) when its normalised depth is below this (docs/method.md §12 metric)
FG_THRESHOLD = 0.99


# ----------------------------------------------------------------------------------------------------
# consistency: loss term and metric
# ----------------------------------------------------------------------------------------------------
def foreground_consistency(x: Tensor, y: Tensor, threshold: float = FG_THRESHOLD) -> Tensor:
    """Consis-CycleGAN training term: mean of |y - x| over the foreground pixels of the input x.

    Args:
        x: (B, 1, H, W) input crops in [-1, 1] (foreground = ``x < threshold``).
        y: (B, 1, H, W) translated crops (the generator's output for x).
    Returns:
        scalar: sum over foreground pixels of |y - x| / their number (over the whole batch); 0 when the batch has
        no foreground pixel. Exactly 0 for y = x. Differentiable in y.
    """
    mask = (x < threshold).to(y.dtype)
    count = mask.sum()
    return ((y - x).abs() * mask).sum() / count.clamp_min(1.0)


def consistency_metric(x: Tensor, y: Tensor, threshold: float = FG_THRESHOLD, region: str = "all") -> Tensor:
    """The comparison metric of docs/method.md §12 (lower = the translation keeps the hand's depth values).

    Per sample ``sum_p |y - x| / sum_p [x < t and y < t]`` (L1 change normalised by the number of pixels in the
    intersection of the two foregrounds), averaged over the batch. ``region='all'`` sums the numerator over all
    pixels, as the official comparison routine does; ``region='intersection'`` sums it over the intersection only
    (the "masked L1" reading). A sample with an empty intersection divides by 1 (the official code would divide by
    zero; docs/DEVIATIONS.md).

    Args:
        x, y: (B, 1, H, W) input crops and their translations in [-1, 1].
    Returns:
        scalar tensor (no gradient needed; works with one).
    """
    if region not in ("all", "intersection"):
        raise ValueError(f"region must be 'all' or 'intersection', got {region!r}")
    inter = ((x < threshold) & (y < threshold)).to(y.dtype)
    diff = (y - x).abs()
    if region == "intersection":
        diff = diff * inter
    per_sample = diff.flatten(1).sum(1) / inter.flatten(1).sum(1).clamp_min(1.0)
    return per_sample.mean()


# ----------------------------------------------------------------------------------------------------
# LSGAN and the image pool
# ----------------------------------------------------------------------------------------------------
def lsgan_loss(prediction: Tensor, target_is_real: bool) -> Tensor:
    """CycleGAN ``GANLoss('lsgan')``: mean squared error of the patch scores against 1 (real) or 0 (fake)."""
    target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
    return F.mse_loss(prediction, target)


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al.), used to update the discriminators.

    Rule per image of a query batch: while the pool holds fewer than ``size`` images the image is stored and
    returned; once full, with probability 1/2 a uniformly chosen stored image is returned and replaced by the new
    one, otherwise the new image is returned (and not stored). ``size = 0`` returns the batch unchanged.
    Random draws come from the pool's own generator, so the pool's behaviour is reproducible and resumable
    (:meth:`state_dict`).
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = int(size)
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) (detached inside) -> (B, C, H, W) to show the discriminator."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand((), generator=self.generator)) > 0.5:
                i = int(torch.randint(0, self.size, (), generator=self.generator))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        """Tensors and plain values only (loadable with ``weights_only=True``)."""
        stored = torch.cat(self.images).cpu() if self.images else torch.empty(0)
        return {"size": self.size, "images": stored, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        if int(state["size"]) != self.size:
            raise ValueError(f"image pool size {self.size} != saved {int(state['size'])}")
        stored = state["images"]
        self.images = [stored[i:i + 1].to(device) for i in range(stored.shape[0])] if stored.numel() else []
        self.generator.set_state(state["generator"])


# ----------------------------------------------------------------------------------------------------
# networks and losses of one iteration
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CycleGANSettings:
    """Network sizes and loss weights (config ``transfer_*`` keys). Defaults: CycleGAN + our λ_c
    (docs/DEVIATIONS.md "Consis-CycleGAN")."""

    ngf: int = 64
    n_blocks: int = 9
    ndf: int = 64
    d_layers: int = 3
    lambda_cycle: float = 10.0  # λ_A = λ_B
    lambda_identity: float = 0.5  # identity weight as a fraction of λ_cycle
    lambda_consistency: float = 10.0  # G_A on synthetic input
    lambda_consistency_b: float = 0.0  # G_B on real input (symmetric term, off by default)
    fg_threshold: float = FG_THRESHOLD


@dataclass
class CycleOutputs:
    """All images of one iteration, each (B, 1, S, S): inputs, translations, cycles, identities."""

    real_A: Tensor
    real_B: Tensor
    fake_B: Tensor  # G_A(real_A)
    rec_A: Tensor  # G_B(G_A(real_A))
    fake_A: Tensor  # G_B(real_B)
    rec_B: Tensor  # G_A(G_B(real_B))
    idt_A: Tensor | None  # G_A(real_B) (identity on B), None when the identity weight is 0
    idt_B: Tensor | None  # G_B(real_A)


class CycleGenerators(nn.Module):
    """G_A and G_B with the whole generator forward of one iteration in one call (one DDP forward per step)."""

    def __init__(self, G_A: nn.Module, G_B: nn.Module, identity: bool = True) -> None:
        super().__init__()
        self.G_A, self.G_B, self.identity = G_A, G_B, identity

    def forward(self, real_A: Tensor, real_B: Tensor) -> CycleOutputs:
        fake_B = self.G_A(real_A)
        fake_A = self.G_B(real_B)
        rec_A = self.G_B(fake_B)
        rec_B = self.G_A(fake_A)
        idt_A = self.G_A(real_B) if self.identity else None
        idt_B = self.G_B(real_A) if self.identity else None
        return CycleOutputs(real_A, real_B, fake_B, rec_A, fake_A, rec_B, idt_A, idt_B)


class CycleDiscriminators(nn.Module):
    """D_A (judges domain B) and D_B (judges domain A); ``forward`` scores real and fake images of both in one call.

    Real and fake go through each discriminator as one batch: its instance norm is per sample, so this equals two
    separate calls.
    """

    def __init__(self, D_A: nn.Module, D_B: nn.Module) -> None:
        super().__init__()
        self.D_A, self.D_B = D_A, D_B

    def forward(self, real_B: Tensor, fake_B: Tensor, real_A: Tensor, fake_A: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns patch scores (D_A(real_B), D_A(fake_B), D_B(real_A), D_B(fake_A))."""
        a = self.D_A(torch.cat([real_B, fake_B]))
        b = self.D_B(torch.cat([real_A, fake_A]))
        return a[:real_B.shape[0]], a[real_B.shape[0]:], b[:real_A.shape[0]], b[real_A.shape[0]:]


def build_cyclegan(settings: CycleGANSettings, init_type: str = "xavier", gain: float = 0.02
                   ) -> tuple[CycleGenerators, CycleDiscriminators]:
    """The four networks, initialised like DSF's ``define_G`` (xavier, gain 0.02), on the CPU."""
    def gen() -> nn.Module:
        return build_transfer_generator(ngf=settings.ngf, n_blocks=settings.n_blocks, init_type=init_type, gain=gain)

    def disc() -> nn.Module:
        return build_transfer_discriminator(ndf=settings.ndf, n_layers=settings.d_layers, init_type=init_type,
                                            gain=gain)

    return (CycleGenerators(gen(), gen(), identity=settings.lambda_identity > 0),
            CycleDiscriminators(disc(), disc()))


def generator_losses(out: CycleOutputs, D_A: nn.Module, D_B: nn.Module, s: CycleGANSettings) -> dict[str, Tensor]:
    """Loss terms of the generator step (CycleGAN ``backward_G`` + consistency); ``total`` is their sum.

    Keys: ``G_A``, ``G_B`` (LSGAN, fakes scored as real), ``cycle_A``, ``cycle_B`` (λ·L1), ``idt_A``, ``idt_B``
    (λ_idt·λ·L1), ``consis_A`` (λ_c · foreground consistency of G_A on synthetic input), ``consis_B`` (λ_cB · the
    same for G_B on real input), ``total``. D_A / D_B are the plain (not DDP-wrapped) discriminators.
    """
    zero = out.real_A.new_zeros(())
    terms = {
        "G_A": lsgan_loss(D_A(out.fake_B), True),
        "G_B": lsgan_loss(D_B(out.fake_A), True),
        "cycle_A": F.l1_loss(out.rec_A, out.real_A) * s.lambda_cycle,
        "cycle_B": F.l1_loss(out.rec_B, out.real_B) * s.lambda_cycle,
        "idt_A": (F.l1_loss(out.idt_A, out.real_B) * s.lambda_cycle * s.lambda_identity
                  if out.idt_A is not None else zero),
        "idt_B": (F.l1_loss(out.idt_B, out.real_A) * s.lambda_cycle * s.lambda_identity
                  if out.idt_B is not None else zero),
        "consis_A": (foreground_consistency(out.real_A, out.fake_B, s.fg_threshold) * s.lambda_consistency
                     if s.lambda_consistency > 0 else zero),
        "consis_B": (foreground_consistency(out.real_B, out.fake_A, s.fg_threshold) * s.lambda_consistency_b
                     if s.lambda_consistency_b > 0 else zero),
    }
    terms["total"] = sum(terms.values())
    return terms


def discriminator_losses(scores: tuple[Tensor, Tensor, Tensor, Tensor]) -> dict[str, Tensor]:
    """CycleGAN ``backward_D_basic`` for both: 0.5 (LSGAN(real, 1) + LSGAN(fake, 0)). Keys D_A, D_B, total."""
    real_b, fake_b, real_a, fake_a = scores
    d_a = 0.5 * (lsgan_loss(real_b, True) + lsgan_loss(fake_b, False))
    d_b = 0.5 * (lsgan_loss(real_a, True) + lsgan_loss(fake_a, False))
    return {"D_A": d_a, "D_B": d_b, "total": d_a + d_b}


def linear_decay_factor(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """CycleGAN ``lr_policy='linear'`` (epoch_count = 1): 1 for the first ``n_epochs`` epochs (0-based ``epoch``),
    then ``1 - (epoch + 1 - n_epochs) / (n_epochs_decay + 1)``, reaching 1 / (n_epochs_decay + 1) in the last."""
    return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)
