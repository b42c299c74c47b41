#!/usr/bin/env python3
"""Record what microsoft/ORBIT-Dataset's own code reads and reports on the generated tree.

    python make_reference.py --orbit_checkout /path/to/ORBIT-Dataset --tree tree --out reference.json

Run with a Python environment that has ORBIT's dependencies (torch, torchvision, numpy,
pillow, tqdm, thop, timm). ORBIT's code is imported from the checkout (HEAD) and, for the
paper-era parts, from files of commit dc25dae extracted with `git show` into a temporary
folder and imported in a subprocess (no stubs needed). Nothing of ORBIT is copied here.
"""
import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile

import numpy as np

PAPER_COMMIT = "dc25dae"
PAPER_FILES = ["data/__init__.py", "data/transforms.py", "data/datasets.py",
               "utils/__init__.py", "utils/eval_metrics.py"]
HEAD_FILES = ["data/datasets.py", "utils/eval_metrics.py", "utils/ops_counter.py", "utils/logging.py"]
STATS = ["frame_acc", "frames_to_recognition", "video_acc"]
SAMPLING_LENGTHS = [5, 8, 13, 63, 64, 70, 1005]
SEEDS = [0, 1, 2]


def err(e):
    return {"error": f"{type(e).__name__}: {e}"}


def fnum(x):
    x = float(x)
    return "nan" if math.isnan(x) else x


def git(checkout, *a):
    return subprocess.run(["git", "-C", checkout, *a], check=True, capture_output=True,
                          text=True).stdout


# ---------------------------------------------------------------------------
# HEAD loader
# ---------------------------------------------------------------------------
SETTINGS = {  # name: (context_type, target_type, context filter, target filter)
    "clu_ve": ("clean", "clutter", [], []),
    "cle_ve": ("clean", "clean", [], []),
    "challenge": ("clean", "clutter", [], ["no_object_not_present_issue"]),
    "filtered_context": ("clean", "clutter", ["no_blur_issue", "framing_issue"],
                         ["no_object_not_present_issue"]),
}


def make_dataset(tree, split, setting, clip_length=1, frame_size=32, anns=()):
    from data.datasets import UserEpisodicORBITDataset
    ctx, tgt, fc, ft = SETTINGS[setting]
    return UserEpisodicORBITDataset(
        root=os.path.join(tree, split), way_method="max", object_cap=15,
        shot_methods=("max", "max"), shots=(5, 2), video_types=(ctx, tgt), subsample_factor=1,
        clip_methods=("max", "max"), clip_length=clip_length, frame_size=frame_size,
        frame_norm_method="imagenet", annotations_to_load=list(anns),
        filter_by_annotations=[list(fc), list(ft)], test_mode=True, with_cluster_labels=False,
        with_caps=False, logfile=None)


def describe_loader(ds):
    b = os.path.basename
    out = {"users": list(ds.users), "objects": {}, "videos": {}, "frames": {}}
    for u in ds.users:
        out["objects"][u] = [ds.obj2name[o] for o in ds.user2objs[u]]
        out["videos"][u] = {ds.obj2name[o]: {k: [b(v) for v in ds.obj2vids[o][k]]
                                             for k in ("context", "target")}
                            for o in ds.user2objs[u]}
    for v in sorted(ds.video2id, key=ds.video2id.get):
        out["frames"][b(v)] = [b(f) for f in ds.vid2frames[v]]
    return out


def run_loader(tree):
    res = {}
    for setting in SETTINGS:
        res[setting] = {}
        for split in ["train", "validation", "test"]:
            if not os.path.isdir(os.path.join(tree, split)):
                continue
            try:
                res[setting][split] = describe_loader(make_dataset(tree, split, setting))
            except Exception as e:  # noqa: BLE001
                res[setting][split] = err(e)
    return res


# ---------------------------------------------------------------------------
# HEAD annotations
# ---------------------------------------------------------------------------
def ann_value(t):
    t = t.reshape(-1)
    if t.numel() == 1:
        return fnum(t[0])
    return [fnum(v) for v in t.tolist()]


