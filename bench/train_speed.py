"""Training and scoring speed of the two engines, measured side by side in one run.

    .venv/bin/python bench/train_speed.py           # ~6 minutes: the full pure microgpt run,
                                                    # the pure Pulse run timed on 50 steps
    .venv/bin/python bench/train_speed.py --full    # also the full pure Pulse run (~20 more)
    .venv/bin/python bench/train_speed.py --quick   # pure engine timed on 20 steps only

Rows:
  * the microgpt run (names.txt, 1,000 steps, batch 1) on the pure and the fast engine;
  * the Pulse atom's size (vocab 43, n_embd 32, n_head 4, n_layer 2, block 16) for 500 steps
    at batch 1 on both engines;
  * fast-engine training throughput at batch 32, in documents per second;
  * scoring throughput for 7-token observations, batched and one at a time.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiri.model.size import ModelSize, num_params  # noqa: E402
from kiri.model.training import TextDocs, new_engine, train  # noqa: E402

NAMES = ROOT / "tests" / "fixtures" / "names.txt"  # a copy of ../shared/data/names.txt
PULSE = ModelSize(vocab_size=43, n_layer=2, n_embd=32, n_head=4, block_size=16)
PULSE_LEVELS = (10, 10, 10, 5, 5, 2)  # C M D S L N


def pulse_docs(n: int, seed: int = 0) -> list[list[int]]:
    """Observation-shaped documents: [BOS, C, M, D, S, L, N, BOS] over the Pulse vocabulary."""
    r = random.Random(seed)
    bos, docs = PULSE.vocab_size - 1, []
    for _ in range(n):
        doc, offset = [bos], 0
        for levels in PULSE_LEVELS:
            doc.append(offset + min(levels - 1, int(abs(r.gauss(0, levels / 4)))))
            offset += levels
        docs.append([*doc, bos])
    return docs


def timed_training(engine_name: str, config: ModelSize, docs, steps: int, run_steps: int, batch=1):
    """Seconds for `steps` training steps, measured over `run_steps` (extrapolated if fewer)."""
    engine = new_engine(engine_name, config, random.Random(42))
    t = time.perf_counter()
    train(engine, docs, run_steps, batch=batch)
    return (time.perf_counter() - t) * steps / run_steps, engine


def main() -> None:
    parser = argparse.ArgumentParser(description="Training and scoring speed of both engines.")
    parser.add_argument(
        "--quick", action="store_true", help="time the pure engine on 20 steps and extrapolate"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="run the pure engine for the whole 500 Pulse-sized steps too",
    )
    args = parser.parse_args()
    pure_steps = (20, 20) if args.quick else (1000, 500 if args.full else 50)
    rows: list[tuple[str, str, str]] = []

    rng = random.Random(42)
    names = TextDocs(NAMES, rng)
    micro = ModelSize(vocab_size=names.vocab_size)
    docs = names.token_docs()
    fast_s, _ = timed_training("fast", micro, docs, 1000, 1000)
    pure_s, _ = timed_training("pure", micro, docs, 1000, pure_steps[0])
    note = "" if pure_steps[0] == 1000 else f" (from {pure_steps[0]} steps)"
    rows += [
        ("microgpt run, 1,000 steps, pure engine", f"{pure_s:.1f} s{note}", ""),
        ("microgpt run, 1,000 steps, fast engine", f"{fast_s:.3f} s", "goal < 0.5 s"),
        ("  fast / pure speed-up", f"{pure_s / fast_s:,.0f}x", "goal > 400x"),
    ]

    pdocs = pulse_docs(20_000)
    fast_p, engine = timed_training("fast", PULSE, pdocs, 500, 500)
    pure_p, _ = timed_training("pure", PULSE, pdocs, 500, pure_steps[1])
    note = "" if pure_steps[1] == 500 else f" (from {pure_steps[1]} steps)"
    rows += [
        (
            f"Pulse size ({num_params(PULSE):,} params), 500 steps, pure",
            f"{pure_p:.1f} s{note}",
            "",
        ),
        (
            f"Pulse size ({num_params(PULSE):,} params), 500 steps, fast",
            f"{fast_p:.3f} s",
            "goal < 1 s",
        ),
        ("  fast / pure speed-up", f"{pure_p / fast_p:,.0f}x", ""),
    ]

    batch_s, _ = timed_training("fast", PULSE, pdocs, 200, 200, batch=32)
    rows.append(("fast training at batch 32", f"{200 * 32 / batch_s:,.0f} docs/s", ""))

    ids = np.array(pulse_docs(100_000, seed=1))
    engine.token_nll(ids[:1000])  # warm up
    t = time.perf_counter()
    engine.token_nll(ids, first=1, stop=7)
    batched = len(ids) / (time.perf_counter() - t)
    singles = ids[:2000]
    t = time.perf_counter()
    for row in singles:
        engine.token_nll(row[None, :], first=1, stop=7)
    single_ms = (time.perf_counter() - t) / len(singles) * 1e3
    rows += [
        ("scoring, batched (100,000 observations)", f"{batched:,.0f} obs/s", "goal >= 50,000"),
        ("scoring, one observation at a time", f"{single_ms:.3f} ms/obs", "goal < 1 ms"),
    ]

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'figure':>22}  goal")
    for name, figure, goal in rows:
        print(f"{name:<{width}}  {figure:>22}  {goal}")


if __name__ == "__main__":
    main()
