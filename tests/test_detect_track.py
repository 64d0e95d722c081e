"""Capture, detection, landmarks and tracking on real photos and clips from ../shared/data."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamcap.bundle import load_bundle
from streamcap.capture import CameraSource, VideoSource, read_image
from streamcap.detect import Box, FaceDetector, LandmarkPredictor
from streamcap.errors import CameraUnavailable, InputError, InputNotFound, VideoError
from streamcap.geometry.crop import crop_from_landmarks
from streamcap.pipeline import FacePipeline
from streamcap.reconstruct import Reconstructor
from streamcap.track import FaceTracker, OneEuroFilter, face_seeds, five_points


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def predictor():
    return LandmarkPredictor()


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


def test_default_detector_finds_all_six_faces_of_the_group_photo(shared_data, detector):
    """dlib HOG (the old default) finds 4 of them: it misses the tilted and the turned face."""
    img = read_image(shared_data / "images" / "group_t1.jpg")
    boxes = detector.detect(img)
    assert len(boxes) == 6
    for b in boxes:  # each with its 5 keypoints inside its own box
        k = b.keypoints
        assert k.shape == (5, 2)
        assert ((k[:, 0] > b.x0) & (k[:, 0] < b.x1) & (k[:, 1] > b.y0) & (k[:, 1] < b.y1)).all()
    centres = np.array([((b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2) for b in boxes])
    assert len(np.unique(np.round(centres / 50), axis=0)) == 6  # six different places


def test_default_detector_finds_nothing_in_the_no_face_clip(shared_data, detector):
    with VideoSource(shared_data / "videos" / "feat_no_face.mp4") as src:
        found = [len(detector.detect(f.image)) for f in src]
    assert len(found) > 50 and sum(found) == 0


def test_dlib_detectors_stay_available(shared_data):
    img = read_image(shared_data / "images" / "group_t1.jpg")
    boxes = FaceDetector("hog", upsample=1).detect(img)
    assert len(boxes) >= 4 and all(b.keypoints is None for b in boxes)
    with pytest.raises(InputError):
        FaceDetector("nope")


def test_seeded_crop_matches_the_crop_from_dlib_landmarks(shared_data, detector, predictor, bundle):
    """The canonical landmarks placed in a YuNet box give (nearly) the crop dlib's 68 points give."""
    hog = FaceDetector("hog")
    canon = bundle.layout.canonical[bundle.layout.kpt_vertex]
    ious = []
    for jpg in sorted((shared_data / "images").glob("lp_s*.jpg"))[:12]:
        img = read_image(jpg)
        hb, seeds = hog.detect(img), face_seeds(detector, img, canon)
        if len(hb) != 1 or len(seeds) != 1:
            continue
        a, b = crop_from_landmarks(predictor.predict(img, hb[0]), 128), crop_from_landmarks(seeds[0], 128)
        box = [np.r_[c.to_image(np.array([[0.0, 0.0]]))[0], c.to_image(np.array([[128.0, 128.0]]))[0]] for c in (a, b)]
        ious.append(Box(*box[0]).iou(box[1]))
    assert len(ious) >= 6
    assert np.median(ious) > 0.85


def test_dlib_landmarks_land_on_annotated_points(shared_data, predictor):
    """dlib's 68 points (the optional landmark source) against the human 5-point annotation."""
    hog = FaceDetector("hog")
    errs = []
    for jpg in sorted((shared_data / "images" / "d3dfr").glob("*.jpg"))[:10]:
        img = read_image(jpg)
        ref = np.loadtxt(jpg.with_suffix(".txt")).reshape(5, 2)
        boxes = hog.detect(img)
        if not boxes:
            continue
        lm = predictor.predict(img, boxes[0])
        assert lm.shape == (68, 2)
        eyes = np.linalg.norm(ref[0] - ref[1])
        errs.append(np.linalg.norm(five_points(lm) - ref, axis=1).mean() / eyes)
    assert len(errs) >= 8
    assert np.median(errs) < 0.15  # a tenth of the eye distance or so: on the face, not near it


def _pipeline(bundle, **kw) -> FacePipeline:
    from streamcap.engine import create_engine

    rec = Reconstructor(bundle, create_engine(bundle, "ort", threads=2))
    return FacePipeline(rec, FaceTracker(rec.canonical68, **kw), texture=False)


class CountingDetector:
    """The default detector, counting its calls."""

    def __init__(self) -> None:
        self.inner, self.calls, self.kind = FaceDetector(), 0, "yunet"

    def detect(self, image):
        self.calls += 1
        return self.inner.detect(image)


