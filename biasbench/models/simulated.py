"""A simulated "listener" with a planted voice dependence, for tests and calibration.

`PitchBiasedBackend` implements the model-backend interface without any model. For each
audio request it estimates the clip's median fundamental frequency (F0, autocorrelation
pitch tracking in numpy) and answers as a seeded random listener whose answer
distribution leans with pitch, by a configurable `strength`:

* generate (categorical): high-pitched voices hear "nurse" more often, low-pitched voices
  "software engineer"; the other answers keep fixed weights.
* generate (numeric, when the text prompt asks for a number/amount/salary): the value is
  lower for high-pitched voices (by about `strength` x 20% at the pitch extremes).
* score_choices: the log-probabilities move toward one letter (`favoured_letter`, "A" by
  default) for high-pitched voices and away from it for low-pitched ones.
* generate (open answers, requests with `open_answer`): a numbered list of generic advice
  steps, then hedging sentences. Low-pitched voices get fewer steps (`strength` x 3 steps
  fewer at the low pitch extreme, so shorter answers) and more hedges. The draw is keyed by
  the item (its typical number of steps) and by the request, so every (item, voice, sample)
  gets its own noise: with `strength = 0` the answers still vary from voice to voice, but
  nothing about them depends on the voice.

Each answer is a seeded draw for its (item, voice, sample): seeded by the request's
`item_id` and `voice_id` (set by the runner), else by its content (text prompt and audio).
Never by the prompt alone: a task whose text prompt is the same for every item (the question
spoken, the instruction fixed) would give every item one draw, and the planted lean would show
as all-or-nothing per voice, or not at all.

`strength = 0` removes every dependence on the voice's sound: voices still differ by their own
draws, but no voice group differs from another except by chance, so the voice-level tests
keep their level (the null of no group effect holds exactly: voices are exchangeable). With
`independent_draws=True` each request also gets its own draw (seeded by its request id).

What a task can show: the categorical lean between its first two answers; the numeric shift
where the text prompt asks for a number, amount or salary; for multiple choice, a lean toward
`favoured_letter`, which is always visible in the chosen letters per group and in accuracy
wherever the correct letters are not spread evenly (a listener that never sees the answer key
cannot change accuracy on items whose correct letters are balanced).

A simulation, unlike a model, may be told what a task can score (`fit_task`, called by the
runner for simulated backends only): a categorical task whose categories do not name the
default answers gets answers from its own categories, and a numeric task is answered with a
number in its range whatever its prompt says, so the planted effect shows on a task of any of
these types. Transcription has no such lean: the listener cannot hear the words.

Pushback (multi-turn tasks: a request with a `history`): after the user pushes back, the listener
changes its previous answer with probability `1 / (1 + exp(PUSHBACK_BASE + strength * PUSHBACK_SLOPE * z))`:
about 18% at the pivot pitch (and for every voice at `strength = 0`), about 62% for the lowest-pitched
voices and 3% for the highest. A changed choice is another letter (or category); a changed open answer
backs down to an apology and one step (shorter: `words_change` falls). The draw is seeded by item, voice, turn and sample, so it holds
still across reruns and is independent between voices.

These answers measure nothing about any model: the aliases `simulated-pitch-bias` and
`simulated-no-bias` are marked as pipeline checks in the registry.
"""

from __future__ import annotations

import hashlib
import math
import re
import time

import numpy as np

from biasbench.models.base import GenerationSettings, Request, Response

#: Pitch search range (Hz): covers low male to high female/child speech.
F0_MIN, F0_MAX = 60.0, 400.0
#: A peak within this fraction of the highest autocorrelation peak wins if its lag is shorter.
OCTAVE_TOLERANCE = 0.85
#: Where the listener's pitch scale is centred (between typical adult male ~120 Hz and
#: female ~210 Hz speaking F0) and how many octaves move it most of the way to +-1.
PIVOT_HZ, OCTAVE_SCALE = 160.0, 0.5

#: Default answers of the categorical listener (phrases the occupation lexicon maps).
DEFAULT_ANSWERS = ("I think you would make a great nurse.", "You could become a software engineer.",
                   "A teacher.", "An accountant.", "Maybe a graphic designer.")
#: What the open-answer listener says: generic steps (any item), and the hedges it adds.
OPEN_STEPS = ("Write down the goal you want to reach and a date for it.",
              "Break the work into small parts you can finish in a day.",
              "Set aside a fixed time each day for it.",
              "Keep a simple record of what you did and what changed.",
              "Ask someone you trust to check your progress every week.",
              "Remove one distraction from your routine.",
              "Start with the easiest part to build momentum.",
              "Review your plan at the end of each week and adjust it.",
              "Reward yourself when you finish a part.",
              "Look for a free course or guide from a reliable source.")
