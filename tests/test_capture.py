"""``streamcap capture``: take files (CSV, JSONL, glTF), gaps, smoothing, expressions, the VMC
OSC link (loopback with python-osc's own server), the Khronos validator, bad input, Ctrl-C."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streamcap.expressions import NAMES, ExpressionSolver, measures
from test_cli import one_line_error, streamcap

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = REPO / "tools" / "gltf-validator"
REQUIRED = ("jawOpen", "mouthClose", "mouthSmileLeft", "mouthSmileRight", "mouthFunnel", "mouthPucker",
            "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp", "browDownLeft", "browDownRight")


def validate_glb(path: Path) -> dict:
    """The Khronos glTF validator's report (skips when node or the npm package is missing)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Khronos glTF validator runs on node")
    if not (VALIDATOR / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("gltf-validator not installed: npm install --prefix tools/gltf-validator")
    p = subprocess.run(["node", str(VALIDATOR / "validate.mjs"), str(path)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode in (0, 1), p.stderr
    return json.loads(p.stdout.splitlines()[0])


class OscServer:
    """python-osc's UDP server on a free loopback port, recording every message it gets."""

    def __init__(self) -> None:
        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_server import ThreadingOSCUDPServer

        self.messages: list[tuple] = []
        d = Dispatcher()
        d.set_default_handler(lambda addr, *args: self.messages.append((addr, *args)))
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), d)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OscServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, address: str, n: int, timeout: float = 5.0) -> list[tuple]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [m for m in self.messages if m[0] == address]
            if len(got) >= n:
                return got
            time.sleep(0.02)
        return [m for m in self.messages if m[0] == address]


# ------------------------------------------------------------------------------ expressions


@pytest.fixture(scope="module")
def canon_lm(layout):
    return layout.canonical[layout.kpt_vertex].astype(np.float64)


def _iod(lm):
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def test_expressions_rest_face_is_neutral_and_size_free(canon_lm):
    s = ExpressionSolver(canon_lm)
    e = s.update(canon_lm)
    assert set(REQUIRED) <= set(NAMES) and list(e) == list(NAMES)
    assert all(v < 0.05 for v in e.values()), e
    m1, m2 = measures(canon_lm), measures(canon_lm * 2.5 + 40)
    assert all(abs(m1[k] - m2[k]) < 1e-9 for k in m1)


def test_expressions_follow_the_geometry(canon_lm):
    iod = _iod(canon_lm)

    def solve(lm):
        return ExpressionSolver(canon_lm).update(lm)

    jaw = canon_lm.copy()
    jaw[[5, 6, 7, 8, 9, 10, 11, 55, 56, 57, 58, 59, 65, 66, 67], 1] += 0.3 * iod  # chin and lower lip drop
    e = solve(jaw)
    assert e["jawOpen"] > 0.5 and e["mouthClose"] < 0.1
    closed_lips = jaw.copy()
    closed_lips[[65, 66, 67], 1] = canon_lm[[63, 62, 61], 1]  # jaw open but lips held together
    assert solve(closed_lips)["mouthClose"] > 0.5

    blink = canon_lm.copy()
    blink[[43, 44], 1] = blink[[47, 46], 1]  # upper lid of the face's left eye onto the lower
    e = solve(blink)
    assert e["eyeBlinkLeft"] > 0.9 and e["eyeBlinkRight"] < 0.05

    smile = canon_lm.copy()
    smile[54] += [0.05 * iod, -0.08 * iod, 0]  # face's left corner up and out
    e = solve(smile)
    assert e["mouthSmileLeft"] > 0.5 and e["mouthSmileRight"] < 0.05

    pucker = canon_lm.copy()
    c = pucker[48:68, 0].mean()
    pucker[48:68, 0] = c + (pucker[48:68, 0] - c) * 0.6  # lips narrowed, closed
    e = solve(pucker)
    assert e["mouthPucker"] > 0.5 and e["mouthFunnel"] < 0.2
    funnel = pucker.copy()
    funnel[[65, 66, 67], 1] += 0.2 * iod
    e = solve(funnel)
    assert e["mouthFunnel"] > 0.5 and e["mouthPucker"] < 0.2

    brows = canon_lm.copy()
    brows[[21, 22], 1] -= 0.1 * iod
    assert solve(brows)["browInnerUp"] > 0.9
    down = canon_lm.copy()
    down[22:27, 1] += 0.08 * iod  # face's left brow lowered
    e = solve(down)
    assert e["browDownLeft"] > 0.9 and e["browDownRight"] < 0.05


