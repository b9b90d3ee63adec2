"""`biasbench voices build`: recipes, corpus loading, quality gates, atomic pool writing.

The corpus is built here from espeak-ng voices with made-up metadata (tests/corpus_fixture.py)."""

import shutil

import numpy as np
import pytest
import soundfile as sf

from biasbench.config import load_voice_pool
from biasbench.errors import BiasbenchError, ConfigError
from biasbench.voices.build import build_pool, candidate_order, trim_silence
from biasbench.voices.qc import snr_db
from biasbench.voices.recipe import load_corpus, load_recipe
from conftest import requires_espeak
from corpus_fixture import RECIPE, SPEAKERS, build_corpus, speak, write_recipe

pytestmark = requires_espeak
ONE_PER_CELL = SPEAKERS[0::2]


@pytest.fixture(scope="module")
def asr():
    from biasbench.models.registry import load_backend, resolve_model

    return load_backend(resolve_model("whisper-tiny-en"), device="cpu")


def make(tmp_path, speakers=ONE_PER_CELL, recipe=RECIPE, extra_rows=()):
    build_corpus(tmp_path / "corpus", speakers, extra_rows)
    return write_recipe(tmp_path, recipe)


# ------------------------------------------------------------------ recipes and corpus table


def test_recipe_maps_labels_and_names_sources(tmp_path):
    path = make(tmp_path, speakers=SPEAKERS[:2])
    corpus = load_corpus(load_recipe(path), path)
    assert set(corpus.table.gender) == {"female"} and set(corpus.table.ethnicity) == {"black"}
    assert corpus.recipe.labels.ethnicity.source == "self_reported"
    assert len(corpus.table) == 6 and corpus.table.utterance_id.is_unique


@pytest.mark.parametrize("change, field, message", [
    ("  licence: CC0-1.0\n", "corpus", "licence"),
    ("columns: {speaker_id: speaker,", "columns.speaker_id", "no column 'talker'"),
    ("values: {F: female, M: male}", "labels.gender.values", "not mapped by the recipe: ['M']"),
    ("M: male}", "labels.gender.values", "outside the pool schema"),
])
def test_bad_recipes_are_clear_errors(tmp_path, change, field, message):
    replacement = {
        "  licence: CC0-1.0\n": "",
        "columns: {speaker_id: speaker,": "columns: {speaker_id: talker,",
        "values: {F: female, M: male}": "values: {F: female}",
        "M: male}": "M: man}",
    }[change]
    path = make(tmp_path, speakers=SPEAKERS[10:12], recipe=RECIPE.replace(change, replacement))
    with pytest.raises(ConfigError) as err:
        load_corpus(load_recipe(path), path)
    assert str(path) in str(err.value) and field in str(err.value) and message in str(err.value)


def test_hf_corpus_from_a_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    build_corpus(tmp_path / "corpus", SPEAKERS[:1])
    import pandas as pd

    rows = pd.read_csv(tmp_path / "corpus" / "metadata.csv", dtype=str)
    rows["wav"] = [str(tmp_path / "corpus" / "audio" / name) for name in rows["wav"]]
    dataset = datasets.Dataset.from_dict(rows.to_dict("list")).cast_column("wav", datasets.Audio())
    dataset.save_to_disk(str(tmp_path / "saved"))
    recipe = RECIPE.replace("  local: {folder: corpus/audio, metadata: corpus/metadata.csv}",
                            "  hf: {id: saved, revision: test}")
    path = write_recipe(tmp_path, recipe)
    corpus = load_corpus(load_recipe(path), path)
    audio, rate = corpus.read_audio(corpus.table.audio.iloc[0])
    assert rate == 22050 and audio.ndim == 1 and len(audio) > rate and corpus.revision == "test"


def test_hub_corpus_needs_a_revision(tmp_path):
    recipe = RECIPE.replace("  local: {folder: corpus/audio, metadata: corpus/metadata.csv}",
                            "  hf: {id: someone/some-corpus}")
    path = write_recipe(tmp_path, recipe)
    with pytest.raises(ConfigError, match="corpus.hf.revision"):
        load_corpus(load_recipe(path), path)


