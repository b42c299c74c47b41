#!/usr/bin/env python3
"""Generate a tiny, release-style ORBIT benchmark folder (frames + extra annotations).

    python make_tree.py [--out tree] [--seed 20240611]

Standalone: numpy + PIL only; no lite_tf import. Deterministic for a given seed
(the output folder is deleted and rewritten).

Layout (as the ORBIT benchmark release):
    <out>/{train,validation,test}/<collector>/<object label, with spaces>/{clean,clutter}/<video>/<frame>.jpg
    <out>/annotations/{train,validation,test}/<video>.json
with video = "<collector>--<slug>--<clean|clutter>--<43-char id>", slug = label with ' ' -> '-',
and frame = "<video>-<5-digit 1-based index>.jpg". Frames are 32x32 RGB JPEGs.

Annotation JSONs follow ORBIT's README ("Extra annotations"):
  clutter: {"object_bounding_box": {"x","y","w","h"} (1080x1080 coords), "object_not_present_issue": false}
           or {"object_bounding_box": null, "object_not_present_issue": true}
  clean:   the seven quality issues true/false; when the object is not present,
           object_not_present_issue=true and the other six are null.
"""
import argparse
import io
import json
import os
import shutil

import numpy as np
from PIL import Image

FRAME_SIZE = 32
ORIG = 1080
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ISSUES = ["object_not_present_issue", "framing_issue", "viewpoint_issue", "blur_issue",
          "occlusion_issue", "overexposed_issue", "underexposed_issue"]

# ---------------------------------------------------------------------------
# Specification.
# clean video:   (n_frames, id_hint, quality)       quality: None (random issues),
#                 'blur_all' (every frame blur=True, framing=False),
#                 'blur_head10' (frames 1-10 blur=True, framing=False, rest random),
#                 'np:<a>-<b>' (frames a..b, 1-based inclusive, object not present; rest random)
# clutter video: (n_frames, id_hint, not_present)   not_present: list of (a, b) 1-based inclusive stretches
# id_hint: None | 'dash_start' | 'underscore_start' | 'double_dash' | 'triple_dash' | 'dash_end'
#          | 'upper:<C>' | 'lower:<c>' | 'digit:<d>'  (first char forced)
# ---------------------------------------------------------------------------
SPEC = {
    "train": {
        "P100": {
            "Mug": {"clean": [(12, None, None), (20, "double_dash", None)],
                    "clutter": [(55, None, [(20, 24)])]},
            "keys": {"clean": [(8, "dash_start", None), (15, None, None), (30, "underscore_start", None)],
                     "clutter": [(40, None, []), (62, "triple_dash", [(1, 4)])]},
            "my black wallet": {"clean": [(25, None, "np:3-6")],
                                "clutter": [(50, None, [])]},
        },
        "P211": {
            "12 measuring cup": {"clean": [(10, None, None), (18, None, None)],
                                 "clutter": [(49, None, []), (70, "dash_end", [(60, 70)])]},
            "t-shirt": {"clean": [(6, None, None), (9, None, None), (52, "lower:z", None)],
                        "clutter": [(60, None, [(10, 12)])]},
        },
    },
    "validation": {
        "P305": {
            "my sennheiser pxc 350-2": {"clean": [(14, None, None), (22, None, None), (55, "lower:z", None)],
                                        "clutter": [(58, "dash_start", [(30, 33)])]},
            "phone": {"clean": [(7, None, None), (11, None, None)],
                      "clutter": [(30, None, []), (42, None, [])]},
            "t shirt": {"clean": [(16, "upper:A", None), (60, "lower:y", None)],
                        "clutter": [(65, None, [(1, 2), (64, 65)]), (35, None, [])]},
        },
    },
    "test": {
        "P131": {
            "12 measuring cup": {"clean": [(9, None, None), (13, None, None), (51, "lower:z", None)],
                                 "clutter": [(52, "underscore_start", [(1, 3)]),
                                             (66, None, [(20, 23), (50, 53)])]},
            "My keys": {"clean": [(5, "upper:B", None), (12, "digit:4", None), (20, "dash_start", None),
                                  (58, "lower:x", None)],
                        "clutter": [(75, "double_dash", [(31, 40)])]},
            # 6 clean videos; ASCII order '-' < digits < upper < '_' < lower.
            # The ASCII-last video ('b...', 70 frames) is the CLE-VE target; a
            # case-insensitive sort would put 'Z...' (20 frames, < 50) last instead.
            "my black wallet": {"clean": [(5, "lower:a", None), (10, "dash_start", None),
                                          (15, "underscore_start", None), (20, "upper:Z", None),
                                          (25, "digit:7", None), (70, "lower:b", "np:31-35")],
                                "clutter": [(64, "triple_dash", [(58, 63)])]},
            "t. v. remote control": {"clean": [(40, None, "blur_head10")],
                                     "clutter": [(57, None, [(5, 6)]), (31, None, [])]},
        },
        "P642": {
            "my sennheiser pxc 350-2": {"clean": [(11, None, None), (24, "dash_end", None)],
                                        "clutter": [(70, None, [(1, 6), (65, 70)])]},
            # every clutter video < 50 valid frames under the challenge filter -> object dropped
            "p939411 white cane": {"clean": [(18, None, None), (27, None, None), (63, "lower:w", None)],
                                   "clutter": [(55, "dash_start", [(10, 19)]),
                                               (60, None, [(1, 5), (30, 39)])]},
            # all clean frames blur=True & framing=False -> no context left under
            # filter_context ['no_blur_issue', 'framing_issue'] -> object dropped
            "t-shirt": {"clean": [(8, None, "blur_all"), (16, None, "blur_all")],
                        "clutter": [(63, None, [(40, 44)])]},
        },
        # every clutter video < 50 valid frames under the challenge filter -> collector dropped
        "P901": {
            "t shirt": {"clean": [(10, None, None), (14, None, None), (50, "lower:v", None)],
                        "clutter": [(56, "double_dash", [(49, 56)])]},
            "water bottle": {"clean": [(12, None, None), (17, "triple_dash", None)],
                             "clutter": [(51, None, [(26, 27)]), (44, None, [])]},
        },
    },
}