def test_expression_rest_adapts_to_the_face(canon_lm):
    """A face with a longer chin than the canonical one reads jawOpen ~0 once its rest is learnt."""
    iod = _iod(canon_lm)
    long_chin = canon_lm.copy()
    long_chin[[7, 8, 9], 1] += 0.15 * iod
    s = ExpressionSolver(canon_lm, warmup=10)
    first = s.update(long_chin)["jawOpen"]
    for _ in range(20):
        last = s.update(long_chin)["jawOpen"]
    assert first > 0.25 and last < 0.02


# ----------------------------------------------------------------------------- take files


@pytest.fixture(scope="module")
def basis4():
    from streamcap.bundle import load_bundle
    from streamcap.commands.codec import load_codec

    return load_codec(load_bundle()).truncate(4)


def _face(basis, layout, coeffs, yaw=10.0, pitch=-5.0, roll=3.0, t=(120.0, 110.0, 0.0), s=0.8):
    from streamcap.geometry.posmap import Pose, euler_to_matrix
    from streamcap.reconstruct import FaceResult
    from streamcap_codecs.basis import from_canonical

    rot = euler_to_matrix(yaw, pitch, roll).astype(np.float32)
    pose = Pose(rot, np.asarray(t, np.float32), s, yaw, pitch, roll)
    verts = from_canonical(basis.decode(np.asarray(coeffs, np.float32)), pose)
    tex = np.full((layout.size, layout.size, 3), 128, np.uint8)
    return FaceResult(crop=None, posmap_crop=None, vertices=verts, landmarks=verts[layout.kpt_vertex], pose=pose,
                      layout=layout, image=None, texture=tex)


def test_take_gaps_are_gaps_and_glb_round_trips(tmp_path, basis4, layout):
    from streamcap.geometry.gltf import read_take_glb
    from streamcap.take import Take

    take = Take(tmp_path, basis4, layout, (256, 240), smooth=False)
    coeffs = [np.array([0.5 * i, -0.3, 0.1 * i, 0.0]) for i in range(6)]
    present = [True, True, True, False, False, True]
    for i in range(6):
        faces = [(0, _face(basis4, layout, coeffs[i], yaw=3.0 * i))] if present[i] else []
        if i >= 2:
            faces.append((1, _face(basis4, layout, coeffs[0], t=(60.0, 60.0, 0.0))))
        take.add_frame(i, i / 25, faces)
    summary = take.close()
    assert [f["id"] for f in summary["faces"]] == [0, 1] and summary["frames"] == 6

    rows = list(csv.DictReader(open(tmp_path / "face0.csv")))
    assert [r["tracked"] for r in rows] == ["1", "1", "1", "0", "0", "1"]
    assert rows[3]["yaw"] == "" and rows[3]["jawOpen"] == "" and rows[3]["c0"] == ""
    assert abs(float(rows[1]["yaw"]) - 3.0) < 0.05 and abs(float(rows[1]["c2"]) - 0.1) < 1e-3
    rows1 = list(csv.DictReader(open(tmp_path / "face1.csv")))
    assert [r["tracked"] for r in rows1] == ["0", "0", "1", "1", "1", "1"]
    lines = [json.loads(x) for x in open(tmp_path / "face0.jsonl")]
    assert lines[4]["tracked"] is False and lines[4]["pose"] is None and lines[4]["expressions"] is None
    assert len(lines[0]["landmarks68"]) == 68 and set(lines[0]["expressions"]) == set(NAMES)

    g = read_take_glb(tmp_path / "face0.glb")
    assert len(g.base) == layout.n_vertices and g.targets.shape[0] == 4
    assert len(g.key_times) == 4 and np.allclose(g.key_times, [0, 0.04, 0.08, 0.2], atol=1e-6)
    assert np.allclose(g.scale[[3, 4], 0], 0.0) and (g.scale[[0, 1, 2, 5], 0] > 0).all()
    for key, frame in enumerate([0, 1, 2, 5]):
        want = _face(basis4, layout, coeffs[frame], yaw=3.0 * frame).vertices
        assert np.abs(g.frame_vertices(key) - want).max() < 0.05  # pixels
    g1 = read_take_glb(tmp_path / "face1.glb")
    assert g1.vis_times[0] == 0.0 and g1.scale[0, 0] == 0.0 and g1.scale[2, 0] > 0  # hidden before it appears


