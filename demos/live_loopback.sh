#!/usr/bin/env bash
# One sender on a clip and two receivers on this machine, over ZeroMQ on 127.0.0.1.
#
#   demos/live_loopback.sh [CLIP] [SECONDS]        (SECONDS 0 or absent: until Ctrl-C)
#
# Receiver 1 writes out/live_loopback/receiver1.mp4 (and shows a window when there is a
# display); receiver 2 runs headless and only measures. Both write a --stats JSON. Ctrl-C, the
# time limit or any exit stops all three: each gets SIGTERM (they flush the mp4 and the JSON),
# and whatever is still running 15 s later is killed. Environment: PORT (default 5555),
# OUT (default out/live_loopback), STREAMCAP (the command, default .venv/bin/streamcap).
set -euo pipefail
cd "$(dirname "$0")/.."

clip=${1:-../shared/data/videos/lp_d19.mp4}
seconds=${2:-0}
port=${PORT:-5555}
out=${OUT:-out/live_loopback}
sc=${STREAMCAP:-.venv/bin/streamcap}
[[ -x $sc ]] || sc=streamcap
[[ -f $clip ]] || { echo "live_loopback: no clip at $clip" >&2; exit 2; }
[[ $seconds =~ ^[0-9]+$ ]] || { echo "live_loopback: SECONDS must be a whole number, got $seconds" >&2; exit 2; }
mkdir -p "$out"

pids=()
cleanup() {
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 150); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "live_loopback: outputs in $out/" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$sc" send --video "$clip" --loop --realtime --bind "tcp://127.0.0.1:$port" --threads 1 \
    --stats "$out/sender.json" &
pids+=($!)
"$sc" receive --connect "tcp://127.0.0.1:$port" -o "$out/receiver1.mp4" --stats "$out/receiver1.json" &
pids+=($!)
"$sc" receive --connect "tcp://127.0.0.1:$port" --headless --stats "$out/receiver2.json" &
pids+=($!)

if (( seconds > 0 )); then
    sleep "$seconds" &
    wait $!  # (in the background, so a signal to this script is handled at once)
else
    wait -n "${pids[@]}" || true  # until Ctrl-C or one of them ends (e.g. the port was taken)
fi
