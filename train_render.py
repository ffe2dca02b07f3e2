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
    print(f"run folder: {out} (resolved config in config.json); device: {resolve_device(cfg)}")
    if cfg.demo:
        from util.demo import run_demo

        run_demo(cfg, out, resolve_device(cfg))
        return 0
    print("error: the training / test loops are not implemented yet in this version; run with demo=true to "
          "exercise the data -> network -> evaluation pipeline on stand-in assets.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