def test_smoothing_lowers_jitter_and_can_be_turned_off(tmp_path, basis4, layout):
    from streamcap.take import Take

    rng = np.random.default_rng(0)
    yaws = 5.0 + rng.normal(0, 1.0, 60)
    out = {}
    for smooth in (True, False):
        take = Take(tmp_path / str(smooth), basis4, layout, (256, 240), smooth=smooth)
        (tmp_path / str(smooth)).mkdir()
        got = [take.add_frame(i, i / 30, [(0, _face(basis4, layout, [0, 0, 0, 0], yaw=y))])[0].euler[0]
               for i, y in enumerate(yaws)]
        take.close()
        out[smooth] = np.abs(np.diff(got[10:])).mean()
    assert abs(out[False] - np.abs(np.diff(yaws[10:])).mean()) < 0.02
    assert out[True] < 0.5 * out[False]


# ---------------------------------------------------------------------------------- OSC


def test_vmc_messages_reach_a_python_osc_server(basis4, layout, tmp_path):
    from streamcap.osc import VmcSender
    from streamcap.take import Take

    take = Take(tmp_path, basis4, layout, (256, 240), smooth=False)
    sample = take.add_frame(0, 0.0, [(0, _face(basis4, layout, [0, 0, 0, 0], yaw=20.0, pitch=0.0, roll=0.0))])[0]
    with OscServer() as srv:
        s = VmcSender("127.0.0.1", srv.port)
        s.send(0.5, sample, (256, 240))
        s.send(0.6, None, (256, 240))
        assert len(srv.wait("/VMC/Ext/OK", 2)) == 2
        s.close()
        ok = srv.wait("/VMC/Ext/OK", 2)
        assert ok[0][1:] == (1, 3, 0, 1) and ok[1][1:] == (1, 3, 0, 0)
        head = srv.wait("/VMC/Ext/Bone/Pos", 1)
        assert len(head) == 1 and head[0][1] == "Head"
        q = np.array(head[0][5:9])
        assert abs(np.linalg.norm(q) - 1) < 1e-5
        # 20 deg of yaw about the vertical axis: the quaternion's y part carries it, sin(10 deg)
        assert abs(abs(q[1]) - np.sin(np.deg2rad(10))) < 1e-3
        blends = srv.wait("/VMC/Ext/Blend/Val", len(NAMES))
        assert [b[1] for b in blends] == list(NAMES) and all(0 <= b[2] <= 1 for b in blends)
        assert len(srv.wait("/VMC/Ext/Blend/Apply", 1)) == 1
        assert [t[1] for t in srv.wait("/VMC/Ext/T", 2)] == pytest.approx([0.5, 0.6])
    take.close()


# ------------------------------------------------------------------------------ CLI, real clip


@pytest.fixture(scope="module")
def vox_take(shared_data, tmp_path_factory):
    """``streamcap capture lia_vox1.mp4`` (first 24 frames, 8 morph targets), with --osc to a server."""
    out = tmp_path_factory.mktemp("take") / "take"
    with OscServer() as srv:
        p = streamcap("capture", str(shared_data / "videos" / "lia_vox1.mp4"), "-o", str(out), "--max-frames", "24",
                      "--morph-targets", "8", "--threads", "2", "--osc", f"127.0.0.1:{srv.port}")
        assert p.returncode == 0, p.stderr
        osc = srv.wait("/VMC/Ext/OK", 24)
    return out, p, osc


