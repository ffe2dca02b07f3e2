"""Joint orders, index maps and reserved MANO vertex ids — the one home of every such table.

MANO / network joint order (J = 21, the official DSF order)::

                 16(I tip) 17(M tip) 19(R tip) 18(L tip)
                    3         6         12        9          20 (T tip)
                    2         5         11        8        15 (T IP)
                    1         4         10        7      14 (T MCP)
                     \\        |         |        /      13 (T CMC)
                      `------ 0 (wrist) --------'-------'

    0 wrist; 1-3 index MCP/PIP/DIP; 4-6 middle; 7-9 pinky (little); 10-12 ring; 13-15 thumb CMC/MCP/IP;
    16..20 tips of index, middle, pinky, ring, thumb (vertices appended to the regressor).

NYU: 36 annotated joints in ``joint_data.mat``; the community evaluates 14 of them (``NYU_EVAL_14``).
"""
from __future__ import annotations

# --- MANO (native 16 joints + 5 tips) -------------------------------------------------------------
# (the model file's sizes -- 778 vertices, 1538 faces, 16 native joints -- live in render.mano_format)
NUM_JOINTS = 21
#: parent of each native joint; -1 for the root (kintree_table row 0 with 2**32-1 mapped to -1)
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
#: the "child" of finger joints 1..15 (bone b = joint b+1 -> MANO_CHILDREN[b])
MANO_CHILDREN = (2, 3, 16, 5, 6, 17, 8, 9, 18, 11, 12, 19, 14, 15, 20)
#: vertices used as fingertips (joints 16..20): index, middle, pinky, ring, thumb (DSF, after Baek et al.)
FINGERTIP_VERTEX_IDS = (333, 444, 672, 555, 744)
#: the 16-vertex wrist boundary loop in DSF's cyclic order; closed with a centre vertex (id 778) and 16 fan faces
WRIST_LOOP_VERTEX_IDS = (121, 214, 215, 279, 239, 234, 92, 38, 122, 118, 117, 119, 120, 108, 79, 78)
MANO_JOINT_NAMES = (
    "wrist",
    "index_mcp", "index_pip", "index_dip",
    "middle_mcp", "middle_pip", "middle_dip",
    "pinky_mcp", "pinky_pip", "pinky_dip",
    "ring_mcp", "ring_pip", "ring_dip",
    "thumb_cmc", "thumb_mcp", "thumb_ip",
    "index_tip", "middle_tip", "pinky_tip", "ring_tip", "thumb_tip",
)
#: parts used by segmentation / part-aware ICP: part p (1..15) = bone p-1 = phalanx starting at joint p
NUM_PARTS = 15
#: tips 16..20 belong to the distal parts 3, 6, 9, 12, 15 (used by the M2P joint reliability mask)
TIP_PARTS = (3, 6, 9, 12, 15)

# --- maps from MANO order to dataset orders (MANO index for each target joint, in target order) ------
MANO_TO_NYU = (18, 8, 19, 11, 17, 5, 16, 2, 20, 15, 14, 0)  # 12 of NYU-14 (PALM_2 / PALM_3 unmapped)
MANO_TO_ICVL = (0, 13, 14, 15, 1, 2, 3, 4, 5, 6, 10, 11, 12, 7, 8, 9)
MANO_TO_MSRA = (0, 1, 2, 3, 16, 4, 5, 6, 17, 10, 11, 12, 19, 7, 8, 9, 18, 13, 14, 15, 20)
MANO_TO_BIGHAND = (0, 13, 1, 4, 10, 7, 14, 15, 20, 2, 3, 16, 5, 6, 17, 11, 12, 19, 8, 9, 18)