# ------------------------------------------------------------------ measures and order


def test_snr_and_trim():
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(2 * np.pi * 150 * np.arange(16000) / 16000)
    quiet = np.concatenate([np.zeros(8000), tone, np.zeros(8000)]).astype(np.float32)
    noisy = quiet + rng.normal(0, 0.05, quiet.size).astype(np.float32)
    assert snr_db(quiet) > 60 and snr_db(noisy) < 20
    assert abs(len(trim_silence(quiet)) - 16000 - 3200) < 400


def test_candidate_order_is_seeded_and_independent_of_input_order():
    ids = [f"s{i}" for i in range(10)]
    assert candidate_order(ids, 0) == candidate_order(list(reversed(ids)), 0)
    assert candidate_order(ids, 0) != candidate_order(ids, 1)


# ------------------------------------------------------------------ building


@pytest.mark.slow  # speaker embeddings and Whisper on every candidate
def test_build_writes_pool_with_provenance_and_is_deterministic(tmp_path, asr):
    path = make(tmp_path)
    out = tmp_path / "pools" / "fixture-pool.yaml"
    result = build_pool(path, out, per_cell=1, seed=0, asr_backend=asr)
    pool = load_voice_pool(out)
    assert len(pool.voices) == 6 and {(v.gender, v.ethnicity) for v in pool.voices} == {
        (g, e) for g in ("female", "male") for e in ("black", "white", "east_asian")}
    voice = pool.voices[0]
    assert voice.tts.backend == "standin-clone" and voice.label_source == "self_reported"
    clip = out.parent / voice.reference_clip
    from biasbench.tts.reference import file_sha256

    assert voice.provenance.clip_sha256 == file_sha256(clip)
    assert voice.provenance.licence == "CC0-1.0" and voice.provenance.utterance_ids
    assert voice.provenance.label_sources["accent"] == "corpus_metadata"
    assert 4 <= sf.info(clip).duration <= 10
    assert (out.with_suffix(".build.json")).is_file()
    assert result.clips_dir.is_dir()

    # Same recipe and seed, natural speech this time: the same speakers, now their own recordings.
    natural = build_pool(path, out.with_name("natural.yaml"), per_cell=1, seed=0, natural=True, asr_backend=asr)
    assert [v["provenance"] for v in natural.pool["voices"]] == [v.provenance.model_dump() for v in pool.voices]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    check_natural_pool(out.with_name("natural.yaml"))


def check_natural_pool(path):
    from biasbench.config import load_task_config
    from biasbench.tts.recorded import RecordedBackend
    from biasbench.voices.pool import load_pool
    from corpus_fixture import SENTENCES

    pool, _ = load_pool(str(path), allow_unbalanced=True)
    voice = pool.voices[0]
    assert voice.tts.backend == "recorded" and voice.tts.params["recordings_sha256"]
    audio, rate = RecordedBackend().synthesize(SENTENCES[1].upper(), voice.tts.params)  # matched after normalising
    row = [r for r in open(voice.tts.params["recordings_path"]).read().splitlines() if SENTENCES[1] in r][0]
    clip, _ = sf.read(path.parent / "natural-recordings" / row.split(",")[-3])
    assert rate == 16000 and np.allclose(audio, clip, atol=1e-4)
    with pytest.raises(BiasbenchError, match="did not record"):
        RecordedBackend().synthesize("A sentence nobody read.", voice.tts.params)
    task = load_task_config(path.parent / "natural-recordings" / "asr.yaml")
    assert task.output_type == "transcribe" and task.dataset.local.path == "sentences.csv"
    assert len(open(path.parent / "natural-recordings" / "sentences.csv").read().splitlines()) == 1 + len(SENTENCES)


