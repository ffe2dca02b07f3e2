"""MANO model and rendering: everything between a 62-d MANO vector and a depth crop or a mesh distance.

Runtime modules (what training and inference use):
    mano_io            read MANO_RIGHT.pkl (or its .npz) without chumpy, validated -> ``ManoModel``
    mano_unpickler     the restricted unpickler behind mano_io (only the file's own globals)
    mano_format        sizes fixed by the MANO file format, ``ManoFormatError``
    mano_params        the 62-d DSF parameter layout (``ManoParams``), the one owner of its slices
    mano_layer         MANO as a differentiable torch layer (``ManoLayer``, DSF conventions, mm)
    rasterizer         differentiable hard z-buffer depth rasterizer, rendering straight into a crop
    pytorch3d_backend  optional pytorch3d rasterizer with the same interface (``renderer=pytorch3d``)
    hand_renderer      render a predicted hand into its sample's crop (``HandRenderer``, stage 2 and losses)
    mesh_distance      exact squared point-to-triangle distances (ICP and part-aware ICP)
    mesh_bvh           the numba BVH nearest-triangle search used by mesh_distance
    spheres            the 66-sphere hand model and its collision mask
    constant_check     one-time checks of constant index tensors (no per-call host sync)

Asset generation (demo, tests, benchmarks; not runtime):
    standin            the procedural MANO-format stand-in hand (``python -m render.standin --out PATH``)
"""