def seed_all(s):
    import torch
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def record_task(task):
    b = os.path.basename
    anns = sorted(task["context_annotations"].keys())
    rec = {"user": task["task_id"], "object_list": list(task["object_list"]),
           "context": {}, "context_labels": {}, "target": {}, "target_labels": {}}
    cpaths = task["context_paths"]  # (num_clips, clip_length)
    for c in range(cpaths.shape[0]):
        f = b(cpaths[c, -1])
        rec["context"][f] = {a: ann_value(task["context_annotations"][a][c]) for a in anns}
        rec["context_labels"][f] = int(task["context_labels"][c])
    for v, (paths, label, va) in enumerate(zip(task["target_paths"], task["target_labels"],
                                               task["target_annotations"])):
        vid = b(os.path.dirname(paths[0]))
        rec["target_labels"][vid] = int(label)
        rec["target"][vid] = {b(p): {a: ann_value(va[a][i]) for a in anns}
                              for i, p in enumerate(paths)}
    return rec


ANN_RUNS = [  # (name, setting, annotations_to_load, clip_length)
    ("clu_ve_bbox_np_blur", "clu_ve", ["object_bounding_box", "object_not_present_issue", "blur_issue"], 1),
    ("cle_ve_bbox_np_blur", "cle_ve", ["object_bounding_box", "object_not_present_issue", "blur_issue"], 1),
    ("clu_ve_np", "clu_ve", ["object_not_present_issue"], 1),
    ("clu_ve_np_blur", "clu_ve", ["object_not_present_issue", "blur_issue"], 1),
    ("cle_ve_np_blur", "cle_ve", ["object_not_present_issue", "blur_issue"], 1),
    ("clu_ve_np_clip8", "clu_ve", ["object_not_present_issue"], 8),
    ("challenge_bbox", "challenge", ["object_bounding_box"], 1),
]


def run_annotations(tree):
    runs = []
    for name, setting, anns, clip_length in ANN_RUNS:
        run = {"name": name, "setting": setting, "annotations_to_load": anns,
               "clip_length": clip_length, "frame_size": 32,
               "seed": "random/np/torch seeded with 0 before construction and before each task"}
        try:
            seed_all(0)
            ds = make_dataset(tree, "test", setting, clip_length=clip_length, anns=anns)
        except Exception as e:  # noqa: BLE001
            run.update({"construction": err(e)})
            runs.append(run)
            continue
        run["tasks"] = []
        for i in range(len(ds)):
            seed_all(0)
            try:
                run["tasks"].append(record_task(ds[i]))
            except Exception as e:  # noqa: BLE001
                run["tasks"].append({"user": ds.users[i], **err(e)})
        runs.append(run)

    # ORBIT's load_annotations applied directly to every kept clutter target video's frames
    # (no images loaded): shows bbox-with-nan behaviour that sample_task cannot reach.
    name = "clu_ve_target_load_annotations_bbox_np"
    anns = ["object_bounding_box", "object_not_present_issue"]
    run = {"name": name, "setting": "clu_ve", "annotations_to_load": anns, "clip_length": 1,
           "frame_size": 32, "call": "ds.load_annotations(np.array(ds.vid2frames[v]).reshape(-1, 1))"
           " for every kept target video v", "videos": {}}
    ds = make_dataset(tree, "test", "clu_ve", anns=anns)
    for u in ds.users:
        for o in ds.user2objs[u]:
            for v in ds.obj2vids[o]["target"]:
                paths = np.array(ds.vid2frames[v]).reshape(-1, 1)
                try:
                    la = ds.load_annotations(paths)
                    run["videos"][os.path.basename(v)] = {
                        os.path.basename(p): {a: ann_value(la[a][i]) for a in sorted(anns)}
                        for i, p in enumerate(paths[:, 0])}
                except Exception as e:  # noqa: BLE001
                    run["videos"][os.path.basename(v)] = err(e)
    runs.append(run)
    return runs


