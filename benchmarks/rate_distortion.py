"""Rate-distortion of the face codec beside H.264 and AV1; see streamcap/ratedistortion.py.

    python benchmarks/rate_distortion.py ../shared/data/videos/lp_d19.mp4 --frames 150 --json rd.json
"""

from streamcap.ratedistortion import main

if __name__ == "__main__":
    raise SystemExit(main())
