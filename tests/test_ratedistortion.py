"""The rate-distortion harness's anchor choice (the measured runs are benchmarks, not tests)."""

from __future__ import annotations

import math

from streamcap_codecs.encoder2 import rate_plan

from streamcap.ratedistortion import best_anchor


def test_best_anchor_per_measure_at_a_rate():
    configs = {
        "a": [{"kbps": 4.0, "psnr": 20.0, "landmark_px256": 6.0}, {"kbps": 8.0, "psnr": 24.0, "landmark_px256": 4.0}],
        "b crf": [{"crf": 63, "kbps": 2.5, "psnr": 19.0, "landmark_px256": 9.0},  # fixed-CRF points: no target
                  {"crf": 55, "kbps": 5.0, "psnr": 21.0, "landmark_px256": 5.0}],
    }
    assert best_anchor(configs, 2.0, "psnr") == (None, None)  # nothing reaches 2 kbit/s
    assert best_anchor(configs, 3.0, "psnr")[1] == "b crf"  # "a" starts above 3 kbit/s
    val, who = best_anchor(configs, 5.0, "psnr")  # log-rate interpolation inside a's ladder
    assert who == "a" and abs(val - (20.0 + 4.0 * math.log2(5.0 / 4.0))) < 1e-9
    val, who = best_anchor(configs, 6.0, "landmark_px256")  # lower is better
    assert who == "a" and 4.0 < val < 6.0


def test_rate_plan_lowers_the_packet_rate_at_low_targets():
    assert rate_plan(None, 30.0)["frame_step"] == 1
    assert rate_plan(2.0, 30.0)["frame_step"] == 4 and rate_plan(2.0, 25.0)["frame_step"] == 3
    assert rate_plan(5.0, 30.0)["frame_step"] == 2 and rate_plan(12.0, 30.0)["frame_step"] == 1
    low = rate_plan(2.0, 30.0)
    assert low["texture_fps"] <= 30.0 / low["frame_step"]
