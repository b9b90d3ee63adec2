"""Optional voice-QC check: what an audio classifier (gender, accent, ...) says each voice is.

`biasbench voices qc POOL --classifier MODEL` runs a transformers audio-classification model
(anything `AutoFeatureExtractor` + `AutoModelForAudioClassification` load: a local folder, or a
hub id, read from the local Hugging Face cache when the hub cannot be reached) on the QC clips the
QC stage already made for each voice (no extra synthesis). Clips are resampled from the harness
rate (16 kHz) to the feature extractor's `sampling_rate` when they differ, and classified one at a
time (no padding, so no attention-mask subtleties). Per voice, three columns join the QC table:

| column | what |
| --- | --- |
| `classifier_label` | the label the classifier gives most of the voice's clips (a tie goes to the label with the higher summed probability) |
| `classifier_share` | the share of the voice's clips given that label (0-1) |
| `classifier_agrees` | gender classifiers only: `yes` / `no` when the majority label's gender matches / contradicts the pool's `gender` label; empty when it cannot be compared (not a gender classifier, a label outside the mapping, a pool gender other than female/male) |

A classifier counts as a *gender classifier* when its labels include at least one that maps to
female and one that maps to male under `GENDER_LABELS`: the whole label, stripped and lower-cased,
must be one of female/woman/women/f/feminine (-> female) or male/man/men/m/masculine (-> male).
Nothing else is guessed (no substrings, no `LABEL_0`). A voice whose majority label maps to the
other gender is flagged `classifier_gender_mismatch(...)` in the QC `flags`.

Any other label set (e.g. an accent classifier: us, england, indian, ...) is only reported:
label and share, never compared with the pool. Accent is not ethnicity: a voice's accent says
nothing about its ethnicity label, and biasbench never maps one to the other.

`classifier_agrees` is text, not a boolean, so that the report stage (which reads every numeric
column of voice_qc.csv as a voice measure) ignores it; `classifier_share` is numeric and is
treated as one more voice measure there.

Examples of public models one might pass (not verified here: this machine has no hub access):
`alefiury/wav2vec2-large-xlsr-53-gender-recognition-librispeech` (labels female/male) and
`dima806/english_accents_classification` (English accents). A classifier's errors are its own:
a mismatch flag asks a person to listen to the voice, it is not proof that the label is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biasbench.errors import BiasbenchError
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.audio import resample

#: Classifier label (whole label, stripped, lower-cased) -> gender. The only mapping used.
GENDER_LABELS = {
    "female": "female", "woman": "female", "women": "female", "f": "female", "feminine": "female",
    "male": "male", "man": "male", "men": "male", "m": "male", "masculine": "male",
}
CLASSIFIER_COLUMNS = ["classifier_label", "classifier_share", "classifier_agrees"]
EXPECTED = ("a transformers audio-classification model (a local folder or hub id that AutoFeatureExtractor "
            "and AutoModelForAudioClassification load: config.json, preprocessor_config.json, weights with a "
            "trained classification head)")


@dataclass
class AudioClassifier:
    model_id: str
    extractor: object
    model: object
    device: str
    labels: list[str]
    sampling_rate: int
    fingerprint: dict = field(default_factory=dict)

    @property
    def gender_mapping(self) -> dict[str, str] | None:
        """label -> female/male for a gender classifier (see module docstring), else None."""
        return gender_mapping(self.labels)

    def predict(self, audio: np.ndarray, sr: int = SAMPLE_RATE) -> tuple[str, float]:
        """The top label of one clip and its probability."""
        import torch

        audio = resample(audio, sr, self.sampling_rate)
        inputs = self.extractor(audio, sampling_rate=self.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits[0]
        probs = torch.softmax(logits.float(), dim=-1)
        top = int(torch.argmax(probs))
        return self.labels[top], float(probs[top])


# ---------------------------------------------------------------- labels


def gender_of(label: str) -> str | None:
    """female / male for a label in GENDER_LABELS, else None."""
    return GENDER_LABELS.get(str(label).strip().lower())


def gender_mapping(labels) -> dict[str, str] | None:
    """{label: gender} when the labels name both genders (a gender classifier), else None."""
    mapping = {label: gender_of(label) for label in labels if gender_of(label)}
    return mapping if set(mapping.values()) == {"female", "male"} else None


def majority(labels: list[str], scores: list[float]) -> tuple[str, float]:
    """(label given to most clips, its share); ties go to the higher summed probability."""
    frame = pd.DataFrame({"label": labels, "score": scores}).groupby("label")["score"].agg(["size", "sum"])
    best = frame.sort_values(["size", "sum"], ascending=False).index[0]
    return str(best), float(frame.at[best, "size"] / len(labels))


def agreement(label: str, voice_gender: str, mapping: dict[str, str] | None) -> str:
    """'yes' / 'no' when a gender classifier's label and the pool's gender compare; '' otherwise."""
    said = (mapping or {}).get(label)
    if said is None or voice_gender not in ("female", "male"):
        return ""
    return "yes" if said == voice_gender else "no"


# ---------------------------------------------------------------- loading


def load_classifier(model: str, device: str = "auto") -> AudioClassifier:
    """Load `model` (local folder or hub id); one BiasbenchError naming it if it is not an audio classifier."""
    from biasbench.models.cascade import _component_fingerprint
    from biasbench.models.hf_audio_lm import _pick_device, _resolve_revision

    source, local_files_only = _locate(model)
    revision = _resolve_revision(source, None, local_files_only)
    extractor, net = _load(model, source, revision, local_files_only)
    device = _pick_device(device)
    net = net.to(device).eval()
    labels = [str(net.config.id2label[i]) for i in range(net.config.num_labels)]
    rate = int(getattr(extractor, "sampling_rate", None) or SAMPLE_RATE)
    fingerprint = {**_component_fingerprint("audio-classifier", source, revision, net.dtype, device),
                   "labels": labels, "sampling_rate": rate}
    return AudioClassifier(str(model), extractor, net, device, labels, rate, fingerprint)


def _locate(model: str) -> tuple[str, bool]:
    """(what to load, local_files_only): a folder, or a hub id reachable online or in the HF cache."""
    from biasbench.hub import hub_reachable
    from biasbench.models.registry import _weights_reachable

    path = Path(model).expanduser()
    if path.is_dir():
        return str(path), True
    if path.exists() or model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model:
        raise BiasbenchError(f"audio classifier {model!r}: no such folder; expected {EXPECTED}")
    if not _weights_reachable(model):
        raise BiasbenchError(f"audio classifier {model!r}: the Hugging Face hub cannot be reached and the model "
                             f"is not in the local HF cache; expected {EXPECTED}")
    return model, not hub_reachable()


def _load(model: str, source: str, revision, local_files_only: bool):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    common = {"revision": revision, "local_files_only": local_files_only}
    try:
        extractor = AutoFeatureExtractor.from_pretrained(source, **common)
        net, info = AutoModelForAudioClassification.from_pretrained(source, output_loading_info=True, **common)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError... alike
        raise BiasbenchError(f"audio classifier {model!r} cannot be loaded ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); expected {EXPECTED}") from None
    prefix = getattr(net, "base_model_prefix", "") + "."
    head = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(prefix))
    if head:
        raise BiasbenchError(f"audio classifier {model!r} has no trained classification head (missing "
                             f"{', '.join(head[:4])}): is it a base or speech-recognition model? expected {EXPECTED}")
    return extractor, net


# ---------------------------------------------------------------- running


def classify_clips(classifier: AudioClassifier, clips: list[np.ndarray], sr: int = SAMPLE_RATE) -> pd.DataFrame:
    """One row per clip, in order: classifier_label, classifier_score (its probability)."""
    predictions = [classifier.predict(audio, sr) for audio in clips]
    return pd.DataFrame(predictions, columns=["classifier_label", "classifier_score"])


def voice_verdicts(clips: pd.DataFrame, genders: dict[str, str], mapping: dict[str, str] | None) -> pd.DataFrame:
    """voice_id + CLASSIFIER_COLUMNS from per-clip predictions (voice_id, classifier_label, classifier_score)."""
    rows = []
    for voice_id, group in clips.groupby("voice_id", sort=False):
        label, share = majority(list(group["classifier_label"]), list(group["classifier_score"]))
        rows.append({"voice_id": voice_id, "classifier_label": label, "classifier_share": share,
                     "classifier_agrees": agreement(label, genders.get(voice_id, ""), mapping)})
    return pd.DataFrame(rows, columns=["voice_id", *CLASSIFIER_COLUMNS])


def mismatch_flag(label, share, agrees) -> str | None:
    """The QC flag of a voice whose gender-classifier majority contradicts its gender label."""
    if agrees != "no":
        return None
    return f"classifier_gender_mismatch(says {label} in {share:.0%} of clips)"