# Hand-picked boxes (x, y, w, h) in 1080x1080 coordinates, used for the first
# frames of clutter videos in rotation: borders, overflow (x+w > 1080 / y+h > 1080),
# extreme sizes, and coordinates that are exact multiples of 1080/gcd(1080, s)
# (135 for s=32/224, 90 for s=84), where float32 rounding before truncation matters.
SPECIAL_BOXES = [
    (0, 0, 1080, 1080), (1079, 1079, 1, 1), (0, 540, 135, 1), (540, 0, 1, 540),
    (900, 900, 400, 300), (1000, 20, 1080, 1080), (135, 270, 405, 540), (90, 180, 270, 630),
    (675, 945, 135, 135), (810, 990, 90, 90), (33, 34, 33, 34), (1046, 1046, 34, 34),
    (16, 17, 1064, 1063), (0, 1079, 1080, 1), (1079, 0, 1, 1080), (945, 405, 225, 810),
    (270, 90, 810, 990), (450, 630, 720, 360), (34, 67, 101, 135), (1012, 1013, 68, 67),
]


def make_id(rng, hint):
    chars = list(rng.choice(list(ALPHABET), size=43))
    # keep the base id free of accidental '-' runs at the forced positions' neighbours
    if hint is None:
        pass
    elif hint == "dash_start":
        chars[0] = "-"
    elif hint == "underscore_start":
        chars[0] = "_"
    elif hint == "double_dash":
        chars[9] = chars[10] = "-"
        chars[8] = "q"; chars[11] = "Q"
    elif hint == "triple_dash":
        chars[20] = chars[21] = chars[22] = "-"
        chars[19] = "k"; chars[23] = "K"
    elif hint == "dash_end":
        chars[42] = "-"
    elif ":" in hint:
        chars[0] = hint.split(":")[1]
    else:
        raise ValueError(hint)
    if hint not in ("dash_start", "underscore_start") and ":" not in (hint or ""):
        if chars[0] in "-_":  # keep un-hinted ids from starting with '-'/'_' by accident
            chars[0] = "m"
    return "".join(chars)


