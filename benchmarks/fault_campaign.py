"""Many seeded kill -9s of `biasbench run` (console script), each followed by --resume, compared
with an uninterrupted run: nothing may be lost, doubled or changed. A kill lands while clips
are being made (a fresh audio cache, one voice failing) or while answers are stored (that
voice retried); the moment is drawn from the seed.

Usage: .venv/bin/python benchmarks/fault_campaign.py [--kills 20] [--items 2] [--seed 0]
Prints one line per kill and the totals (the README's Reliability section quotes them).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from faultkit import Faults, differences  # noqa: E402

VOICES = 18


def one_kill(kit: Faults, index: int, rng: random.Random, n: int) -> tuple[str, bool, list[str]]:
    run_id = f"kill-{index}"
    kit.fresh_audio_cache(f"cache-{index}")
    kit.failing(True)
    if rng.random() < 0.5:  # in synthesis: after some clips are cached
        stage, clips = "synthesis", rng.randint(1, n - 2 * kit.items - 1)
        kit.slow(0.03)
        landed = kit.kill_when(kit.start(run_id), lambda: kit.clips() >= clips)
    else:  # in answering: the failed voice's retries, after some are stored
        stage = "answering"
        kit.run(run_id)
        kit.failing(False)
        retried = rng.randint(0, kit.items - 1)
        landed = kit.kill_when(kit.start(run_id, "--resume"),
                               lambda: (kit.stored(run_id)["status"] == "valid").sum() >= n - kit.items + retried)
    kit.failing(False)
    kit.slow(None)
    resumed = kit.run(run_id, "--resume")
    problems = differences(kit.stored(run_id), kit.reference) if resumed.returncode == 0 else [resumed.stderr[-300:]]
    if resumed.returncode == 0 and not kit.manifest(run_id)["complete"]:
        problems.append("manifest not complete")
    return stage, landed, problems


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--items", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng, n = random.Random(args.seed), args.items * VOICES
    with tempfile.TemporaryDirectory() as root:
        kit = Faults(Path(root), items=args.items)
        assert kit.run("reference").returncode == 0
        kit.reference = kit.stored("reference")
        survived = landed_total = 0
        for index in range(args.kills):
            stage, landed, problems = one_kill(kit, index, rng, n)
            survived += not problems
            landed_total += landed
            print(f"kill {index:2d} in {stage:9s} {'landed' if landed else 'run ended first'}: "
                  f"{'ok' if not problems else '; '.join(problems)}", flush=True)
    print(f"{survived}/{args.kills} kills survived (resumed to a store identical to an uninterrupted run); "
          f"{landed_total} landed before the run ended")


if __name__ == "__main__":
    main()
