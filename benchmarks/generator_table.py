"""Generator accuracy side by side: model bundles and the 3DDFA_V2 teacher, on held-out people.

    python benchmarks/generator_table.py --corpus .cache/corpus --profiles .cache/corpus_valprof \\
        --bundle streamcap/models/light128 --bundle streamcap/models/mobile160 \\
        --json docs/results/generator_table.json

Three measures, each for every ``--bundle`` and the teacher:

1. **NME vs labels** (68 points, 2D and 3D after removing mean depth, / sqrt(w*h) of the label's
   landmark box), per |yaw| bin and balanced, on the held-out split of the labelled corpus
   (real photos and frames) and on its profiled copy (``trainer/data/profile.py --split val``).
   Models crop from the label's landmarks, as the AFLW2000-3D protocol does. The labels are the
   teacher's, so the teacher has no row here.
2. **d3dfr 5-point NME** against the human annotation of ``images/d3dfr`` (eye centres, nose tip,
   mouth corners), normalised by sqrt(w*h) of the teacher's 68-point box. Models crop from the
   teacher's landmarks; dlib is beside them.
3. **Mouth and eye opening over time** on the held-out clips, against dlib's 68 points on every
   ``--stride``-th frame: Pearson correlation and amplitude ratio std(method) / std(dlib). Mouth
   opening is the inner-lip gap (points 62-66) over the inter-ocular distance; eye opening the
   mean lid gap over eye width. Models track from their own previous landmarks (the first frame
   from dlib's); the teacher tracks the way 3DDFA_V2 does (its previous landmarks).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import load_bundle
from streamcap.commands.common import write_json
from streamcap.engine import create_engine
from streamcap.evaluate import format_table, nme2d, nme3d, summarise, yaw_bin
from streamcap.reconstruct import Reconstructor
from trainer.data.build_dataset import Dlib68, five_from68
from trainer.data.teacher_3ddfa import Teacher3DDFA

HELD_OUT_CLIPS = ("lia_vox1", "vr_1", "pexels_wolfgang", "lp_d19", "iplap_129")


def load_heldout(folder: Path, limit: int) -> dict[str, np.ndarray]:
    from trainer.data.dataset import load_corpus

    d = load_corpus(folder.parent if folder.name == "shards" else folder, "val")
    n = min(limit or len(d["label"]), len(d["label"]))
    return {**{k: d[k][:n] for k in ("label", "yaw", "kind")}, "jpeg": d["jpeg"], "offsets": d["offsets"][: n + 1]}


def label_landmarks(label: np.ndarray, basis: dict, kpt_vertex: np.ndarray) -> np.ndarray:
    a, b, c = label[:9].reshape(3, 3), label[9:12], label[12:62]
    v = basis["mean"][kpt_vertex] + basis["basis"][kpt_vertex] @ c
    return (v @ a.T + b).astype(np.float32)


def nme_vs_labels(data: dict, basis: dict, recs: dict[str, Reconstructor]) -> dict:
    errs = {name: ([[], [], []], [[], [], []]) for name in recs}
    for i in tqdm(range(len(data["label"])), desc="held-out", unit="img", leave=False):
        img = cv2.imdecode(data["jpeg"][data["offsets"][i]:data["offsets"][i + 1]], cv2.IMREAD_COLOR)
        any_rec = next(iter(recs.values()))
        gt = label_landmarks(data["label"][i], basis, any_rec.layout.kpt_vertex)
        b = yaw_bin(float(data["yaw"][i]))
        for name, rec in recs.items():
            out = rec.run(img, rec.crops_for([gt[:, :2]]), texture=False)[0]
            errs[name][0][b].append(nme2d(out.landmarks, gt))
            errs[name][1][b].append(nme3d(out.landmarks, gt))
    return {name: summarise(e2, e3, 0) for name, (e2, e3) in errs.items()}


def five_point(data_root: Path, recs: dict[str, Reconstructor], teacher: Teacher3DDFA, dl: Dlib68,
               detector) -> dict:
    res: dict[str, list[float]] = {k: [] for k in [*recs, "teacher", "dlib"]}
    for img_path in sorted(p for p in (data_root / "images" / "d3dfr").iterdir() if p.suffix in (".jpg", ".png")):
        ref = np.loadtxt(img_path.with_suffix(".txt"), dtype=np.float32).reshape(5, 2)
        img = cv2.imread(str(img_path))
        box = detector.largest(img)
        if box is None:
            continue
        t_lm = teacher.landmarks(teacher.fit(img, box))
        wh = np.ptp(t_lm[:, :2], 0)
        norm = float(np.sqrt(wh[0] * wh[1]))
        res["teacher"].append(float(np.linalg.norm(five_from68(t_lm) - ref, axis=1).mean() / norm))
        for name, rec in recs.items():
            out = rec.run(img, rec.crops_for([t_lm[:, :2]]), texture=False)[0]
            res[name].append(float(np.linalg.norm(five_from68(out.landmarks) - ref, axis=1).mean() / norm))
        d68 = dl.near(img, np.r_[t_lm[:, :2].min(0), t_lm[:, :2].max(0)])
        if d68 is not None:
            res["dlib"].append(float(np.linalg.norm(five_from68(d68) - ref, axis=1).mean() / norm))
    return {k: {"nme": float(np.mean(v)) if v else None, "n": len(v)} for k, v in res.items()}


def openings(lm: np.ndarray) -> tuple[float, float]:
    """Mouth opening (inner-lip gap / inter-ocular distance) and eye opening (lid gap / eye width)."""
    io = float(np.linalg.norm(lm[36:42, :2].mean(0) - lm[42:48, :2].mean(0)))
    mouth = float(np.linalg.norm(lm[62, :2] - lm[66, :2])) / io
    eyes = []
    for a, b, c, d, left, right in ((37, 41, 38, 40, 36, 39), (43, 47, 44, 46, 42, 45)):
        gap = np.linalg.norm(lm[a, :2] - lm[b, :2]) + np.linalg.norm(lm[c, :2] - lm[d, :2])
        eyes.append(gap / (2 * np.linalg.norm(lm[left, :2] - lm[right, :2])))
    return mouth, float(np.mean(eyes))


def clip_openings(path: Path, recs: dict[str, Reconstructor], teacher: Teacher3DDFA, dl: Dlib68,
                  stride: int, max_frames: int) -> dict:
    series: dict[str, list[tuple[float, float]]] = {k: [] for k in [*recs, "teacher", "dlib"]}
    prev: dict[str, np.ndarray | None] = {k: None for k in [*recs, "teacher"]}
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i >= max_frames:
                break
            img = frame.to_ndarray(format="bgr24")
            ref_box = None
            if prev["teacher"] is not None:
                ref_box = np.r_[prev["teacher"][:, :2].min(0), prev["teacher"][:, :2].max(0)]
            d68 = dl.near(img, ref_box) if ref_box is not None else dl.first(img)
            if d68 is None:
                prev = {k: None for k in prev}
                continue
            for name in prev:
                seed = prev[name] if prev[name] is not None else d68
                if name == "teacher":
                    lm = teacher.landmarks(teacher.fit(img, landmarks=seed))
                else:
                    rec = recs[name]
                    lm = rec.run(img, rec.crops_for([seed[:, :2]]), texture=False)[0].landmarks
                    if prev[name] is None:  # settle the first crop on the model's own points
                        lm = rec.run(img, rec.crops_for([lm[:, :2]]), texture=False)[0].landmarks
                prev[name] = lm
                if i % stride == 0:
                    series[name].append(openings(lm))
            if i % stride == 0:
                series["dlib"].append(openings(d68))
    ref = np.asarray(series["dlib"])
    out = {}
    for name, s in series.items():
        if name == "dlib" or len(s) < 3:
            continue
        s = np.asarray(s)
        row = {"frames": len(s)}
        for j, what in enumerate(("mouth", "eye")):
            row[f"{what}_corr"] = float(np.corrcoef(s[:, j], ref[:, j])[0, 1])
            row[f"{what}_amplitude"] = float(s[:, j].std() / max(ref[:, j].std(), 1e-9))
        out[name] = row
    return out


class _Dlib(Dlib68):
    def first(self, bgr: np.ndarray) -> np.ndarray | None:
        """68 points of the largest face dlib finds."""
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        rects = self.det(rgb, 0)
        if not rects:
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        return np.array([[p.x, p.y] for p in self.sp(rgb, r).parts()], np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--corpus", type=Path, default=Path(".cache/corpus"))
    ap.add_argument("--profiles", type=Path, default=None, help="label_corpus-format folder of profiled val shards")
    ap.add_argument("--bundle", type=Path, action="append", required=True)
    ap.add_argument("--clips", nargs="*", default=list(HELD_OUT_CLIPS))
    ap.add_argument("--limit", type=int, default=2000, help="held-out samples per set (0: all)")
    ap.add_argument("--stride", type=int, default=2, help="clip frames: every N-th is measured")
    ap.add_argument("--max-frames", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from trainer.data.label_corpus import Detector

    recs = {}
    for path in args.bundle:
        b = load_bundle(path)
        recs[b.name] = Reconstructor(b, create_engine(b, "ort", threads=args.threads))
    with np.load(args.corpus / "uv_basis.npz") as z:
        basis = {"mean": z["mean"], "basis": z["basis"]}
    teacher = Teacher3DDFA(args.data / "teacher_3ddfa_v2", threads=args.threads)
    dl = _Dlib()
    detector = Detector(args.data / "detectors" / "yunet_s_640_640.onnx")
    out: dict = {"bundles": list(recs)}

    real = load_heldout(args.corpus, args.limit)
    out["real"] = nme_vs_labels(real, basis, recs)
    print(f"held-out real photos and frames ({len(real['label'])}): NME vs the teacher's labels")
    print(format_table(out["real"]))
    if args.profiles:
        prof = load_heldout(args.profiles, args.limit)
        out["profiled"] = nme_vs_labels(prof, basis, recs)
        print(f"\nheld-out profiled ({len(prof['label'])}): NME vs the rotated labels")
        print(format_table(out["profiled"]))
    out["five_point"] = five_point(args.data, recs, teacher, dl, detector)
    print("\nd3dfr 5-point NME vs human annotation:",
          {k: (f"{v['nme'] * 100:.2f}%" if v["nme"] is not None else None, v["n"])
           for k, v in out["five_point"].items()})
    out["clips"] = {}
    for clip in args.clips:
        path = next((p for p in (args.data / "videos").glob(f"{clip}.*")), None)
        if path is None:
            continue
        out["clips"][clip] = clip_openings(path, recs, teacher, dl, args.stride, args.max_frames)
    print("\nopening vs dlib (corr / amplitude ratio), per clip:")
    for clip, rows in out["clips"].items():
        for name, r in rows.items():
            print(f"  {clip:<16}{name:<12} mouth {r['mouth_corr']:.3f} / {r['mouth_amplitude']:.2f}   "
                  f"eye {r['eye_corr']:.3f} / {r['eye_amplitude']:.2f}   ({r['frames']} frames)")
    names = [*recs, "teacher"]
    out["clips_mean"] = {n: {k: float(np.mean([rows[n][k] for rows in out["clips"].values() if n in rows]))
                             for k in ("mouth_corr", "mouth_amplitude", "eye_corr", "eye_amplitude")}
                         for n in names if any(n in rows for rows in out["clips"].values())}
    print("  mean:", json.dumps(out["clips_mean"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
