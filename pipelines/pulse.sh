#!/usr/bin/env bash
# KIRI's main job as a person would type it: watch this host, learn what is normal for it, and
# say on the terminal when something is not. Runs straight from a checkout (bin/ sets up .venv).
#
# The first KIRI_WARMUP observations come every second while the pulse atom has no weights;
# kiri-atom records them, trains in the background, and starts scoring when the weights land.
# After that, one observation every KIRI_INTERVAL seconds. Ctrl-C stops every stage cleanly.
set -euo pipefail
bin="$(cd "$(dirname "${BASH_SOURCE[0]}")/../bin" && pwd)"
interval="${KIRI_INTERVAL:-5}"
warmup="${KIRI_WARMUP:-120}"

"$bin/kiri-collect" pulse --interval "$interval" --warmup "$warmup" \
  | "$bin/kiri-atom" pulse --learn --warmup "$warmup" \
  | "$bin/kiri-decide" \
  | "$bin/kiri-act" --sink terminal --sink log >/dev/null
