"""Render one frame of a captured take from its .glb beside the source video frame.

    python demos/render_take.py ../shared/data/videos/lia_vox1.mp4 take/face0.glb --frame 40 -o docs/capture_frame.jpg

The face is posed from the .glb alone (rest mesh + morph weights + node rotation, translation
and scale at that key, read back with pygltflib) and drawn with the ModernGL renderer over a
dimmed copy of the frame; the left half is the source frame.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import default_layout  # noqa: E402
from streamcap.capture import VideoSource  # noqa: E402
from streamcap.geometry.gltf import read_take_glb  # noqa: E402
from streamcap.render import FaceRenderer  # noqa: E402


def posmap_from_vertices(verts: np.ndarray, layout) -> np.ndarray:
    """(V, 3) layout-order vertices -> (S, S, 3) position map (zeros off the face)."""
    pm = np.zeros((layout.size * layout.size, 3), np.float32)
    pm[layout.face_ind] = verts
    return pm.reshape(layout.size, layout.size, 3)


def render_frame(video: Path, glb: Path, frame: int) -> np.ndarray:
    take = read_take_glb(glb)
    start = float(take.info.get("start_time", 0.0))
    with VideoSource(video) as src:
        for f in src:
            if f.index == frame:
                image, ts = f.image, f.timestamp
                break
        else:
            raise SystemExit(f"{video} has no frame {frame}")
    key = int(np.argmin(np.abs(take.key_times + start - ts)))
    layout = default_layout()
    if len(take.base) != layout.n_vertices:
        raise SystemExit("the .glb was not written over the shipped UV layout")
    verts = take.frame_vertices(key)
    h, w = image.shape[:2]
    with FaceRenderer(w, h, layout) as r:
        out = r.render((image * 0.35).astype(np.uint8), [(posmap_from_vertices(verts, layout), take.texture)])
    pair = np.concatenate([image, out], 1)
    if h < 400:  # small clips (256 px): twice the size, so the picture is legible
        pair = cv2.resize(pair, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    for text, x in (("source frame", 8), (f"from {glb.name}, t={take.key_times[key] + start:.2f} s", w + 8)):
        cv2.putText(pair, text, (x * pair.shape[0] // h, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return pair


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", type=Path)
    ap.add_argument("glb", type=Path)
    ap.add_argument("--frame", type=int, default=0, help="frame index in the video")
    ap.add_argument("-o", "--output", type=Path, default=Path("out/take_frame.jpg"))
    args = ap.parse_args()
    pair = render_frame(args.video, args.glb, args.frame)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), pair, [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