def jpeg_bytes(rng, base):
    noise = rng.integers(-4, 5, size=(FRAME_SIZE, FRAME_SIZE, 3))
    arr = np.clip(base[None, None, :] + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=50)
    return buf.getvalue()


def random_box(rng):
    x = int(rng.integers(0, 1080))
    y = int(rng.integers(0, 1080))
    w = int(rng.integers(1, 1081))
    h = int(rng.integers(1, 1081))
    return x, y, w, h


def clean_annotations(rng, frames, quality):
    anns = {}
    np_range = None
    if quality and quality.startswith("np:"):
        a, b = quality[3:].split("-")
        np_range = (int(a), int(b))
    for i, f in enumerate(frames, start=1):
        if np_range and np_range[0] <= i <= np_range[1]:
            d = {k: None for k in ISSUES}
            d["object_not_present_issue"] = True
        else:
            d = {"object_not_present_issue": False}
            for k in ISSUES[1:]:
                d[k] = bool(rng.random() < 0.2)
            if quality == "blur_all" or (quality == "blur_head10" and i <= 10):
                d["blur_issue"] = True
                d["framing_issue"] = False
        anns[f] = d
    return anns


def clutter_annotations(rng, frames, stretches, box_counter):
    anns = {}
    for i, f in enumerate(frames, start=1):
        if any(a <= i <= b for a, b in stretches):
            anns[f] = {"object_bounding_box": None, "object_not_present_issue": True}
        else:
            if i <= 2:  # first two present frames of each clutter video: hand-picked boxes
                x, y, w, h = SPECIAL_BOXES[box_counter[0] % len(SPECIAL_BOXES)]
                box_counter[0] += 1
            else:
                x, y, w, h = random_box(rng)
            anns[f] = {"object_bounding_box": {"x": x, "y": y, "w": w, "h": h},
                       "object_not_present_issue": False}
    return anns


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "tree"))
    ap.add_argument("--seed", type=int, default=20240611)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    box_counter = [0]
    used_ids = set()
    for split in ["train", "validation", "test"]:
        ann_dir = os.path.join(args.out, "annotations", split)
        os.makedirs(ann_dir, exist_ok=True)
        for collector in sorted(SPEC[split]):
            objects = SPEC[split][collector]
            slugs = [o.replace(" ", "-") for o in objects]
            assert len(set(slugs)) == len(slugs), f"slug collision within {collector}"
            for obj in sorted(objects):
                slug = obj.replace(" ", "-")
                base = rng.integers(30, 226, size=3)
                for vtype in ["clean", "clutter"]:
                    for n, hint, extra in objects[obj][vtype]:
                        vid = make_id(rng, hint)
                        while vid in used_ids:
                            vid = make_id(rng, hint)
                        used_ids.add(vid)
                        video = f"{collector}--{slug}--{vtype}--{vid}"
                        vdir = os.path.join(args.out, split, collector, obj, vtype, video)
                        os.makedirs(vdir)
                        frames = [f"{video}-{i:05d}.jpg" for i in range(1, n + 1)]
                        vbase = np.clip(base + rng.integers(-20, 21, size=3), 0, 255)
                        for f in frames:
                            with open(os.path.join(vdir, f), "wb") as fh:
                                fh.write(jpeg_bytes(rng, vbase))
                        if vtype == "clean":
                            anns = clean_annotations(rng, frames, extra)
                        else:
                            anns = clutter_annotations(rng, frames, extra, box_counter)
                        with open(os.path.join(ann_dir, f"{video}.json"), "w") as fh:
                            json.dump(anns, fh)


if __name__ == "__main__":
    main()
