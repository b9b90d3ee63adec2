"""How long the clips a run still needs will take to synthesise, for `biasbench plan`.

Cloning is the dominant GPU cost of a real study (MMLU-10% x 30 voices is ~42k clips): this is
the one number `plan` adds for it. Seconds per clip: `BIASBENCH_CLONE_S_PER_CLIP` when set (measure
it on your GPU with `benchmarks/bench_cloning.py --real`: its s/clip column at the batch size you
will use), else the default below, an assumption (~1 s per clip for F5-TTS / MaskGCT on one
data-centre GPU, one clip at a time) and labelled as such. Engines that are not zero-shot cloners are cheap on CPU and are not counted.
"""

from __future__ import annotations

import os

DEFAULT_CLONE_S_PER_CLIP = 1.0
ENV = "BIASBENCH_CLONE_S_PER_CLIP"


def cloning_estimate(jobs_to_make) -> dict:
    """`jobs_to_make`: the SynthesisJobs not in the cache. Returns n_clips_to_clone, cloning_hours
    (GPU hours, one process) and where the per-clip figure comes from."""
    from biasbench.tts.registry import CLONING_BACKENDS

    n = sum(1 for job in jobs_to_make if job.backend in CLONING_BACKENDS and job.backend != "standin-clone")
    if os.environ.get(ENV):
        seconds, source = float(os.environ[ENV]), f"{ENV}={os.environ[ENV]} s/clip"
    else:
        seconds, source = DEFAULT_CLONE_S_PER_CLIP, (f"assumed {DEFAULT_CLONE_S_PER_CLIP:g} s/clip on one GPU; "
                                                     f"measure yours with benchmarks/bench_cloning.py --real and set {ENV}")
    return {"n_clips_to_clone": n, "cloning_hours": n * seconds / 3600, "cloning_source": source}
