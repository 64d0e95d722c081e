"""End-to-end latency and sustained frame rate of the live path on this machine.

    python benchmarks/live_latency.py [CLIP] [--receivers 1 4 16] [--seconds 20] [--warmup 3]
                                      [--threads 1] [--format 2] [--json out/live_latency.json]

One ``streamcap send --video CLIP --loop --realtime`` on 127.0.0.1 and, per setting, N
``streamcap receive --headless`` processes (decode + offscreen render, no window, no mp4).
Latency is capture timestamp (the sender stamps the frame when the source delivers it) to
the rendered frame on the receiver, both on this machine's clock, pooled over receivers; the
first ``--warmup`` seconds of each receiver are left out. Sustained fps is rendered frames per
second per receiver over the measured window. Everything runs on this machine, so with many
receivers they compete with the sender for the same cores: that is part of what it measures.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from streamcap.benchmark import stats

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared" / "data" / "videos" / "lp_d19.mp4"


class Proc:
    """A ``streamcap`` process in its own process group, stderr to a log file."""

    def __init__(self, log: Path, *args: object, env: dict[str, str]) -> None:
        self.log = log
        self.args = [str(a) for a in args]
        with open(log, "w") as f:
            self.p = subprocess.Popen([sys.executable, "-m", "streamcap.cli", *self.args], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=f, env=env, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, pattern: str, timeout: float) -> re.Match | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if m := re.search(pattern, self.text()):
                return m
            if self.p.poll() is not None:
                return re.search(pattern, self.text())
            time.sleep(0.1)
        return None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the graceful stop), then SIGKILL after ``timeout``."""
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(10)
            return None


def measure(endpoint: str, n: int, seconds: float, warmup: float, tmp: Path, env: dict[str, str]) -> dict:
    """Run ``n`` receivers for warm-up + ``seconds``; pool their per-frame latencies."""
    procs = [Proc(tmp / f"r{n}_{i}.log", "receive", "--connect", endpoint, "--headless", "--timeout", "60",
                  "--stats", tmp / f"r{n}_{i}.json", env=env) for i in range(n)]
    try:
        joined = [p.wait_for("first frame", 60 + 5 * n) is not None for p in procs]
        time.sleep(warmup + seconds)
    finally:
        codes = [p.stop() for p in procs]
    lat: list[float] = []
    fps: list[float] = []
    stream_fps: list[float] = []
    lost = stale = shown = 0
    joins = []
    for i in range(n):
        path = tmp / f"r{n}_{i}.json"
        if not path.exists():
            continue
        s = json.loads(path.read_text())
        lost += s["lost"]
        if s["join_s"] is not None:
            joins.append(s["join_s"])
        if s["first_frame_s"] is None:
            continue
        t0 = s["first_frame_s"] + warmup
        decoded = [f for f in s["frame_log"] if f["t"] >= t0]  # every frame the stream carried
        window = [f for f in decoded if f["shown"]]  # the ones rendered (a receiver behind skips some)
        if len(window) >= 2:
            fps.append((len(window) - 1) / max(window[-1]["t"] - window[0]["t"], 1e-6))
        if len(decoded) >= 2:
            stream_fps.append((len(decoded) - 1) / max(decoded[-1]["t"] - decoded[0]["t"], 1e-6))
        lat += [f["lat"] for f in window if f.get("lat") is not None]
        for f in window:
            shown += len(f["faces"])
            stale += sum(st for _, st, _ in f["faces"])
    return {
        "receivers": n, "joined": sum(joined), "exit_codes": codes,
        "fps_per_receiver": {"mean": round(float(np.mean(fps)), 2) if fps else None,
                             "min": round(float(np.min(fps)), 2) if fps else None},
        "stream_fps": round(float(np.mean(stream_fps)), 2) if stream_fps else None,
        "latency_ms": stats(lat, digits=1), "frames_measured": len(lat), "messages_lost": lost,
        "stale_face_pct": round(100 * stale / shown, 2) if shown else None,
        "join_s": stats(joins, digits=2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clip", type=Path, nargs="?", default=DEFAULT_CLIP, help="video clip the sender loops")
    ap.add_argument("--receivers", type=int, nargs="+", default=[1, 4, 16], help="receiver counts to measure")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per setting")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds left out after each receiver's first frame")
    ap.add_argument("--threads", type=int, default=1, help="sender inference threads")
    ap.add_argument("--backend", default="auto", help="sender inference backend")
    ap.add_argument("--format", type=int, choices=(1, 2), default=2, help="stream format the sender sends")
    ap.add_argument("--json", type=Path, default=REPO / "out" / "live_latency.json", help="results JSON")
    args = ap.parse_args()
    if not args.clip.is_file():
        print(f"live_latency: no clip at {args.clip}", file=sys.stderr)
        return 2
    if any(n < 1 for n in args.receivers) or args.seconds <= 0 or args.warmup < 0:
        print("live_latency: receivers must be >= 1, seconds > 0, warmup >= 0", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.setdefault("LP_NUM_THREADS", "1")  # one llvmpipe thread per receiver: they are many
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    results = []
    with tempfile.TemporaryDirectory(prefix="live_latency_") as d:
        tmp = Path(d)
        sender = Proc(tmp / "send.log", "send", "--video", args.clip, "--loop", "--realtime", "--bind",
                      "tcp://127.0.0.1:*", "--threads", args.threads, "--backend", args.backend,
                      "--format", args.format, "--stats", tmp / "send.json", env=env)
        try:
            m = sender.wait_for(r"sending on (tcp://\S+)", 180)
            if m is None:
                print(f"live_latency: the sender did not start:\n{sender.text()}", file=sys.stderr)
                return 1
            for n in args.receivers:
                print(f"measuring {n} receiver(s) for {args.warmup:g}+{args.seconds:g} s ...", file=sys.stderr)
                results.append(measure(m.group(1), n, args.seconds, args.warmup, tmp, env))
        finally:
            sender.stop()
        send_stats = json.loads((tmp / "send.json").read_text()) if (tmp / "send.json").exists() else {}
    out = {
        "clip": str(args.clip), "format": args.format, "seconds": args.seconds, "warmup": args.warmup,
        "threads": args.threads,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_1min": round(os.getloadavg()[0], 2)},
        "sender": {k: send_stats.get(k) for k in ("frames", "skipped", "fps", "track_model_ms", "bytes", "wire_bytes",
                                                  "stream_kbps")},
        "results": results,
    }
    print(f"sender: {send_stats.get('fps')} fps over the whole run, {send_stats.get('skipped')} frames skipped "
          f"to stay live, track+model p50 {(send_stats.get('track_model_ms') or {}).get('p50')} ms")
    print("stream fps: frames the receivers decoded per second (the sender's rate as delivered); fps: frames "
          "each rendered per second; latency: capture to rendered frame, ms")
    print(f"{'receivers':>9} {'joined':>6} {'stream fps':>10} {'fps mean':>9} {'fps min':>8} {'lat p50':>8} "
          f"{'lat p99':>8} {'lost':>6} {'stale%':>7}")
    for r in results:
        f, lat = r["fps_per_receiver"], r["latency_ms"]
        print(f"{r['receivers']:>9} {r['joined']:>6} {_num(r['stream_fps']):>10} {_num(f['mean']):>9} "
              f"{_num(f['min']):>8} {_num(lat.get('p50')):>8} {_num(lat.get('p99')):>8} {r['messages_lost']:>6} "
              f"{_num(r['stale_face_pct']):>7}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
