"""The command line: help lists every command, bad input is one line on stderr and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

CMDS = ("send", "receive", "encode", "decode", "reconstruct", "capture", "bench", "eval", "keygen")


def streamcap(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamcap.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_help_lists_every_command():
    p = streamcap("--help")
    assert p.returncode == 0
    for c in CMDS:
        assert c in p.stdout


def test_missing_camera_is_one_line():
    assert "camera 7" in one_line_error(streamcap("send", "--camera", "7"))


def test_live_bad_inputs(tmp_path):
    import os

    assert "no such file" in one_line_error(streamcap("send", "--video", str(tmp_path / "missing.mp4")))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    p = subprocess.run([sys.executable, "-m", "streamcap.cli", "receive"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert "-o OUT.mp4 or --headless" in one_line_error(p)
    assert "--simulate-loss" in one_line_error(streamcap("receive", "--headless", "--simulate-loss", "2"))
    assert "tcp://HOST:PORT" in one_line_error(streamcap("receive", "--headless", "--connect", "localhost"))
    assert "missing" in one_line_error(streamcap("receive", "--headless", "--curve-keys", str(tmp_path)))
    assert "does not exist" in one_line_error(streamcap("receive", "--headless", "--stats", str(tmp_path / "a/b.json")))


def test_keygen_writes_a_usable_pair(tmp_path):
    p = streamcap("keygen", str(tmp_path / "keys"))
    assert p.returncode == 0, p.stderr
    names = sorted(f.name for f in (tmp_path / "keys").iterdir())
    assert names == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    assert (tmp_path / "keys" / "server.key_secret").stat().st_mode & 0o077 == 0


def test_reconstruct_bad_inputs(tmp_path):
    out = tmp_path / "out"
    assert "no such file" in one_line_error(streamcap("reconstruct", str(tmp_path / "missing.jpg"), "-o", str(out)))
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    assert "not an image" in one_line_error(streamcap("reconstruct", str(fake), "-o", str(out)))
    import cv2

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 127, np.uint8))
    assert "no face" in one_line_error(streamcap("reconstruct", str(blank), "-o", str(out)))
    assert "not found" in one_line_error(streamcap("reconstruct", str(blank), "--bundle", str(tmp_path / "nob")))


def test_reconstruct_writes_meshes_for_every_face(shared_data, tmp_path):
    from streamcap.geometry.export import read_obj_counts

    out = tmp_path / "out"
    images = shared_data / "images"
    p = streamcap("reconstruct", str(images / "group_t1.jpg"), str(images / "lp_s0.jpg"),
                  "-o", str(out), "--threads", "2")
    assert p.returncode == 0, p.stderr
    summary = json.loads((out / "group_t1.json").read_text())
    assert len(summary["faces"]) >= 3
    for face in summary["faces"]:
        nv, nf = read_obj_counts(out / face["mesh"])
        assert nv == 43867 and nf > 80000
        assert abs(face["yaw"]) < 90
    assert (out / "group_t1_overlay.png").is_file() and (out / "lp_s0_face0.png").is_file()
