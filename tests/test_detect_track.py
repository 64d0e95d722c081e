"""Capture, detection, landmarks and tracking on real photos and clips from ../shared/data."""

from __future__ import annotations

import numpy as np
import pytest

from streamcap.capture import CameraSource, VideoSource, read_image
from streamcap.detect import FaceDetector, LandmarkPredictor
from streamcap.errors import CameraUnavailable, InputError, InputNotFound, VideoError
from streamcap.track import FaceTracker, OneEuroFilter


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def predictor():
    return LandmarkPredictor()


def test_group_photo_yields_several_tracked_faces(shared_data, detector):
    img = read_image(shared_data / "images" / "group_t1.jpg")
    boxes = detector.detect(img)
    assert len(boxes) >= 3
    tracker = FaceTracker(detector=detector)
    tracks = tracker.update(img, 0.0)
    assert len(tracks) == len(boxes)
    assert len({t.id for t in tracks}) == len(tracks)
    # every face's crop contains its own landmarks
    for t in tracks:
        inside = t.crop.to_crop(t.landmarks)
        assert (inside > 0).all() and (inside < t.crop.size).all()


def _five(lm: np.ndarray) -> np.ndarray:
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def test_landmarks_land_on_annotated_points(shared_data, detector, predictor):
    """dlib's 68 points against the human 5-point annotation of the d3dfr photos."""
    errs = []
    for jpg in sorted((shared_data / "images" / "d3dfr").glob("*.jpg"))[:10]:
        img = read_image(jpg)
        ref = np.loadtxt(jpg.with_suffix(".txt")).reshape(5, 2)
        boxes = detector.detect(img)
        if not boxes:
            continue
        lm = predictor.predict(img, boxes[0])
        assert lm.shape == (68, 2)
        eyes = np.linalg.norm(ref[0] - ref[1])
        errs.append(np.linalg.norm(_five(lm) - ref, axis=1).mean() / eyes)
    assert len(errs) >= 8
    assert np.median(errs) < 0.15  # a tenth of the eye distance or so: on the face, not near it


def test_video_track_keeps_one_stable_id(shared_data, detector):
    tracker = FaceTracker(detector=detector, redetect_every=10)
    ids = []
    with VideoSource(shared_data / "videos" / "lp_d19.mp4") as src:
        assert src.fps == pytest.approx(30, abs=1) and src.width == 480
        for frame in src:
            tracks = tracker.update(frame.image, frame.timestamp)
            ids.append([t.id for t in tracks])
            if frame.index >= 40:
                break
    assert all(i == [0] for i in ids)


def test_one_euro_smooths_jitter_but_follows_motion():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    still = [f(np.array([100.0]) + rng.normal(0, 1, 1), t / 30) for t in range(60)]
    assert np.std(still[30:]) < 0.5  # raw jitter std is 1
    g = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    moving = [g(np.array([10.0 * t]), t / 30)[0] for t in range(60)]
    assert abs(moving[-1] - 590) < 30  # lags a little, never by much


def test_bad_inputs_raise_typed_errors(tmp_path):
    with pytest.raises(InputNotFound):
        read_image(tmp_path / "missing.jpg")
    fake = tmp_path / "fake.jpg"
    fake.write_text("this is not an image")
    with pytest.raises(InputError):
        read_image(fake)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError):
        list(VideoSource(corrupt))
    with pytest.raises(InputNotFound):
        VideoSource(tmp_path / "missing.mp4")
    with pytest.raises(CameraUnavailable):
        CameraSource(99, open_timeout=0.5)