@pytest.mark.slow  # speaker embeddings and Whisper on every candidate
def test_short_cells_are_named_and_nothing_is_written(tmp_path, asr):
    path = make(tmp_path, speakers=ONE_PER_CELL[:5])  # no male/east_asian speaker
    out = tmp_path / "pools" / "p.yaml"
    with pytest.raises(BiasbenchError, match=r"male/east_asian: 0 of 1 speakers \(no speaker of this cell"):
        build_pool(path, out, per_cell=1, asr_backend=asr)
    assert not out.exists() and not (tmp_path / "pools" / "p-references").exists()
    assert not [p for p in (tmp_path / "pools").iterdir()]


@pytest.mark.slow  # speaker embeddings and Whisper on every candidate
def test_unreadable_short_and_two_speaker_audio_are_rejected_by_speaker(tmp_path, asr):
    corpus = tmp_path / "corpus" / "audio"
    corpus.mkdir(parents=True)
    extra = []
    # spk90: unreadable files; spk91: 1 s of speech in all; spk92: every utterance two voices.
    for k in range(3):
        (corpus / f"bad_{k}.wav").write_bytes(b"not audio")
        extra.append({"speaker": "spk90", "utt": f"spk90_{k}", "wav": f"bad_{k}.wav", "text": "hello", "sex": "F",
                      "race": "Black", "accent": "x", "l1": "English"})
    audio, rate = speak("en-us+f1", 50, 170, "Hi.")
    sf.write(corpus / "short.wav", audio, rate)
    extra.append({"speaker": "spk91", "utt": "spk91_0", "wav": "short.wav", "text": "Hi.", "sex": "F",
                  "race": "Black", "accent": "x", "l1": "English"})
    for k, text in enumerate(["The cat sat on the warm mat by the door.", "A bird sang in the tall old tree."]):
        a, r = speak("en-us+f5", 70, 150, text)
        b, _ = speak("en-gb+m1", 30, 150, "and then it flew away over the hills and the sea")
        sf.write(corpus / f"two_{k}.wav", np.concatenate([a, b]), r)
        extra.append({"speaker": "spk92", "utt": f"spk92_{k}", "wav": f"two_{k}.wav",
                      "text": text + " and then it flew away over the hills and the sea", "sex": "F",
                      "race": "Black", "accent": "x", "l1": "English"})
    path = make(tmp_path, speakers=ONE_PER_CELL[1:], extra_rows=extra)  # female/black: only the bad ones
    with pytest.raises(BiasbenchError) as err:
        build_pool(path, tmp_path / "p.yaml", per_cell=1, asr_backend=asr)
    message = str(err.value)
    assert "female/black: 0 of 1" in message
    assert "rejected spk90: too little usable speech" in message and "not readable audio" in message
    assert "rejected spk91: too little usable speech" in message
    assert "rejected spk92: more than one speaker?" in message


@pytest.mark.slow  # speaker embeddings and Whisper on every candidate
def test_clone_gate_refuses_low_fidelity(tmp_path, asr):
    path = make(tmp_path, speakers=ONE_PER_CELL[:1],
                recipe=RECIPE.replace("min_clone_fidelity: 0.5", "min_clone_fidelity: 0.99"))
    with pytest.raises(BiasbenchError, match=r"rejected spk01: clone fidelity 0\.\d\d < 0.99"):
        build_pool(path, tmp_path / "p.yaml", per_cell=1, clone=True, asr_backend=asr, allow_unbalanced=True)


def test_shipped_recipes_validate_and_say_what_their_labels_mean():
    from conftest import PROJECT

    recipes = sorted((PROJECT / "voices" / "recipes").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"fair-speech", "edacc", "afrispeech-200", "l2-arctic", "vctk", "coraal"}
    for path in recipes:
        text = path.read_text()
        assert "WHAT THE LABELS MEAN" in text and "UNVERIFIED" in text.upper(), path
        if "licence: \"REPLACE" in text:  # the user must state the licence they accepted
            with pytest.raises(ConfigError, match="corpus.licence"):
                load_recipe(path)
        else:
            assert load_recipe(path).label_notes

