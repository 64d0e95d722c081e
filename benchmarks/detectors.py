"""Face detectors side by side: recall, false positives and ms per 640x480 frame.

    python benchmarks/detectors.py [--data ../shared/data] [--per-clip 6] [--per-folder 40] [--mmod] \
        [--json docs/results/detectors.json]

Sets, all from ``../shared/data`` (read-only):

- photos: every photo of people in ``images/`` (``lp_s*``, ``tddfa_*``, ``prnet_test_*``,
  ``d3dfr/*``; paintings, a statue and two cartoon faces included). Found = at least one box;
  extra = boxes beyond the first (``tddfa_emma.jpg`` shows one woman three times).
- animals: the 12 ``lp_s*`` photos of animals (a monkey, dogs, cats, alpacas; listed below,
  checked by eye): every box is a false positive.
- group photo: ``images/group_t1.jpg`` against its 6 faces (boxes checked by eye, below). A face
  counts as found when a box's centre lies in it; a box on no face is a false positive.
- clips: ``--per-clip`` frames spread over every clip in ``videos/``. Every clip shows one face,
  except ``feat_no_face.mp4``, whose every frame is read and where every box is a false positive.
- faces: ``--per-folder`` photos drawn (seed 0) from each folder of ``faces/`` (tight crops of
  one face, 150-256 px).
- speed: ms per call on 60 frames of ``videos/lp_d9.mp4`` letterboxed to 640x480, at the
  OpenCV / dlib default threads, warm-up excluded.

MMOD (dlib's CNN, ~1.5 s a frame) runs only with ``--mmod``. ``--speed-only`` skips the sets
and times the detectors in turn for ``--rounds`` rounds (so a change in the machine's load hits
all of them alike), reporting the median of the rounds' p50s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.benchmark import clip_frames, stats
from streamcap.capture import VideoSource, read_image
from streamcap.detect import FaceDetector

# the 6 faces of group_t1.jpg (1280x886), x0 y0 x1 y1, drawn by eye around each face
GROUP_FACES = np.array([
    [50, 255, 175, 400], [260, 140, 380, 285], [455, 255, 580, 425],
    [740, 340, 855, 480], [895, 45, 1015, 210], [1115, 260, 1230, 405],
], np.float64)
NO_FACE_CLIP = "feat_no_face.mp4"
ANIMALS = {f"lp_s{i}.jpg" for i in (22, 23, 25, 30, 31, 32, 33, 36, 38, 39, 40, 41)}


def detectors(mmod: bool) -> dict[str, FaceDetector]:
    out = {
        "YuNet-s, score 0.7": FaceDetector("yunet", score=0.7),
        "YuNet-s, score 0.8 (default)": FaceDetector("yunet", score=0.8),
        "YuNet-s, score 0.9": FaceDetector("yunet", score=0.9),
        "dlib HOG, upsample 0": FaceDetector("hog", upsample=0),
        "dlib HOG, upsample 1": FaceDetector("hog", upsample=1),
    }
    if mmod:
        out["dlib MMOD, upsample 0"] = FaceDetector("mmod", upsample=0)
    return out


def load_sets(data: Path, per_clip: int, per_folder: int) -> dict[str, list[tuple[str, np.ndarray]]]:
    img = data / "images"
    photos = sorted(p for pat in ("lp_s*.jpg", "tddfa_*.jpg", "prnet_test_*.jpg", "d3dfr/*.jpg")
                    for p in img.glob(pat))
    clips, no_face = [], []
    for clip in sorted((data / "videos").iterdir()):
        with VideoSource(clip) as src:
            n = src.frame_count or 100
            want = set(np.linspace(0, n - 1, per_clip).astype(int).tolist())
            every = clip.name == NO_FACE_CLIP
            got = [(f"{clip.name}#{f.index}", f.image) for f in src if every or f.index in want]
        (no_face if clip.name == NO_FACE_CLIP else clips).extend(got)
    rng = random.Random(0)
    faces = []
    for folder in sorted(p for p in (data / "faces").iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        faces += [(f"{folder.name}/{p.name}", read_image(p)) for p in rng.sample(files, min(per_folder, len(files)))]
    return {"photos": [(p.name, read_image(p)) for p in photos if p.name not in ANIMALS],
            "animals": [(p.name, read_image(p)) for p in photos if p.name in ANIMALS],
            "clips": clips, "no_face": no_face,
            "faces": faces, "group": [("group_t1.jpg", read_image(img / "group_t1.jpg"))]}


def one_face_counts(det: FaceDetector, items) -> dict:
    found = extra = 0
    missed, extras = [], []
    for name, image in items:
        n = len(det.detect(image))
        found += n > 0
        extra += max(0, n - 1)
        if n == 0:
            missed.append(name)
        elif n > 1:
            extras.append(name)
    return {"found": found, "of": len(items), "extra_boxes": extra, "missed": missed, "with_extra": extras}


def group_counts(det: FaceDetector, image: np.ndarray) -> dict:
    boxes = det.detect(image)
    hit = np.zeros(len(GROUP_FACES), bool)
    false_pos = 0
    for b in boxes:
        cx, cy = (b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2
        g = GROUP_FACES
        inside = (g[:, 0] <= cx) & (cx <= g[:, 2]) & (g[:, 1] <= cy) & (cy <= g[:, 3])
        false_pos += not inside.any()
        hit |= inside
    return {"found": int(hit.sum()), "of": len(GROUP_FACES), "false_positives": false_pos}


def speed(det: FaceDetector, frames: list[np.ndarray], warmup: int = 3) -> dict:
    for f in frames[:warmup]:
        det.detect(f)
    times = []
    for f in frames:
        t0 = time.perf_counter()
        det.detect(f)
        times.append((time.perf_counter() - t0) * 1e3)
    return stats(times, digits=2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--per-clip", type=int, default=6)
    ap.add_argument("--per-folder", type=int, default=40)
    ap.add_argument("--mmod", action="store_true", help="also dlib's MMOD CNN (slow)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if args.speed_only:
        frames = clip_frames(args.data / "videos" / "lp_d9.mp4", 60)
        dets = detectors(args.mmod)
        p50s: dict[str, list[float]] = {n: [] for n in dets}
        for _ in range(args.rounds):
            for name, det in dets.items():
                p50s[name].append(speed(det, frames[:10] if det.kind == "mmod" else frames)["p50"])
        for name, v in p50s.items():
            print(f"{name}: {float(np.median(v)):.1f} ms per 640x480 frame (median of {args.rounds} p50s: {v})")
        return 0
    sets = load_sets(args.data, args.per_clip, args.per_folder)
    frames = clip_frames(args.data / "videos" / "lp_d9.mp4", 60)
    rows = {}
    for name, det in detectors(args.mmod).items():
        r = {"group": group_counts(det, sets["group"][0][1]),
             "photos": one_face_counts(det, sets["photos"]),
             "animals_with_a_box": [n for n, im in sets["animals"] if det.detect(im)],
             "clips": one_face_counts(det, sets["clips"]),
             "no_face_boxes": sum(len(det.detect(im)) for _, im in sets["no_face"]),
             "no_face_frames": len(sets["no_face"]),
             "faces": one_face_counts(det, sets["faces"]),
             "ms_640x480": speed(det, frames[:10] if det.kind == "mmod" else frames)}
        rows[name] = r
        print(f"{name}: done", file=sys.stderr)
    print("| detector | group photo (6 faces) | photos of people found | clip frames found | boxes in feat_no_face "
          "| animal photos with a box | face crops found | extra boxes (people photos+clips+crops) "
          "| ms / 640x480 p50 (p99) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        g = r["group"]
        extra = r["photos"]["extra_boxes"] + r["clips"]["extra_boxes"] + r["faces"]["extra_boxes"]
        print(f"| {name} | {g['found']}/6, {g['false_positives']} false | {r['photos']['found']}/{r['photos']['of']} "
              f"| {r['clips']['found']}/{r['clips']['of']} | {r['no_face_boxes']} in {r['no_face_frames']} frames "
              f"| {len(r['animals_with_a_box'])}/{len(ANIMALS)} "
              f"| {r['faces']['found']}/{r['faces']['of']} | {extra} "
              f"| {r['ms_640x480']['p50']:.1f} ({r['ms_640x480']['p99']:.1f}) |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"per_clip": args.per_clip, "per_folder": args.per_folder,
                                         "detectors": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
