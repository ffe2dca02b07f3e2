"""Gradient flow of DSF's real-batch loss terms, checked against the method's rules (docs/method.md §11, one
fine-tuning iteration: what is detached): which parameter groups each term reaches. A diagnostic of the DSF-claim benchmark
(issue 16: "a detached gradient"): one fine-tuning step's terms, one backward pass each.

Usage: ``.venv/bin/python bench/dsf_grad_flow.py --checkpoint RUN/latest.pth --data-root TREE --mano PKL
[--width 0.25] [--batch 4]`` (prints one row per term: gradient norm per parameter group, and any violation).

Rules (2 stages): the teacher (stage 2) is detached, so no stage-1 real term reaches a stage-2-only parameter;
the pixel-branch distillation terms do not reach the stage-1 MANO head and the MANO terms do not reach the stage-1
pixel head; P2M and the stage-2 model-fitting terms do not reach the stage-2 pixel head (their pixel targets are
detached); M2P does not reach the stage-2 MANO head (its MANO target is detached). Terms that must move their own
branch: pixel distillation -> stage-1 pixel head, MANO distillation -> stage-1 MANO head, P2M and d2m -> stage-2
MANO head, M2P -> stage-2 pixel head (when it selects any pair).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402

import torch  # noqa: E402

GROUPS = ("s1_trunk", "s1_pwe", "s1_mano", "s2_trunk", "s2_pwe", "s2_mano")
STAGE2 = ("s2_trunk", "s2_pwe", "s2_mano")


def group_of(name: str) -> str:
    """Parameter group of a PoseNet parameter name (stage 1: ``pre``, ``layer*``, ``deconv_layer*``, ``finals``,
    ``mano_regress``; stage 2: the same with ``_s2`` plus ``fusion``)."""
    head = name.split(".")[0]
    stage = "s2" if head.endswith("_s2") or head == "fusion" else "s1"
    if head.startswith(("deconv_layer", "finals")):
        return f"{stage}_pwe"
    if head.startswith("mano_regress"):
        return f"{stage}_mano"
    return f"{stage}_trunk"


#: term (middle name + stage) -> (groups that must get no gradient, groups that must get some)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "distil_map/s1": (STAGE2 + ("s1_mano",), ("s1_pwe",)),
    "distil_pwe/s1": (STAGE2 + ("s1_mano",), ("s1_pwe",)),
    "distil_joint/s1": (STAGE2 + ("s1_pwe",), ("s1_mano",)),
    "distil_mesh/s1": (STAGE2 + ("s1_pwe",), ("s1_mano",)),
    "m2d/s1": (STAGE2 + ("s1_pwe",), ()),
    "d2m/s1": (STAGE2 + ("s1_pwe",), ("s1_mano",)),
    "pd2m/s1": (STAGE2 + ("s1_pwe",), ()),
    "coll/s1": (STAGE2 + ("s1_pwe",), ()),
    "p2m/s2": (("s2_pwe",), ("s2_mano",)),
    "m2d/s2": (("s2_pwe",), ()),
    "d2m/s2": (("s2_pwe",), ("s2_mano",)),
    "pd2m/s2": (("s2_pwe",), ()),
    "coll/s2": (("s2_pwe",), ()),
    "m2p/s2": (("s2_mano",), ("s2_pwe",)),  # "must" only when a pair was selected (the term is non-zero)
}


def gradient_flow(net: torch.nn.Module, terms: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """For every ``real/*`` term: the gradient norm it sends into each parameter group (0.0 = none)."""
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    out = {}
    for name, value in terms.items():
        if not name.startswith("real/") or not value.requires_grad:
            if name.startswith("real/"):
                out[name.split("/", 1)[1]] = {g: 0.0 for g in GROUPS}
            continue
        grads = torch.autograd.grad(value, [p for _, p in params], retain_graph=True, allow_unused=True)
        norms = {g: 0.0 for g in GROUPS}
        for (n, _), gr in zip(params, grads):
            if gr is not None:
                norms[group_of(n)] += float(gr.double().pow(2).sum())
        out[name.split("/", 1)[1]] = {g: v ** 0.5 for g, v in norms.items()}
    return out


def violations(flow: dict[str, dict[str, float]], values: dict[str, float]) -> list[str]:
    """Broken rules of :data:`RULES` (``values``: each term's value, to exempt an empty M2P selection)."""
    bad = []
    for term, (zero, some) in RULES.items():
        if term not in flow:
            continue
        for g in zero:
            if flow[term][g] > 0.0:
                bad.append(f"{term} reaches {g} (|grad| {flow[term][g]:.3g}): a target that should be detached")
        active = values.get(term, 0.0) != 0.0
        for g in some:
            if active and flow[term][g] == 0.0:
                bad.append(f"{term} = {values[term]:.3g} but sends no gradient into {g}: a detached prediction")
    return bad


def format_flow(flow: dict[str, dict[str, float]], values: dict[str, float]) -> str:
    head = f"{'term':<16} {'value':>10} " + " ".join(f"{g:>9}" for g in GROUPS)
    rows = [head, "-" * len(head)]
    for term, norms in flow.items():
        rows.append(f"{term:<16} {values.get(term, 0.0):10.3g} " + " ".join(f"{norms[g]:9.2g}" for g in GROUPS))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import train_render as T
    from config import load_config
    from dataloader.builders import build_real_loader, build_synthetic

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="pose checkpoint to start from (e.g. the pre-training's)")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--mano", required=True)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = load_config([f"data_root={args.data_root}", f"mano_path={args.mano}", f"width={args.width}",
                       f"batch_size={args.batch}", "transfer=none", "num_workers=0", "train_stage=finetune",
                       f"seed={args.seed}"])
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    models = T.build_models(cfg, device, transfer=False)
    T.load_network_weights(models.net, args.checkpoint)
    models.net.train()
    syn = build_synthetic(cfg, device, "finetune", mano_layer=models.layer).next_batch()
    real = next(iter(build_real_loader(cfg, "train", train=True)))
    res = T.finetune_step(models, syn, real, cfg, torch.Generator().manual_seed(args.seed))
    values = {k.split("/", 1)[1]: float(v.detach()) for k, v in res.terms.items() if k.startswith("real/")}
    flow = gradient_flow(models.net, res.terms)
    print(format_flow(flow, values))
    print(f"M2P: {res.stats}")
    bad = violations(flow, values)
    print("violations: " + ("none" if not bad else "\n  " + "\n  ".join(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
