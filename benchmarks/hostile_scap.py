"""Time to open and read hostile ``.scap`` files (the reader's resync is linear; issue 16).

    python benchmarks/hostile_scap.py [--mb 50] [--json out.json]

Cases, each after a valid 8-byte file header:
- ``random``: random junk;
- ``ones``: the issue's b'\\x01' * N (every offset looks like a message record whose length fits);
- ``forged``: a record head every 64 bytes that passes every cheap check (type, frame count,
  header-frame length, msgpack map byte, frame lengths that add up) and claims to run to the end
  of the file, so each one needs a CRC check: the densest adversarial case;
- ``tail``: a real stream (shipped codec basis, synthetic faces) followed by random junk.

Reports seconds (open + read every message) and the reader's peak RSS growth, per case.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from streamcap_codecs import ScapReader

HEADER = b"SCAP\x01\x00\x00\x00"


def real_stream_bytes() -> bytes:
    from hostile_streams import flat, real_stream, write_scap

    with tempfile.TemporaryDirectory() as d:
        return write_scap(Path(d) / "s.scap", flat(real_stream())).read_bytes()


def case(name: str, size: int) -> bytes:
    if name == "random":
        return HEADER + os.urandom(size)
    if name == "ones":
        return HEADER + b"\x01" * size
    if name == "forged":
        from hostile_streams import forged_heads

        return HEADER + forged_heads(size)
    return real_stream_bytes() + os.urandom(size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=50, help="junk size in MiB (default 50)")
    ap.add_argument("--cases", default="random,ones,forged,tail")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in args.cases.split(","):
            path = Path(d) / f"{name}.scap"
            path.write_bytes(case(name, args.mb << 20))
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0 = time.perf_counter()
            with ScapReader(path) as r:
                n = sum(1 for _ in r)
                truncated = r.truncated
            secs = time.perf_counter() - t0
            grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
            out[name] = {"mib": args.mb, "seconds": round(secs, 3), "messages": n, "truncated": truncated,
                         "peak_rss_growth_mib": round(grow, 1)}
            print(f"{name:7s} {args.mb} MiB: {secs:7.2f} s, {n} messages read, truncated={truncated}, "
                  f"peak RSS +{grow:.0f} MiB", flush=True)
            path.unlink()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