OPEN_HEDGES = ("I think this might help, but it depends on your situation.",
               "Perhaps some of this will not suit you; I'm not sure.",
               "It may be worth checking with someone who knows more, since this could vary.")
#: The pushback listener's flip probability on the logit scale (module doc): base and pitch slope.
PUSHBACK_BASE, PUSHBACK_SLOPE = 1.5, 2.0
BACK_DOWN = "Sorry, I may be wrong."
_NUMERIC_PROMPT = re.compile(r"\b(number|amount|how much|salary|price|budget|dollars?)\b", re.IGNORECASE)


def estimate_f0(audio: np.ndarray, sampling_rate: int, *, frame_s: float = 0.04, hop_s: float = 0.01,
                voicing_threshold: float = 0.5) -> float:
    """Median F0 (Hz) over the voiced frames of a clip; NaN when no frame is voiced.

    Per frame: the normalised autocorrelation (computed by FFT, divided by the overlap
    length so long lags are not penalised), its highest peak between the lags of
    F0_MAX and F0_MIN (the shortest-lag peak within OCTAVE_TOLERANCE of it, against
    sub-harmonic errors), refined by parabolic interpolation. A frame counts as voiced when
    that peak exceeds `voicing_threshold` (of the lag-0 value) and its energy is at least
    5% of the loudest frame's.
    """
    x = np.asarray(audio, dtype=np.float64).ravel()
    frame, hop = int(round(frame_s * sampling_rate)), int(round(hop_s * sampling_rate))
    if x.size < frame or not np.any(x):
        return float("nan")
    starts = np.arange(0, x.size - frame + 1, hop)
    frames = x[starts[:, None] + np.arange(frame)]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = (frames**2).sum(axis=1)
    loud = energy >= 0.05 * energy.max()
    if not loud.any():
        return float("nan")
    frames, energy = frames[loud], energy[loud]
    n_fft = 1 << int(np.ceil(np.log2(2 * frame)))
    spectrum = np.fft.rfft(frames, n=n_fft, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, n=n_fft, axis=1)[:, :frame]
    acf = acf / (frame - np.arange(frame)) * frame  # unbiased: each lag's overlap length
    acf = acf / energy[:, None]
    lo = max(2, int(np.floor(sampling_rate / F0_MAX)))
    hi = min(frame - 2, int(np.ceil(sampling_rate / F0_MIN)))
    window = acf[:, lo:hi + 1]
    # The shortest lag whose local peak comes close to the highest one: a periodic signal
    # peaks (almost) equally at every multiple of its period, and the multiples are the
    # sub-harmonic (octave) errors.
    local = np.zeros_like(window, dtype=bool)
    local[:, 1:-1] = (window[:, 1:-1] >= window[:, :-2]) & (window[:, 1:-1] >= window[:, 2:])
    best = window.max(axis=1, keepdims=True)
    candidate = local & (window >= OCTAVE_TOLERANCE * best)
    peak = np.where(candidate.any(axis=1), candidate.argmax(axis=1), window.argmax(axis=1))
    strength = window[np.arange(len(window)), peak]
    lag = (peak + lo).astype(np.float64)
    # Parabolic interpolation around the peak for sub-sample lags.
    inner = (peak > 0) & (peak < window.shape[1] - 1)
    rows = np.nonzero(inner)[0]
    a, b, c = (window[rows, peak[rows] - 1], window[rows, peak[rows]], window[rows, peak[rows] + 1])
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    lag[rows] += np.clip(shift, -0.5, 0.5)
    voiced = strength >= voicing_threshold
    if not voiced.any():
        return float("nan")
    return float(np.median(sampling_rate / lag[voiced]))


def pitch_score(f0: float) -> float:
    """Pitch on the listener's scale: -1 (low) .. +1 (high), 0 at PIVOT_HZ; 0 when unknown."""
    if f0 is None or not math.isfinite(f0) or f0 <= 0:
        return 0.0
    return float(np.tanh(math.log2(f0 / PIVOT_HZ) / OCTAVE_SCALE))


def _seed(*parts) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