# --- NYU -------------------------------------------------------------------------------------------
NYU_JOINT_NAMES_36 = tuple(
    [f"{f}_{k}" for f in ("F1", "F2", "F3", "F4", "TH")
     for k in ("KNU3_A", "KNU3_B", "KNU2_A", "KNU2_B", "KNU1_A", "KNU1_B")]
    + [f"PALM_{i}" for i in range(1, 7)]
)  # F1 = pinky, F2 = ring, F3 = middle, F4 = index, TH = thumb
#: the 14 evaluation joints (ids into the 36): pinky tip/PIP, ring tip/PIP, middle tip/PIP, index tip/PIP,
#: thumb tip/IP/MCP, PALM_1 (wrist back), PALM_2 (wrist), PALM_3 (palm centre)
NYU_EVAL_14 = (0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32)
NYU_EVAL_14_NAMES = (
    "Pinky.T", "Pinky.R", "Ring.T", "Ring.R", "Mid.T", "Mid.R", "Index.T", "Index.R",
    "Thumb.T", "Thumb.R2", "Thumb.R1", "Wrist2", "Wrist1", "Palm",
)
#: DSF's own metric uses the first 11 of the 14 (the three palm/wrist points have no MANO counterpart)
NYU_DSF_11 = tuple(range(11))
#: the 36-ids that give the 21 MANO-order joints (for MANO-order labels of NYU frames)
NYU36_TO_MANO21 = (31, 23, 21, 19, 17, 15, 13, 5, 3, 1, 11, 9, 7, 28, 27, 25, 18, 12, 0, 6, 24)
#: the standard NYU test set: 8252 frames; the second sequence (frames >= 2440) uses cube * 5/6
NYU_TEST_FRAMES = 8252
NYU_TEST_SPLIT = 2440
NYU_TRAIN_FRAMES = 72757

# --- skeleton edges for drawing (pairs of indices in the 14-joint NYU order) ------------------------
NYU14_BONES = ((0, 1), (1, 13), (2, 3), (3, 13), (4, 5), (5, 13), (6, 7), (7, 13), (8, 9), (9, 10),
               (10, 13), (11, 13), (12, 13))
MANO21_BONES = tuple((p, c) for c, p in enumerate(MANO_PARENTS) if p >= 0) + (
    (3, 16), (6, 17), (9, 18), (12, 19), (15, 20))

# --- ICVL (Tang et al. 2014; community evaluator order) ---------------------------------------------
#: 16 labelled joints: palm, then root / middle / tip of thumb, index, middle, ring, pinky
ICVL_JOINT_NAMES = (
    "Palm", "Thumb.R", "Thumb.M", "Thumb.T", "Index.R", "Index.M", "Index.T", "Mid.R", "Mid.M", "Mid.T",
    "Ring.R", "Ring.M", "Ring.T", "Pinky.R", "Pinky.M", "Pinky.T",
)
#: frames of the two test sequences (test_seq_1.txt, test_seq_2.txt), evaluated in this order
ICVL_TEST_SEQ_FRAMES = (702, 894)
#: DSF's own test compares the first J - 1 mapped joints (its NYU slicing applied to ICVL: Pinky.T dropped)
ICVL_DSF_JOINTS = tuple(range(15))
#: per-joint depth offsets (mm) the official trainer subtracts from ICVL predictions before scoring; kept only
#: for a separate, labelled column (docs/DEVIATIONS.md "Datasets ICVL/MSRA"), never inside a metric
ICVL_DSF_DEPTH_BIAS_MM = (20.0, 22.0, 13.5, 7.5, 12.5, 12.5, 3.0, 12.5, 12.5, 8.0, 16.0, 12.5, 3.0, 13.0, 7.3, 6.0)
ICVL_BONES = ((0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 9), (0, 10), (10, 11),
              (11, 12), (0, 13), (13, 14), (14, 15))

# --- MSRA (Sun et al. 2015; community evaluator order) ----------------------------------------------
#: 21 joints: wrist, then MCP / PIP / DIP / tip of index, middle, ring, pinky (little), thumb
MSRA_JOINT_NAMES = ("Wrist",) + tuple(
    f"{finger}.{k}" for finger in ("Index", "Mid", "Ring", "Pinky", "Thumb") for k in ("M", "P", "D", "T"))
MSRA_SUBJECTS = 9
#: gesture folders of every subject, in the order frames are enumerated (community test list, DSF loader)
MSRA_GESTURES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "I", "IP", "L", "MP", "RP", "T", "TIP", "Y")
#: frames per subject P0..P8 in the community test list (76,375 in all; the 9 folds concatenated)
MSRA_SUBJECT_FRAMES = (8499, 8492, 8412, 8488, 8500, 8497, 8497, 8498, 8492)
#: DSF's own test: the first J - 1 joints (thumb tip dropped), then its MSRA branch also drops the wrist
MSRA_DSF_JOINTS = tuple(range(1, 20))
MSRA_BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
              (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
