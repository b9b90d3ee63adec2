"""`biasbench voices qc --classifier MODEL`: an audio classifier's label per voice, compared with the
pool's gender label only for a gender classifier; clear errors for models that are not classifiers.

The classifiers are tiny real transformers models built here (random weights), made deterministic
by zeroing the classification head's weight and giving one label a large bias: that label wins
on every clip, whatever the audio."""

import importlib.util
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import write

from biasbench.errors import BiasbenchError
from biasbench.models.base import Response
from biasbench.tts.synthesis import resample
from biasbench.voices.classify import (
    agreement,
    gender_mapping,
    gender_of,
    majority,
    voice_verdicts,
)
from biasbench.voices.qc import (
    CLASSIFIER_COLUMNS,
    QC_COLUMNS,
    QC_SENTENCES,
    qc_columns,
    read_qc,
)

requires_qc_measures = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and importlib.util.find_spec("pyloudnorm") and importlib.util.find_spec("jiwer")),
    reason="needs espeak-ng, pyloudnorm and jiwer")

SENTENCES = QC_SENTENCES[:2]
POOL = """
pool: classifier-test
description: one male and one female espeak-ng voice
voices:
  - {id: man-1, gender: male, ethnicity: white, accent: en-us, label_source: proxy,
     tts: {backend: espeak-ng, voice: en-us, variant: m1, speed: 165}}
  - {id: woman-1, gender: female, ethnicity: white, accent: en-us, label_source: proxy,
     tts: {backend: espeak-ng, voice: en-us, variant: f2, speed: 165}}
"""


class PerfectASR:
    """Stands in for Whisper: returns the sentence each QC request spoke (requests come in plan
    order, voice by voice, sentence by sentence), so the ASR measures flag nothing."""

    def generate(self, requests):
        return [Response(request_id=r.request_id, text=SENTENCES[int(r.request_id.split("-")[1]) % len(SENTENCES)])
                for r in requests]


