"""``streamcap eval --aflw DIR``: NME per yaw bin for the model (and dlib beside it)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from ..evaluate import evaluate, format_table, load_aflw


def model_predictor(args: argparse.Namespace):
    from ..bundle import load_bundle
    from ..engine import create_engine
    from ..reconstruct import Reconstructor

    bundle = load_bundle(args.bundle)
    rec = Reconstructor(bundle, create_engine(bundle, args.backend, threads=args.threads))

    def predict(image: np.ndarray, gt: np.ndarray) -> np.ndarray:
        return rec.run(image, rec.crops_for([gt[:, :2]]), texture=False)[0].landmarks

    return predict


def dlib_predictor(args: argparse.Namespace):
    """dlib's 68 points from the detection that best overlaps the ground-truth box; a frame with
    no such detection is a miss (dlib's HOG finds few faces beyond ~45 degrees of yaw). The box is
    dlib's own (HOG, or MMOD with ``--detector mmod``): the predictor was trained on those."""
    from ..detect import FaceDetector, LandmarkPredictor, best_overlap

    det, lmk = FaceDetector(kind="mmod" if args.detector == "mmod" else "hog"), LandmarkPredictor()

    def predict(image: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
        box = best_overlap(det.detect(image), np.r_[gt[:, :2].min(0), gt[:, :2].max(0)])
        return None if box is None else lmk.predict(image, box)

    return predict


def run(args: argparse.Namespace) -> int:
    methods = {"model": model_predictor, "dlib": dlib_predictor}
    results = {}
    for name in args.methods.split(","):
        if name not in methods:
            from ..errors import InputError

            raise InputError(f"unknown method {name!r} (choose from {', '.join(methods)})")
        results[name] = evaluate(load_aflw(args.aflw, args.limit), methods[name](args))
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0