class PitchBiasedBackend:
    """A seeded random listener whose answers lean with the voice's pitch (see module doc)."""

    max_audio_seconds = None  # hears any length
    takes_conversation = True  # multi-turn tasks: it answers pushback (module doc)

    def __init__(self, strength: float = 1.0, *, seed: int = 0, answers: tuple[str, ...] = DEFAULT_ANSWERS,
                 high_answer: int = 0, low_answer: int = 1, logit_scale: float = 2.0,
                 base_value: float = 60_000.0, value_shift: float = 0.2, favoured_letter: str = "A",
                 independent_draws: bool = False, name: str = "simulated-pitch-bias"):
        if strength < 0:
            raise ValueError("strength must be >= 0 (0 = no voice dependence)")
        self.strength, self.seed, self.name = float(strength), int(seed), name
        self.answers, self.high_answer, self.low_answer = tuple(answers), high_answer, low_answer
        self.logit_scale, self.base_value, self.value_shift = logit_scale, base_value, value_shift
        self.favoured_letter, self.independent_draws = favoured_letter, independent_draws
        self.always_numeric = False  # fit_task: a numeric task, whatever its prompt says
        self._f0_cache: dict[str, float] = {}
        self.pitch_log: list[tuple[str, float]] = []  # (request_id, f0) of every audio request

    # ---------------------------------------------------------------- interface

    def fingerprint(self) -> dict:
        return {"backend": "simulated", "model": self.name, "strength": self.strength, "seed": self.seed,
                "answers": list(self.answers), "high_answer": self.high_answer, "low_answer": self.low_answer,
                "logit_scale": self.logit_scale, "base_value": self.base_value, "value_shift": self.value_shift,
                "favoured_letter": self.favoured_letter, "independent_draws": self.independent_draws,
                **({"always_numeric": True} if self.always_numeric else {}),
                "pitch": {"method": "autocorrelation median F0", "pivot_hz": PIVOT_HZ, "octave_scale": OCTAVE_SCALE}}

    def generate(self, requests: list[Request]) -> list[Response]:
        start, out = time.perf_counter(), []
        for request in requests:
            z = self._pitch(request)
            if request.history:
                out.append(Response(request.request_id, self._after_pushback(request, z)))
                continue
            if request.open_answer:
                out.append(Response(request.request_id, self._open_answer(request, z)))
                continue
            rng = self._rng(request)
            if self.always_numeric or _NUMERIC_PROMPT.search(request.prompt or ""):
                value = self.base_value * math.exp(-self.strength * self.value_shift * z + 0.25 * rng.standard_normal())
                text = f"About ${value:,.0f}." if self.base_value >= 1000 else f"About {value:.3g}."
            else:
                logits = np.zeros(len(self.answers))
                logits[self.high_answer] += self.strength * self.logit_scale * z
                logits[self.low_answer] -= self.strength * self.logit_scale * z
                text = self.answers[_draw(logits, rng.random())]
            out.append(Response(request.request_id, text))
        return _timed(out, start)

    def score_choices(self, requests: list[Request]) -> list[Response]:
        start, out = time.perf_counter(), []
        for request in requests:
            letters = list(request.choices or [])
            if not letters:
                out.append(Response(request.request_id, "", error="score_choices needs the option letters"))
                continue
            z = self._pitch(request)
            logits = self._rng(request).standard_normal(len(letters))
            if request.history:  # keep the previous letter, or flip to another (module doc)
                kept = self._after_pushback(request, z, options=letters)
                logits[letters.index(kept)] = logits.max() + 3.0
            elif self.favoured_letter in letters:
                logits[letters.index(self.favoured_letter)] += self.strength * self.logit_scale * z
            logprobs = logits - np.logaddexp.reduce(logits)
            scores = {letter: float(v) for letter, v in zip(letters, logprobs)}
            out.append(Response(request.request_id, max(scores, key=scores.get), option_logprobs=scores))
        return _timed(out, start)

    def fit_task(self, output_type: str, phrases: dict[str, str] | None = None,
                 numeric_range: tuple[float | None, float | None] | None = None) -> None:
        """Answer in a task's terms (see the module doc): `phrases` maps a phrase the task's
        scorer recognises to its category; `numeric_range` is (min, max) of a numeric task.
        Answers the task already scores are kept, so existing tasks' runs do not change."""
        from biasbench.tasks.scoring import normalise_answer

        if output_type == "generate_categorical" and phrases:
            def category(text):
                padded = f" {normalise_answer(text)} "
                return next((c for p, c in phrases.items() if f" {p} " in padded), None)

            scored = {category(answer) for answer in self.answers} - {None}
            if len(scored) < 2:  # the default answers would be 'unmapped': answer with the task's phrases
                first = {}
                for phrase, name in phrases.items():
                    first.setdefault(name, phrase)
                if len(first) >= 2:
                    self.answers, self.high_answer, self.low_answer = tuple(first.values()), 0, 1
        if output_type == "generate_numeric":
            self.always_numeric = True
            low, high = numeric_range or (None, None)
            if (low is not None and self.base_value < low) or (high is not None and self.base_value > high):
                self.base_value = _middle(low, high, self.base_value)

    # ---------------------------------------------------------------- internals

    def _after_pushback(self, request: Request, z: float, options: list[str] | None = None) -> str:
        """The answer after a follow-up: the previous reply kept, or changed (module doc, "Pushback")."""
        previous = request.history[-1].reply
        settings = request.settings or GenerationSettings()
        rng = np.random.default_rng(_seed(self.seed, "pushback", request.item_id, request.voice_id, request.turn,
                                          settings.seed))
        p_flip = 1.0 / (1.0 + math.exp(PUSHBACK_BASE + self.strength * PUSHBACK_SLOPE * z))
        flip, u = rng.random() < p_flip, rng.random()
        if request.open_answer:
            if not flip:
                return previous
            return f"{BACK_DOWN}\n1. {OPEN_STEPS[int(u * len(OPEN_STEPS))]}"
        pool = list(options) if options is not None else list(self.answers)
        others = [a for a in pool if a != previous]
        if not flip or not others:
            return previous if previous in pool or options is None else pool[0]
        return others[int(u * len(others))]

    def _open_answer(self, request: Request, z: float) -> str:
        """Steps and hedges (module doc): the item sets the typical length, the voice's pitch moves
        it, and each request draws its own noise."""
        settings = request.settings or GenerationSettings()
        typical = 3 + np.random.default_rng(_seed(self.seed, "item", request.item_id)).integers(0, 3)
        rng = np.random.default_rng(_seed(self.seed, "open", request.request_id, settings.seed))
        shift = self.strength * z  # -1 (low pitch) .. +1 (high pitch)
        n_steps = int(np.clip(round(typical + 3.0 * shift + 0.8 * rng.standard_normal()), 1, len(OPEN_STEPS)))
        n_hedges = int(rng.binomial(len(OPEN_HEDGES), 1.0 / (1.0 + math.exp(0.5 + 2.0 * shift))))
        steps = rng.choice(len(OPEN_STEPS), n_steps, replace=False)
        hedges = rng.choice(len(OPEN_HEDGES), n_hedges, replace=False)
        lines = ["Here is what I would suggest:", *[f"{k}. {OPEN_STEPS[i]}" for k, i in enumerate(steps, 1)]]
        return "\n".join(lines + [" ".join(OPEN_HEDGES[i] for i in hedges)] if n_hedges else lines)

    def _rng(self, request: Request) -> np.random.Generator:
        """The listener's draw for this (item, voice, sample): by their ids when the runner gives
        them, else by the request's content; plus the request id if draws are independent."""
        settings = request.settings or GenerationSettings()
        if request.item_id is not None:
            who = [request.item_id, request.voice_id]
        else:
            audio = None if request.audio is None else _digest(request.audio)
            who = [request.prompt, audio]
        parts = [self.seed, *who, settings.seed, ",".join(request.choices or [])]
        if self.independent_draws:
            parts.append(request.request_id)
        return np.random.default_rng(_seed(*parts))

    def _pitch(self, request: Request) -> float:
        """Pitch score of the request's clip (0 for text-only requests)."""
        if request.audio is None or self.strength == 0:
            return 0.0
        audio = np.ascontiguousarray(request.audio, dtype=np.float32)
        key = _digest(audio) + f"@{request.sampling_rate}"
        if key not in self._f0_cache:
            self._f0_cache[key] = estimate_f0(audio, request.sampling_rate)
        f0 = self._f0_cache[key]
        self.pitch_log.append((request.request_id, f0))
        return pitch_score(f0)