def run_boxes(tree):
    out = {}
    for fs in [32, 84, 224]:
        try:
            ds = make_dataset(tree, "test", "clu_ve", frame_size=fs, anns=["object_bounding_box"])
        except Exception as e:  # noqa: BLE001
            out[str(fs)] = err(e)
            continue
        out[str(fs)] = {f: (None if d["object_bounding_box"] is None
                            else [int(v) for v in d["object_bounding_box"].tolist()])
                        for f, d in sorted(ds.frame2anns.items()) if "object_bounding_box" in d}
    return out


# ---------------------------------------------------------------------------
# HEAD frame sampling (sample_clips_from_a_video), no images needed
# ---------------------------------------------------------------------------
def run_head_sampling():
    from data.datasets import ORBITDataset
    out = {}
    for clip_length in [1, 8]:
        for L in SAMPLING_LENGTHS:
            paths = np.array([f"f{i:05d}" for i in range(1, L + 1)])
            for method, sf, seeds in [("max", 1, [None]), ("uniform", 1, [None]),
                                      ("uniform", 30, [None]), ("random_200", 1, SEEDS)]:
                for s in seeds:
                    ds = ORBITDataset.__new__(ORBITDataset)
                    ds.clip_length, ds.subsample_factor, ds.frame_cap, ds.clip_cap = clip_length, sf, 1000, 200
                    key = f"clip{clip_length}/len{L}/{method}/sf{sf}" + ("" if s is None else f"/seed{s}")
                    if s is not None:
                        random.seed(s)
                    try:
                        idxs = ds.sample_clips_from_a_video(paths, method)
                        rec = {"returned": [int(i) for i in idxs]}
                        try:  # what sample_clips_from_videos then does with them
                            sel = paths[idxs].reshape(-1, clip_length)
                            rec["selected_frames"] = [[int(p[1:]) - 1 for p in row] for row in sel]
                        except Exception as e:  # noqa: BLE001
                            rec["selected_frames"] = err(e)
                    except Exception as e:  # noqa: BLE001
                        rec = err(e)
                    out[key] = rec
    return out


# ---------------------------------------------------------------------------
# Predictions and HEAD metrics
# ---------------------------------------------------------------------------
def make_logit_row(rng, way, cls):
    while True:
        row = rng.normal(0.0, 1.0, size=way)
        row[cls] = np.max(np.delete(row, cls)) + rng.uniform(0.3, 2.0)
        row = np.round(row, 4)
        if len(set(row.tolist())) == way and int(np.argmax(row)) == cls:
            return [float(v) for v in row]


def planned_classes(rng, plan, n, label, way, partner):
    wrong = [c for c in range(way) if c != label]
    if plan == "first_correct":
        return [label] + [int(rng.integers(way)) for _ in range(n - 1)]
    if plan == "none_correct":
        return [int(rng.choice(wrong)) for _ in range(n)]
    if plan == "late":
        k = (3 * n) // 4
        return [int(rng.choice(wrong)) for _ in range(k)] + [label] * (n - k)
    if plan == "tie":
        half = n // 2
        cls = [label] * half + [partner] * half
        if n % 2:
            third = [c for c in range(way) if c not in (label, partner)]
            assert third, "odd tie needs way >= 3"
            cls.append(third[0])
        cls = [int(c) for c in rng.permutation(cls)]
        return cls
    if plan == "random":
        return [int(rng.integers(way)) for _ in range(n)]
    raise ValueError(plan)