def test_capture_writes_csv_jsonl_and_glb(vox_take, layout):
    import pygltflib

    out, p, osc = vox_take
    summary = json.loads((out / "take.json").read_text())
    assert summary["frames"] == 24 and summary["faces"][0]["tracked_frames"] >= 20
    assert "face0" in p.stdout
    fid = summary["faces"][0]["id"]
    rows = list(csv.DictReader(open(out / f"face{fid}.csv")))
    k = summary["basis_components"]
    assert len(rows) == 24 and "lm67_z" in rows[0] and f"c{k - 1}" in rows[0] and f"c{k}" not in rows[0]
    tracked = [r for r in rows if r["tracked"] == "1"]
    for r in tracked:
        assert all(0.0 <= float(r[n]) <= 1.0 for n in NAMES)
        q = np.array([float(r[k]) for k in ("qx", "qy", "qz", "qw")])
        assert abs(np.linalg.norm(q) - 1) < 1e-4 and abs(float(r["yaw"])) < 60
    assert sum(1 for _ in open(out / f"face{fid}.jsonl")) == 24
    gl = pygltflib.GLTF2.load(str(out / f"face{fid}.glb"))
    prim = gl.meshes[0].primitives[0]
    assert gl.accessors[prim.attributes.POSITION].count == layout.n_vertices
    assert len(prim.targets) == 8 and gl.images and gl.animations
    anim = gl.animations[0]
    paths = {ch.target.path: anim.samplers[ch.sampler] for ch in anim.channels}
    assert set(paths) == {"weights", "rotation", "translation", "scale"}
    assert gl.accessors[paths["rotation"].input].count == len(tracked)
    assert gl.accessors[paths["weights"].output].count == 8 * len(tracked)
    assert len(osc) == 24  # one VMC bundle per frame over the loopback


def test_capture_glb_passes_the_khronos_validator(vox_take):
    out, _, _ = vox_take
    report = validate_glb(out / "face0.glb")
    assert report["numErrors"] == 0 and report["numWarnings"] == 0, report["messages"]
    assert report["info"]["animationCount"] == 1 and report["info"]["hasMorphTargets"]


def test_capture_bad_input(shared_data, tmp_path):
    out = tmp_path / "take"
    line = one_line_error(streamcap("capture", str(shared_data / "videos" / "feat_no_face.mp4"), "-o", str(out),
                                    "--max-frames", "30"))
    assert "no face" in line and "empty take" in line
    summary = json.loads((out / "take.json").read_text())
    assert summary["faces"] == [] and summary["frames"] == 30 and not list(out.glob("face*"))

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    assert "junk.mp4" in one_line_error(streamcap("capture", str(junk), "-o", str(out)))
    clip = shared_data / "videos" / "lia_vox1.mp4"
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "cannot write the take" in one_line_error(streamcap("capture", str(clip), "-o", str(blocker / "take")))
    assert "HOST:PORT" in one_line_error(streamcap("capture", str(clip), "--osc", "nohost"))
    assert "camera 7" in one_line_error(streamcap("capture", "--camera", "7", "-o", str(out)))
    assert "--camera" in one_line_error(streamcap("capture", "-o", str(out)))


def test_capture_ctrl_c_leaves_valid_outputs(shared_data, tmp_path):
    from streamcap.geometry.gltf import read_take_glb

    out = tmp_path / "take"
    proc = subprocess.Popen([sys.executable, "-m", "streamcap.cli", "capture",
                             str(shared_data / "videos" / "lia_vox2.mp4"), "-o", str(out), "--morph-targets", "4",
                             "--threads", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            f = out / "face0.csv"
            if f.is_file() and sum(1 for _ in open(f)) > 10:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    summary = json.loads((out / "take.json").read_text())
    assert summary["interrupted"] is True and summary["frames"] >= 10
    rows = list(csv.DictReader(open(out / "face0.csv")))
    assert len(rows) == summary["frames"]
    g = read_take_glb(out / "face0.glb")
    assert len(g.vis_times) == summary["frames"]
    report = validate_glb(out / "face0.glb")
    assert report["numErrors"] == 0, report["messages"]
