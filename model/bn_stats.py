"""Re-estimating BatchNorm running statistics on one domain (opt-in ``bn_recalibration``; docs/DEVIATIONS.md,
"Trainer").

Why: DSF fine-tunes with BN in train mode for both the synthetic and the real forward pass of every iteration, so
the running statistics that the test uses are an exponential average over both domains. When the two domains'
feature statistics differ (here: clean synthetic renders against noisy crops with forearm and wall, without a
trained Consis-CycleGAN in between), the test-time network is normalised with statistics that fit neither, and its
accuracy on the real test split collapses although the weights are fine (docs/BENCHMARKS.md, "BatchNorm statistics
after fine-tuning"). Re-estimating them on unlabelled real training crops (the AdaBN recipe) uses no label.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(net: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer of ``net`` that tracks running statistics."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, batches: Iterable, forward: Callable[[object], object],
                          max_batches: int) -> int:
    """Replace every BN layer's running mean / variance by the plain average over the first ``max_batches`` of
    ``batches`` (each run through ``forward(batch)`` with ``net`` in train mode, no gradient).

    The average weighs every batch equally (PyTorch's cumulative average, ``momentum=None``): with equal batch
    sizes the running mean is the mean over all samples and the running variance the mean of the per-batch
    unbiased variances. Momentum and the train / eval mode of ``net`` are restored; weights are not touched.
    Returns the number of batches used (0 leaves the statistics as they were).
    """
    layers = batchnorm_layers(net)
    if max_batches <= 0 or not layers:
        return 0
    saved = [(m, m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in layers]
    was_training = net.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    used = 0
    try:
        for batch in batches:
            if used >= max_batches:
                break
            forward(batch)
            used += 1
    finally:
        for m, momentum, mean, var, tracked in saved:
            m.momentum = momentum
            if used == 0:  # nothing seen: keep the old statistics rather than the reset ones
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
        net.train(was_training)
    return used


@torch.no_grad()
def average_batchnorm_across_ranks(net: nn.Module) -> None:
    """Mean of every BN layer's running statistics over the ``torch.distributed`` ranks (each rank re-estimated
    them on its own shard), so that the replicas stay identical."""
    import torch.distributed as tdist

    world = tdist.get_world_size()
    for m in batchnorm_layers(net):
        for buf in (m.running_mean, m.running_var):
            tdist.all_reduce(buf)
            buf.div_(world)
        tdist.all_reduce(m.num_batches_tracked, op=tdist.ReduceOp.MAX)


__all__ = ["batchnorm_layers", "recalibrate_batchnorm", "average_batchnorm_across_ranks"]