def build_predictions(tree):
    ds = make_dataset(tree, "test", "clu_ve")
    rng = np.random.default_rng(12345)
    base = ["first_correct", "none_correct", "tie", "late", "random"]
    preds = []
    path_of = {}
    for ui, u in enumerate(ds.users):
        objs = ds.user2objs[u]
        names = [ds.obj2name[o] for o in objs]
        way = len(objs)
        videos = [(v, li) for li, o in enumerate(objs) for v in ds.obj2vids[o]["target"]]
        for t in range(2):
            k = (2 * t + ui) % len(base)
            plans = [base[(k + j) % len(base)] for j in range(len(videos))]
            # an odd-length tie is impossible with way 2: move the tie to an even-length video
            for j, (v, li) in enumerate(videos):
                if plans[j] == "tie" and way == 2 and len(ds.vid2frames[v]) % 2:
                    for j2, (v2, _) in enumerate(videos):
                        if len(ds.vid2frames[v2]) % 2 == 0:
                            plans[j], plans[j2] = plans[j2], plans[j]
                            break
            task = {"user": u, "task": t, "object_list": names, "videos": []}
            for j, (v, li) in enumerate(videos):
                frames = [os.path.basename(f) for f in ds.vid2frames[v]]
                for f in ds.vid2frames[v]:
                    path_of[os.path.basename(f)] = f
                n = len(frames)
                plan = plans[j]
                # tie partner: smaller index than the label (wrong class wins bincount.argmax)
                # for users 0, larger (label wins) otherwise
                if ui == 0 and li > 0:
                    partner = li - 1
                else:
                    partner = (li + 1) % way if (li + 1) < way else li - 1
                cls = planned_classes(rng, plan, n, li, way, partner)
                logits = [make_logit_row(rng, way, c) for c in cls]
                entry = {"video": os.path.basename(v), "label": li, "plan": plan,
                         "frame_order": "sorted", "padded_rows": 0}
                pad = (-n) % 8
                if t == 1 and j == 0 and pad:
                    # pad to a multiple of 8 with copies of the last frame (as HEAD's
                    # sample_clips_from_a_video does for clip_length 8); the extra rows
                    # predict a class different from the original last row
                    last_cls = cls[-1]
                    other = (last_cls + 1) % way
                    frames = frames + [frames[-1]] * pad
                    logits = logits + [make_logit_row(rng, way, other) for _ in range(pad)]
                    entry["padded_rows"] = pad
                if t == 1 and j == len(videos) - 1:
                    perm = rng.permutation(len(frames))
                    frames = [frames[i] for i in perm]
                    logits = [logits[i] for i in perm]
                    entry["frame_order"] = "shuffled"
                entry["frames"] = frames
                entry["logits"] = logits
                task["videos"].append(entry)
            preds.append(task)
    return preds, path_of


def mean_stats_to_json(ms, stat):
    u, o, t, v = ms
    return {"user": [fnum(x) for x in u[stat]], "object": [fnum(x) for x in o[stat]],
            "task": [fnum(x) for x in t[stat]], "video": [fnum(x) for x in v[stat]]}


def drive_head_evaluator(evaluator, preds, path_of, per_user_cb=None):
    import torch
    users = []
    for p in preds:
        if p["user"] not in users:
            users.append(p["user"])
    by_user = {u: [p for p in preds if p["user"] == u] for u in users}
    for ui, u in enumerate(users):
        tasks = by_user[u]
        for ti, p in enumerate(tasks):
            evaluator.set_task_object_list(p["object_list"])
            for v in p["videos"]:
                evaluator.append_video(torch.tensor(v["logits"], dtype=torch.float32),
                                       torch.tensor(v["label"]),
                                       np.array([path_of[f] for f in v["frames"]]))
            evaluator.task_complete()
            if ti == len(tasks) - 1:  # the learner's (step+1) % num_test_tasks == 0 branch
                evaluator.set_current_user(u)
                if per_user_cb:
                    per_user_cb(u, evaluator)
                if ui < len(users) - 1:
                    evaluator.next_user()
            else:
                evaluator.next_task()


