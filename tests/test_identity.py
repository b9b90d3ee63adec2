"""A run is named and identified by its model's content and name, not where the model sits:
a local model copied or moved elsewhere resumes the same run directory and asks nothing again."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from biasbench.models.registry import identity_fingerprint, resolve_model
from conftest import requires_espeak

BIASBENCH = str(Path(sys.executable).parent / "biasbench")


def test_a_local_model_is_named_by_its_folder_not_its_path(tmp_path, monkeypatch):
    for folder in ("models/tiny-v1", "llm", "elsewhere/whisper-ct2"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "elsewhere" / "whisper-ct2" / "model.bin").write_bytes(b"not read here")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("models/tiny-v1").name == "tiny-v1"
    assert resolve_model(str(tmp_path / "models" / "tiny-v1") + "/").name == "tiny-v1"
    assert resolve_model("hf:models/tiny-v1").name == "hf:tiny-v1"
    assert resolve_model("vllm:./models/tiny-v1").name == "vllm:tiny-v1"
    assert resolve_model("text:models/tiny-v1").name == "text:tiny-v1"
    assert resolve_model("cascade:faster-whisper:elsewhere/whisper-ct2+llm").name == \
        "cascade:faster-whisper:whisper-ct2+llm"
    # what was asked for is still recorded as given
    assert resolve_model("models/tiny-v1").requested == "models/tiny-v1"
    # hub models keep their names, so their run ids do not change
    assert resolve_model("hf:Qwen/Qwen2-Audio-7B-Instruct").name == "hf:Qwen/Qwen2-Audio-7B-Instruct"
    assert resolve_model("vllm:Qwen/Qwen2-Audio-7B-Instruct").name == "vllm:Qwen/Qwen2-Audio-7B-Instruct"


def test_a_faster_whisper_folder_is_identified_by_its_weights_and_a_named_model_keeps_its_name():
    def fingerprint(model, weights="ab" * 32):
        return {"backend": "faster-whisper", "model": model, "model_sha256": weights, "compute_type": "int8"}

    here, moved = identity_fingerprint(fingerprint("/home/a/ct2")), identity_fingerprint(fingerprint("/mnt/b/ct2"))
    assert here == moved and "/home" not in json.dumps(here)
    assert identity_fingerprint(fingerprint("/mnt/b/ct2", weights="cd" * 32)) != here
    assert identity_fingerprint(fingerprint("tiny.en")) == fingerprint("tiny.en")  # shipped runs keep their ids


@pytest.fixture(scope="module")
def tiny_model(biasbench_cache):
    from biasbench.models.tiny.qwen2audio import tiny_qwen2audio_path

    return tiny_qwen2audio_path()


@requires_espeak
@pytest.mark.slow
def test_a_copied_or_renamed_local_model_resumes_its_run_through_the_console_script(tiny_model, tmp_path,
                                                                                    biasbench_cache):
    """The tiny model in two folders of the same name, and in a renamed one: the second and third
    runs with --resume open the first run's directory and ask nothing (6 voices, 1 item)."""
    for folder in ("a/tiny-qwen2audio-v1", "b/tiny-qwen2audio-v1", "renamed-copy"):
        shutil.copytree(tiny_model, tmp_path / folder)
    pool = tmp_path / "pool.yaml"
    pool.write_text(_one_voice_per_cell(), encoding="utf-8")
    env = dict(os.environ, BIASBENCH_CACHE=str(biasbench_cache), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

    def run(model, *extra):
        done = subprocess.run([BIASBENCH, "run", "--model", model, "--task", "mmlu", "--pool", str(pool),
                               "--allow-unbalanced", "--data-source", "local", "--limit", "1", "--no-progress",
                               "--no-report", "-o", "runs", *extra], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    first = run("a/tiny-qwen2audio-v1")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("mmlu-tiny-qwen2audio-v1-") and "6 new responses" in first
    for model in ("b/tiny-qwen2audio-v1", str(tmp_path / "renamed-copy")):
        again = run(model, "--resume")
        assert "6 already stored, 0 to run" in again and "(0 new responses, 6 in all)" in again, again
        assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["resumed_at"]) == 2 and str(tmp_path) not in json.dumps(manifest["model"]["identity"])


def _one_voice_per_cell() -> str:
    from conftest import PROJECT

    import yaml

    pool = yaml.safe_load((PROJECT / "voices" / "espeak-default.yaml").read_text(encoding="utf-8"))
    pool["voices"] = [v for v in pool["voices"] if v["id"].endswith("-1")]
    return yaml.safe_dump(pool)