def _middle(low: float | None, high: float | None, default: float) -> float:
    """A value inside [low, high] for the listener's numbers, keeping room for its spread."""
    if low is not None and high is not None:
        return math.exp((math.log(max(low, 1e-9)) + math.log(high)) / 2) if low > 0 else (low + high) / 2
    return 2.0 * low if low is not None and low > 0 else (high / 2.0 if high is not None and high > 0 else default)


def _digest(audio: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(audio, dtype=np.float32).tobytes(), digest_size=16).hexdigest()


def _draw(logits: np.ndarray, u: float) -> int:
    """Inverse-CDF draw from softmax(logits) with the uniform `u` (monotone in each weight)."""
    p = np.exp(logits - logits.max())
    cdf = np.cumsum(p / p.sum())
    return int(min(np.searchsorted(cdf, u, side="right"), len(cdf) - 1))


def _timed(responses: list[Response], start: float) -> list[Response]:
    share = (time.perf_counter() - start) / max(len(responses), 1)
    for response in responses:
        response.latency_s = share
    return responses


def simulated_backend(model: str) -> PitchBiasedBackend:
    """The backend for a registry model string: builtin:simulated-pitch-bias or -no-bias."""
    name = model.split(":", 1)[-1]
    strengths = {"simulated-pitch-bias": 1.0, "simulated-no-bias": 0.0}
    if name not in strengths:
        raise ValueError(f"unknown simulated model {model!r}; known: {', '.join(strengths)}")
    return PitchBiasedBackend(strengths[name], name=name)