def run_head_metrics(preds, path_of, tmpdir):
    from utils.eval_metrics import TestEvaluator
    current, per_user = {}, {}
    for stat in STATS:
        ev = TestEvaluator([stat], save_dir=os.path.join(tmpdir, stat))
        per_user[stat] = {}

        def cb(u, e, stat=stat):
            try:
                per_user[stat][u] = mean_stats_to_json(e.get_mean_stats(current_user=True), stat)
            except Exception as ex:  # noqa: BLE001
                per_user[stat][u] = err(ex)
        drive_head_evaluator(ev, preds, path_of, cb)
        try:
            current[stat] = mean_stats_to_json(ev.get_mean_stats(), stat)
        except Exception as e:  # noqa: BLE001
            current[stat] = err(e)

    # per-video scores from ORBIT's own per-video stat functions on the deduplicated frames
    ev = TestEvaluator(["frame_acc"], save_dir=os.path.join(tmpdir, "save"))
    drive_head_evaluator(ev, preds, path_of)
    per_video = []
    for ui in range(ev.current_user + 1):
        for ti, (probs_list, labels_list, paths_list) in enumerate(zip(
                ev.all_frame_probs[ui], ev.all_video_labels[ui], ev.all_frame_paths[ui])):
            for probs, label, paths in zip(probs_list, labels_list, paths_list):
                rec = {"user": ev.all_users[ui], "task": ti,
                       "video": os.path.basename(os.path.dirname(paths[0])),
                       "scored_frames": [os.path.basename(p) for p in paths]}
                for stat in STATS:
                    try:
                        rec[stat] = float(ev.stat_fns[stat](label, probs))
                    except Exception as e:  # noqa: BLE001
                        rec[stat] = err(e)
                per_video.append(rec)
    ev.save()
    with open(ev.json_results_path) as fh:
        results_json = json.load(fh)
    return current, per_user, per_video, results_json


# ---------------------------------------------------------------------------
# dc25dae (paper) worker, run in a subprocess with the extracted files on sys.path
# ---------------------------------------------------------------------------
def paper_worker(paper_dir):
    sys.path.insert(0, paper_dir)
    import torch
    from data.datasets import ORBITDataset
    from utils.eval_metrics import TestEvaluator
    payload = json.load(sys.stdin)
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    preds = payload["predictions"]
    head_rows = payload["head_rows"]  # per (user, task, video): rows after HEAD's np.unique

    users = []
    for p in preds:
        if p["user"] not in users:
            users.append(p["user"])

    def drive(stat, rows_of, final_next_user=True):
        ev = TestEvaluator([stat])
        per_user = {}
        for ui, u in enumerate(users):
            for p in [p for p in preds if p["user"] == u]:
                for v in p["videos"]:
                    logits = rows_of(p, v)
                    ev.append(torch.tensor(logits, dtype=torch.float32),
                              torch.full((len(logits),), v["label"], dtype=torch.int64))
            try:
                us, vs = ev.get_mean_stats(current_user=True)
                per_user[u] = {"user": [fnum(x) for x in us[stat]],
                               "video": [fnum(x) for x in vs[stat]]}
            except Exception as e:  # noqa: BLE001
                per_user[u] = err(e)
            if final_next_user or ui < len(users) - 1:
                ev.next_user()
        try:
            us, vs = ev.get_mean_stats()
            overall = {"user": [fnum(x) for x in us[stat]], "video": [fnum(x) for x in vs[stat]]}
        except Exception as e:  # noqa: BLE001
            overall = err(e)
        return overall, per_user

    verbatim = lambda p, v: v["logits"]  # noqa: E731
    dedup = lambda p, v: head_rows[f'{p["user"]}|{p["task"]}|{v["video"]}']  # noqa: E731
    out = {"paper": {}, "paper_per_user": {}, "paper_on_head_frames": {},
           "paper_without_final_next_user": {}}
    for stat in STATS:
        out["paper"][stat], out["paper_per_user"][stat] = drive(stat, verbatim)
        out["paper_on_head_frames"][stat], _ = drive(stat, dedup)
        out["paper_without_final_next_user"][stat], _ = drive(stat, verbatim, final_next_user=False)

    # dc25dae sample_frames, clip_length 8, subsample_factor 1 (no images needed)
    ds = ORBITDataset.__new__(ORBITDataset)
    ds.clip_length, ds.subsample_factor = 8, 1
    sampling = {}
    for L in SAMPLING_LENGTHS:
        paths = [f"f{i:05d}" for i in range(1, L + 1)]
        rec = {}
        sel, n = ds.sample_frames(list(paths), "max")
        rec["max"] = {"num_clips": int(n), "indices": [int(p[1:]) - 1 for p in sel]}
        for nc in [8, 4]:
            rec[str(nc)] = {}
            for s in SEEDS:
                random.seed(s)
                sel, n = ds.sample_frames(list(paths), nc)
                rec[str(nc)][f"seed{s}"] = {"num_clips": int(n), "indices": [int(p[1:]) - 1 for p in sel]}
        sampling[str(L)] = rec
    out["paper_sampling"] = sampling
    json.dump(out, real_stdout)


