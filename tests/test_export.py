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
    """One clip as (samples, rate): through datasets when torchcodec is there, else soundfile
    on the stored bytes (datasets 5 decodes Audio with torchcodec only)."""
    import soundfile as sf
    from datasets import Audio

    if importlib.util.find_spec("torchcodec") is not None:
        decoded = dataset[index]["audio"].get_all_samples()
        return decoded.data.numpy().squeeze(0), decoded.sample_rate
    raw = dataset.cast_column("audio", Audio(decode=False))[index]["audio"]
    samples, rate = sf.read(io.BytesIO(raw["bytes"]), dtype="float32")
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