def tiny_classifier(folder, labels, winner, sampling_rate=16000):
    """A saved Wav2Vec2 audio classifier over `labels` that always answers `winner`."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
    )

    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_feat_extract_layers=2,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, classifier_proj_size=8,
                            id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    model = Wav2Vec2ForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[labels.index(winner)] = 10.0
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=sampling_rate).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pool_path(tmp_path_factory):
    return write(tmp_path_factory.mktemp("pool") / "pool.yaml", POOL)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifiers")
    return {
        "always_female": tiny_classifier(root / "gender", ["female", "male"], "female"),
        # an accent classifier whose extractor wants 8 kHz: the 16 kHz clips are resampled
        "accent": tiny_classifier(root / "accent", ["us", "england"], "england", sampling_rate=8000),
    }


def run(pool_path, classifier):
    from biasbench.voices.qc import run_qc

    return run_qc(str(pool_path), sentences=SENTENCES, backend=PerfectASR(), classifier=str(classifier), workers=1)


# ---------------------------------------------------------------- labels and verdicts (no model)


def test_gender_mapping_is_explicit():
    assert [gender_of(x) for x in ("Female", " woman ", "F", "male", "MAN", "m", "men")] == \
        ["female", "female", "female", "male", "male", "male", "male"]
    assert [gender_of(x) for x in ("LABEL_0", "females", "fem", "child", "us")] == [None] * 5
    assert gender_mapping(["female", "male", "child"]) == {"female": "female", "male": "male"}
    assert gender_mapping(["Woman", "Man"]) == {"Woman": "female", "Man": "male"}
    assert gender_mapping(["us", "england", "indian"]) is None
    assert gender_mapping(["female", "child"]) is None  # one gender only: not a gender classifier
    mapping = {"female": "female", "male": "male"}
    assert agreement("male", "male", mapping) == "yes" and agreement("female", "male", mapping) == "no"
    assert agreement("child", "male", {"female": "female", "male": "male"}) == ""  # label outside the mapping
    assert agreement("female", "nonbinary", mapping) == ""  # pool gender that cannot be compared
    assert agreement("england", "female", None) == ""  # accent: never compared


def test_majority_share_and_ties():
    assert majority(["female", "female", "male"], [0.9, 0.8, 0.99]) == ("female", pytest.approx(2 / 3))
    assert majority(["female", "male"], [0.6, 0.9]) == ("male", 0.5)  # tie: higher summed probability
    clips = pd.DataFrame({"voice_id": ["a", "a", "a", "a", "b", "b"],
                          "classifier_label": ["male", "male", "male", "female", "female", "female"],
                          "classifier_score": [0.9] * 6})
    verdicts = voice_verdicts(clips, {"a": "male", "b": "male"}, {"female": "female", "male": "male"})
    assert list(verdicts.columns) == ["voice_id", *CLASSIFIER_COLUMNS]
    assert verdicts.set_index("voice_id").to_dict("index") == {
        "a": {"classifier_label": "male", "classifier_share": 0.75, "classifier_agrees": "yes"},
        "b": {"classifier_label": "female", "classifier_share": 1.0, "classifier_agrees": "no"}}


def test_resample_to_the_extractor_rate():
    audio = np.sin(2 * np.pi * 200 * np.arange(16000) / 16000).astype(np.float32)
    assert resample(audio, 16000, 16000) is audio
    out = resample(audio, 16000, 22050)
    assert len(out) == 22050 and out.dtype == np.float32


# ---------------------------------------------------------------- the QC run


@requires_qc_measures
def test_gender_classifier_flags_the_voice_it_contradicts(pool_path, models, biasbench_cache, tmp_path):
    from biasbench.voices.qc import write_qc

    result = run(pool_path, models["always_female"])
    assert list(result.table.columns) == qc_columns(True) == QC_COLUMNS[:-1] + CLASSIFIER_COLUMNS + ["flags"]
    table = result.table.set_index("voice_id")
    man, woman = table.loc["man-1"], table.loc["woman-1"]
    assert (man.classifier_label, man.classifier_share, man.classifier_agrees) == ("female", 1.0, "no")
    assert man["flags"] == "classifier_gender_mismatch(says female in 100% of clips)"
    assert (woman.classifier_label, woman.classifier_share, woman.classifier_agrees) == ("female", 1.0, "yes")
    assert woman["flags"] == ""
    assert (result.clips["classifier_label"] == "female").all() and len(result.clips) == 4
    assert result.meta["classifier"]["kind"] == "gender"

    paths = write_qc(result, tmp_path / "voice_qc.csv")
    back = read_qc(paths["csv"]).set_index("voice_id")
    assert back.loc["man-1", "classifier_agrees"] == "no" and back.loc["man-1", "classifier_share"] == 1.0
    details = json.loads(paths["json"].read_text())
    assert details["classifier"]["labels"] == ["female", "male"]
    assert details["classifier"]["fingerprint"]["local_sha256"]


@requires_qc_measures
def test_accent_classifier_is_reported_not_compared(pool_path, models, biasbench_cache):
    result = run(pool_path, models["accent"])
    table = result.table.set_index("voice_id")
    assert (table["classifier_label"] == "england").all() and (table["classifier_share"] == 1.0).all()
    assert (table["classifier_agrees"] == "").all()
    assert not table["flags"].str.contains("classifier").any()
    assert result.meta["classifier"]["gender_mapping"] is None
    assert result.meta["classifier"]["fingerprint"]["sampling_rate"] == 8000


@requires_qc_measures
def test_qc_without_classifier_keeps_the_contract(pool_path, biasbench_cache):
    from biasbench.voices.qc import run_qc

    result = run_qc(str(pool_path), sentences=SENTENCES, backend=PerfectASR(), workers=1)
    assert list(result.table.columns) == QC_COLUMNS and result.meta["classifier"] is None


@requires_qc_measures
def test_cli_option(pool_path, models, biasbench_cache, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from biasbench.models import registry
    from biasbench.voices.cli import voices_app

    monkeypatch.setattr(registry, "load_backend", lambda *a, **k: PerfectASR())
    out = tmp_path / "voice_qc.csv"
    result = CliRunner().invoke(voices_app, ["qc", str(pool_path), "--out", str(out), "--n-sentences", "2",
                                             "--classifier", str(models["always_female"]), "--no-progress",
                                             "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "classifier_gender_mismatch" in result.output and "1 of 2 voices flagged" in result.output
    assert read_qc(out).set_index("voice_id").loc["woman-1", "classifier_agrees"] == "yes"


# ---------------------------------------------------------------- bad models: one clear error, before synthesis


@pytest.fixture
def no_synthesis(monkeypatch):
    from biasbench.tts import synthesis

    def refuse(*args, **kwargs):
        raise AssertionError("synthesis started before the classifier was checked")

    monkeypatch.setattr(synthesis, "synthesize_all", refuse)


def _ctc_model(folder):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    Wav2Vec2ForCTC(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  conv_dim=(16,), conv_stride=(5,), conv_kernel=(10,), num_feat_extract_layers=1,
                                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder"),
    ("empty", "cannot be loaded"),
    ("ctc", "no trained classification head"),
    ("hub", "not in the local HF cache"),
])
def test_bad_model_is_one_clear_error(case, message, pool_path, tmp_path, no_synthesis, biasbench_cache):
    from biasbench.voices.qc import run_qc

    model = {"missing": lambda: str(tmp_path / "no-such-model"),
             "empty": lambda: str((tmp_path / "empty").mkdir() or tmp_path / "empty"),
             "ctc": lambda: str(_ctc_model(tmp_path / "ctc")),
             "hub": lambda: "nobody-here/no-such-classifier"}[case]()
    with pytest.raises(BiasbenchError, match=message) as error:
        run_qc(str(pool_path), sentences=SENTENCES, backend=PerfectASR(), classifier=model)
    assert repr(model) in str(error.value) and "audio-classification model" in str(error.value)
