"""`biasbench export`: the balanced spoken set as a Hugging Face dataset on disk, read back."""

import importlib.util
import io
import shutil

import numpy as np
import pandas as pd
import pytest

from biasbench.errors import BiasbenchError
from conftest import write

pytestmark = [
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="datasets is not installed"),
]

QC_HEADER = "voice_id,wer,cer,speaking_rate,duration_s,loudness_lufs,clipping_ratio,silence_ratio,flags\n"


def _qc_csv(path, voice_ids, skip=()):
    rows = [f"{v},{0.1 + i / 100:.2f},0.05,3.2,4.0,-20.5,0,0.12,{'wer_high(z=+4.0)' if i == 0 else ''}"
            for i, v in enumerate(voice_ids) if v not in skip]
    return write(path, QC_HEADER + "\n".join(rows) + "\n")


def _decode(dataset, index: int):
    """One clip as (samples, rate), as the card says: `ds[i]["audio"]` with the installed stack
    (no torchcodec) gives the WAV bytes; soundfile reads them."""
    import soundfile as sf

    from biasbench.export import decode_audio

    value = dataset[index]["audio"]
    assert set(value) == {"bytes", "path"}
    samples, rate = decode_audio(value)
    again, _ = sf.read(io.BytesIO(value["bytes"]), dtype="float32")  # the card's recipe, without biasbench
    np.testing.assert_array_equal(samples, again)
    return samples, rate


def test_export_round_trip(tmp_path, biasbench_cache):
    import datasets

    from biasbench.export import export_dataset
    from biasbench.tts.cache import AudioCache
    from biasbench.voices.pool import load_pool

    voices = [v.id for v in load_pool("espeak-default")[0].voices]
    qc = _qc_csv(tmp_path / "voice_qc.csv", voices)
    out = tmp_path / "asr_set"
    result = export_dataset("asr_fairness", "espeak-default", out, limit=2, qc_csv=qc, data_source="local")
    assert (result.n_rows, result.n_items, result.n_voices, result.failures) == (36, 2, 18, [])

    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 36
    assert isinstance(ds.features["audio"], datasets.Audio) and ds.features["audio"].sampling_rate == 16000
    for column in ("item_id", "text", "instruction", "choices", "target", "voice_id", "gender", "ethnicity",
                   "accent", "label_source", "kind", "qc_wer", "qc_loudness_lufs", "qc_flags"):
        assert column in ds.column_names, column
    frame = ds.remove_columns("audio").to_pandas()
    assert frame.groupby(["gender", "ethnicity"]).size().eq(6).all()  # balanced: 3 voices x 2 items per cell
    assert (frame["target"] == frame["text"]).all() and frame["choices"].map(len).eq(0).all()
    assert set(frame["label_source"]) == {"proxy"}
    first = frame.iloc[0]
    assert first["qc_flags"] == "wer_high(z=+4.0)" and first["qc_wer"] == pytest.approx(0.10)

    samples, rate = _decode(ds, 0)
    assert rate == 16000 and len(samples) == pytest.approx(first["audio_seconds"] * 16000, abs=1)
    cached = AudioCache().get(first["audio_key"])
    np.testing.assert_allclose(samples, cached, atol=1 / 32768)  # the very clip a run sends to a model

    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: other")
    _check_card_metadata(out, ["automatic-speech-recognition"])
    assert "PROXIES" in card and "Apache-2.0" in card and "espeak-ng" in card and "qc_*" in card
    assert "push_to_hub" in card


def test_export_multiple_choice_and_refusals(tmp_path, biasbench_cache):
    import datasets

    from biasbench.export import export_dataset

    out = tmp_path / "mmlu"
    export_dataset("mmlu", "espeak-default", out, limit=1, data_source="local")
    frame = datasets.load_from_disk(str(out)).remove_columns("audio").to_pandas()
    assert len(frame) == 18 and frame["choices"].map(len).eq(4).all()
    assert frame["target"].isin(list("ABCD")).all() and frame["item_id"].nunique() == 1
    assert "qc_wer" not in frame
    with pytest.raises(BiasbenchError, match="not empty"):
        export_dataset("mmlu", "espeak-default", out, limit=1, data_source="local")
    export_dataset("mmlu", "espeak-default", out, limit=1, data_source="local", overwrite=True)
    with pytest.raises(BiasbenchError, match="no QC row"):
        voices = pd.Series(frame["voice_id"].unique())
        export_dataset("mmlu", "espeak-default", tmp_path / "other", limit=1, data_source="local",
                       qc_csv=_qc_csv(tmp_path / "partial.csv", voices, skip={voices[0]}))


def test_export_command(tmp_path, biasbench_cache):
    from typer.testing import CliRunner

    from biasbench.cli import app

    out = tmp_path / "cli_set"
    result = CliRunner().invoke(app, ["export", "asr_fairness", str(out), "--pool", "espeak-default",
                                      "--limit", "1", "--data-source", "local", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote 18 clips" in result.output and (out / "README.md").is_file()


def _check_card_metadata(out, task_categories):
    """The Hub's card conventions, checked offline with huggingface_hub's own parser: `license: other`
    comes with `license_name` (lowercase id) and `license_link` (a file that is there), and
    `task_categories` / `size_categories` / `language` are set."""
    import re

    from huggingface_hub import DatasetCard

    data = DatasetCard.load(out / "README.md").data.to_dict()
    assert data["license"] == "other" and re.fullmatch(r"[a-z0-9][a-z0-9-.]*", data["license_name"])
    assert (out / data["license_link"]).is_file() and "Text:" in (out / data["license_link"]).read_text()
    assert data["task_categories"] == task_categories
    assert data["language"] == ["en"] and re.fullmatch(r"(n<1K|1K<n<10K|10K<n<100K|100K<n<1M)",
                                                        data["size_categories"][0])


def test_multiple_choice_card_and_audio_without_torchcodec(tmp_path, biasbench_cache):
    import datasets

    from biasbench.export import export_dataset

    out = tmp_path / "mc"
    export_dataset("mmlu", "espeak-default", out, limit=1, data_source="local")
    ds = datasets.load_from_disk(str(out))
    assert isinstance(ds.features["audio"], datasets.Audio) and ds.features["audio"].decode is False
    samples, rate = _decode(ds, 0)
    assert rate == 16000 and samples.ndim == 1 and len(samples) > 16000
    _check_card_metadata(out, ["audio-text-to-text"])
