"""Issue 15, in-process: run identity, run-directory locking, bounded templates and YAML,
confined data paths and redacted credentials. The same faults through the console script are
in test_faults.py and test_bad_inputs.py."""

from biasbench.models.registry import identity_fingerprint


def test_identity_follows_a_local_models_content_not_its_folder():
    def fingerprint(folder, weights="ab" * 32):
        return {"backend": "cascade", "model": f"{folder}/whisper+{folder}/llm",
                "asr": {"model": f"{folder}/whisper", "local_sha256": weights},
                "llm": {"model": f"{folder}/llm", "local_sha256": "cd" * 32},
                "adapter": {"path": f"{folder}/lora", "sha256": "ef" * 32}}

    here, moved = identity_fingerprint(fingerprint("/home/a/.cache")), identity_fingerprint(fingerprint("/mnt/b"))
    assert here == moved and "/home" not in str(here)
    assert identity_fingerprint(fingerprint("/mnt/b", weights="00" * 32)) != here  # other weights: other run


def test_identity_of_a_hub_model_is_its_fingerprint_unchanged():
    fingerprint = {"backend": "hf", "model": "Qwen/Qwen2-Audio-7B-Instruct", "revision": "abc", "local_sha256": None}
    assert identity_fingerprint(fingerprint) == fingerprint
