"""Rate-distortion of the face codec (stream v2) against AV1 and H.264 ladders at full, 1/2 and 1/4
resolution and full and half frame rate; see streamcap/ratedistortion.py for what is measured.

    python benchmarks/rate_distortion.py ../shared/data/videos/{lp_d19,iplap_129,vr_1,pexels_wolfgang}.mp4 \
        --frames 300 --json docs/results/codec_rd.json --plots docs/results
"""

from streamcap.ratedistortion import main

if __name__ == "__main__":
    raise SystemExit(main())
