"""How much the codec loses by fitting basis coefficients from every k-th vertex only.

    python benchmarks/projection_subsample.py [--data ../shared/data] [--steps 2 4 8 16]

Faces: every 5th frame of the first 150 of three held-out clips (lp_d19, lp_d11, vr_2), tracked
and reconstructed by the shipped bundle, pose-normalised as the encoder does. For each step it
prints the reconstruction error (RMS per vertex over all vertices, canonical units) of the
orthogonal projection and of the subsampled least-squares fit (``GeometryBasis.projector``), and
how far the coefficients move, beside the quantisation step at quality 50.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap_codecs.basis import normalise_pose
from streamcap_codecs.quant import quality_to_step

from streamcap.bundle import load_bundle
from streamcap.capture import VideoSource
from streamcap.commands.codec import load_codec
from streamcap.pipeline import FacePipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16])
    args = ap.parse_args(argv)
    bundle = load_bundle()
    basis = load_codec(bundle)
    pipe = FacePipeline.create(bundle, "ort", 2)
    canons = []
    for clip in ("lp_d19", "lp_d11", "vr_2"):
        with VideoSource(args.data / "videos" / f"{clip}.mp4") as src:
            for f in src:
                res = pipe.process(f.index, f.timestamp, f.image)
                if f.index % 5 == 0 and res.faces:
                    canons.append(normalise_pose(res.faces[0][1].vertices, bundle.layout)[1])
                if f.index >= 150:
                    break
    pipe.close()
    x = np.stack(canons)
    full = basis.encode_many(x)

    def rms(coeffs: np.ndarray) -> float:
        return float(np.mean([np.sqrt(((basis.decode(c) - v) ** 2).sum(1).mean()) for c, v in zip(coeffs, x)]))

    print(f"{len(x)} faces; quantisation step at quality 50: {quality_to_step(50):.3f}; "
          f"orthogonal projection: reconstruction RMS {rms(full):.5f}")
    for step in args.steps:
        sub = basis.encode_many(x, step)
        d = np.abs(sub - full)
        print(f"every {step:>2}th vertex: reconstruction RMS {rms(sub):.5f}, "
              f"coefficient change mean {d.mean():.4f}, max {d.max():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
