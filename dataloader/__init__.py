"""Data: real data sets as normalised crops + labels, synthetic MANO renders, and generated stand-in trees.

Real data (items are dicts of named arrays, docs/method.md §3):
    nyu            NYU Hand Pose (``NYUDataset``)
    icvl, msra     ICVL and MSRA with DSF's conventions
    crop           the DeepPrior++ crop and the official depth normalisation
    augment        training augmentation of real crops (rotation, centre shift, cube scale)
    real_sample    one sample from a full frame: crop, augmentation, normalised labels
    depth_io       NYU file formats: depth PNGs, ``joint_data.mat``, centre files (validated)
    nyu_fits       the released NYU MANO fits in the official text format
    nyu_joints     the 36 NYU joints placed on a MANO hand
    dataset_joints MANO-order predictions in each data set's own joints and frame

Synthetic data:
    synthetic      pose sources, ``SyntheticSettings`` and the batched synthetic renderer (docs/method.md §8.2)

Stand-ins (demo and tests):
    standin_nyu, standin_icvl, standin_msra, standin_frames, standin_mismatch, sensor

Wiring:
    builders       the one place where a ``Config`` becomes data sets, loaders, samplers and models
"""