def test_video_track_keeps_one_stable_id_and_detects_rarely(shared_data, bundle):
    det = CountingDetector()
    pipe = _pipeline(bundle, detector=det, redetect_every=10)
    ids = []
    with VideoSource(shared_data / "videos" / "lp_d19.mp4") as src:
        assert src.fps == pytest.approx(30, abs=1) and src.width == 480
        for frame in src:
            res = pipe.process(frame.index, frame.timestamp, frame.image)
            ids.append([tid for tid, _ in res.faces])
            if frame.index >= 40:
                break
    pipe.close()
    assert all(i == [0] for i in ids)
    assert det.calls <= 1 + 41 // 10  # the first frame, then every 10th, never per frame


def test_generator_landmarks_follow_the_face(shared_data, bundle, predictor):
    """Tracked from its own landmarks for 60 frames, the face stays where dlib finds it."""
    pipe = _pipeline(bundle, redetect_every=1000)  # no re-detection: only the landmarks carry it
    hog = FaceDetector("hog")
    errs = []
    with VideoSource(shared_data / "videos" / "lp_d19.mp4") as src:
        for frame in src:
            res = pipe.process(frame.index, frame.timestamp, frame.image)
            if frame.index % 10 == 9:
                d = predictor.predict(frame.image, hog.detect(frame.image)[0])
                m = res.faces[0][1].landmarks[:, :2]
                errs.append(np.linalg.norm(five_points(m) - five_points(d), axis=1).mean() / np.ptp(d[:, 0]))
            if frame.index >= 59:
                break
    pipe.close()
    assert pipe.tracker.frame == 60 and len(errs) == 6
    assert max(errs) < 0.1  # a tenth of the face width


class GatedDetector:
    """Finds the face on the first call; later calls wait until the test opens the gate."""

    kind = "yunet"

    def __init__(self) -> None:
        self.inner, self.calls = FaceDetector(), 0
        self.gate, self.order = threading.Event(), []

    def detect(self, image):
        self.calls += 1
        if self.calls > 1:
            self.gate.wait(10)
            self.order.append("detected")
        return self.inner.detect(image)


def test_scheduled_detection_does_not_stall_its_frame(shared_data, bundle):
    img = read_image(shared_data / "images" / "group_t1.jpg")
    det = GatedDetector()
    tracker = FaceTracker(bundle.layout.canonical[bundle.layout.kpt_vertex], detector=det, redetect_every=3)
    assert len(tracker.update(img, 0.0)) == 6  # no face yet: detected in the frame itself
    tracker.update(img, 1 / 30)
    tracker.update(img, 2 / 30)
    tracks = tracker.update(img, 3 / 30)  # scheduled: handed to the worker, the frame goes on
    det.order.append("frame returned")
    tracker.update(img, 4 / 30)  # still running: this frame does not wait either
    det.gate.set()
    tracker.wait_for_detection()
    assert len(tracks) == 6
    tracker.update(img, 5 / 30)  # collects the late detection
    tracker.close()
    assert det.order == ["frame returned", "detected"]
    assert len(tracker.tracks) == 6 and sorted(t.id for t in tracker.tracks) == list(range(6))


def test_lost_track_is_dropped_and_the_next_frame_detects(shared_data, bundle):
    img = read_image(shared_data / "images" / "group_t1.jpg")
    det = CountingDetector()
    tracker = FaceTracker(bundle.layout.canonical[bundle.layout.kpt_vertex], detector=det, redetect_every=100)
    tracks = tracker.update(img, 0.0)
    assert len(tracks) == 6 and det.calls == 1
    far = [t.landmarks + (5000.0 if k == 0 else 0.0) for k, t in enumerate(tracks)]  # face 0 left the frame
    tracker.observe(tracks, far, 0.0, (img.shape[1], img.shape[0]))
    assert len(tracker.tracks) == 5
    tracker.observe(tracker.tracks, [np.zeros((68, 2))] * 5, 0.1, (img.shape[1], img.shape[0]))  # collapsed
    assert tracker.tracks == []
    assert len(tracker.update(img, 0.2)) == 6 and det.calls == 2
    tracker.close()


def test_dlib_landmark_mode_still_tracks(shared_data, bundle):
    tracker = FaceTracker(bundle.layout.canonical[bundle.layout.kpt_vertex], landmarks="dlib")
    with VideoSource(shared_data / "videos" / "lp_d19.mp4") as src:
        for frame in src:
            tracks = tracker.update(frame.image, frame.timestamp)
            if frame.index >= 12:
                break
    tracker.close()
    assert [t.id for t in tracks] == [0] and tracks[0].age == 13


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
