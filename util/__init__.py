"""Shared helpers without model state: constants, geometry, evaluation and run infrastructure.

    camera         per-dataset intrinsics, crop cubes and depth ranges (the one home of these constants)
    joints         joint orders, index maps, reserved MANO vertex ids (the one home of these tables)
    geometry       pure numpy / torch geometry: projection, crop matrix, normalised coordinates, depth normalisation
    evaluate       the community NYU / ICVL / MSRA evaluation protocol (functions and ``python -m util.evaluate``)
    plots          headless evaluation plots (success curves, per-joint errors)
    visualize      PNG figures of crops with skeletons and rendered vs observed depth
    seed           seeding and determinism
    precision      mixed precision on CUDA (bf16 network, float32 geometry)
    distributed    ``torchrun`` helpers (rank info, reductions, sharding, DDP wrapping)
    checkpointing  training checkpoints: atomic writes, exact resume, compatibility checks, rotation
    train_log      TensorBoard / text / image logs of a run folder
    annotate       ``phase=annotate``: write the annotation of a data set split with a trained checkpoint
"""
