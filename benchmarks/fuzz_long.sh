#!/usr/bin/env bash
# Deep run of the standing fuzz suite (tests/test_fuzz.py): the "long" hypothesis profile,
# 5000 examples per target, 10000 for the cheap ones (CI's profile: 200 and 400; the long run
# took about 30 minutes on 2 shared cores). Extra pytest arguments pass through, e.g.
# -k scap_file, or --hypothesis-seed=N to vary the search.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest tests/test_fuzz.py -q -p no:cacheprovider --hypothesis-profile=long \
  --hypothesis-show-statistics "$@"