def run_paper(checkout, preds, head_rows, tmpdir):
    paper_dir = os.path.join(tmpdir, "dc25dae")
    for f in PAPER_FILES:
        os.makedirs(os.path.join(paper_dir, os.path.dirname(f)), exist_ok=True)
        with open(os.path.join(paper_dir, f), "w") as fh:
            fh.write(git(checkout, "show", f"{PAPER_COMMIT}:{f}"))
    proc = subprocess.run([sys.executable, "-B", os.path.abspath(__file__), "--_paper_worker", paper_dir],
                          input=json.dumps({"predictions": preds, "head_rows": head_rows}),
                          capture_output=True, text=True, cwd=paper_dir)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout)


def head_dedup_rows(preds, path_of):
    rows = {}
    for p in preds:
        for v in p["videos"]:
            paths = np.array([path_of[f] for f in v["frames"]])
            _, idx = np.unique(paths, return_index=True)
            rows[f'{p["user"]}|{p["task"]}|{v["video"]}'] = [v["logits"][i] for i in idx]
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orbit_checkout")
    ap.add_argument("--tree", default="tree")
    ap.add_argument("--out", default="reference.json")
    ap.add_argument("--_paper_worker", default=None)
    args = ap.parse_args()
    if args._paper_worker:
        return paper_worker(args._paper_worker)

    checkout = os.path.abspath(args.orbit_checkout)
    sys.dont_write_bytecode = True  # leave the checkout untouched
    sys.path.insert(0, checkout)
    import torch
    import utils.eval_metrics  # noqa: F401  (HEAD; imports utils.ops_counter -> timm, thop)

    ref = {"provenance": {
        "repository": "microsoft/ORBIT-Dataset",
        "commit": git(checkout, "rev-parse", "HEAD").strip(),
        "paper_commit": git(checkout, "rev-parse", PAPER_COMMIT).strip(),
        "command": shlex.join([sys.executable] + sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torchvision": importlib.metadata.version("torchvision"),
        "pillow": importlib.metadata.version("pillow"),
        "timm": importlib.metadata.version("timm"),
        "thop": importlib.metadata.version("thop"),
        "date": datetime.date.today().isoformat(),
        "head_files_match_commit": {f: open(os.path.join(checkout, f)).read() == git(checkout, "show", f"HEAD:{f}")
                                    for f in HEAD_FILES},
        "paper_files": [f"{PAPER_COMMIT}:{f}" for f in PAPER_FILES],
    }}
    tree = args.tree
    ref["loader"] = run_loader(tree)
    ref["annotations"] = run_annotations(tree)
    ref["boxes"] = run_boxes(tree)
    ref["head_sampling"] = run_head_sampling()
    preds, path_of = build_predictions(tree)
    with tempfile.TemporaryDirectory() as tmpdir:
        current, per_user, per_video, results_json = run_head_metrics(preds, path_of, tmpdir)
        paper = run_paper(checkout, preds, head_dedup_rows(preds, path_of), tmpdir)
    ref["metrics"] = {"predictions": preds, "current": current, "current_per_user": per_user,
                      "current_per_video": per_video, "results_json": results_json,
                      "paper": paper["paper"], "paper_per_user": paper["paper_per_user"],
                      "paper_on_head_frames": paper["paper_on_head_frames"],
                      "paper_without_final_next_user": paper["paper_without_final_next_user"]}
    ref["paper_sampling"] = paper["paper_sampling"]
    with open(args.out, "w") as fh:
        json.dump(ref, fh, indent=1, allow_nan=False)
        fh.write("\n")


if __name__ == "__main__":
    main()
