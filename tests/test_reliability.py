"""Issue 15, in-process: run identity, run-directory locking, bounded templates and YAML,
confined data paths and redacted credentials. The same faults through the console script are
in test_faults.py and test_bad_inputs.py."""

import json
import re
import time
import os

import pytest

from biasbench.config import load_voice_pool, read_yaml
from biasbench.errors import BiasbenchError, ConfigError
from biasbench.models.registry import identity_fingerprint
from biasbench.redact import redact_credentials
from biasbench.salvage import salvage
from biasbench.store import ResponseStore, RunDir, StoredResponse, check_output_dir, check_run_id
from biasbench.tasks.loader import load_task
from biasbench.tasks.templates import render
from biasbench.voices.pool import engine_problems
from conftest import PROJECT, requires_espeak, write


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


# ---------------------------------------------------------------- run directory, store


def test_a_second_holder_of_a_run_directory_is_refused_until_the_first_lets_go(tmp_path):
    first, second = RunDir(tmp_path / "run"), RunDir(tmp_path / "run")
    first.lock()
    with pytest.raises(BiasbenchError, match=rf"in use by another biasbench process \(pid {os.getpid()}\)"):
        second.lock()
    first.unlock()
    second.lock()  # released: the next one gets it
    second.unlock()


@pytest.mark.parametrize("run_id", ["../x", "a/b", "..", ".hidden", "", "x" * 129, "a\nb", "/abs"])
def test_run_ids_that_are_not_one_folder_name_are_refused(run_id):
    with pytest.raises(BiasbenchError, match="--run-id"):
        check_run_id(run_id)


def test_an_output_dir_that_cannot_hold_runs_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad, why in [(tmp_path / "file", "is a file"), (tmp_path / "file" / "below", "cannot be written")]:
        with pytest.raises(BiasbenchError, match=why):
            check_output_dir(bad)
    check_output_dir(tmp_path / "new" / "runs")  # made on the way
    assert (tmp_path / "new" / "runs").is_dir() and not list((tmp_path / "new" / "runs").iterdir())


def _store_with(path, n):
    store = ResponseStore(path)
    store.add([StoredResponse(f"k{i}", f"i{i}", "v", "audio", 0, "p", None, None, 0, "x" * 500, None, "A", "A",
                              "valid", 1.0, None, None, None) for i in range(n)])
    store.close()


def test_a_damaged_store_is_named_and_salvage_keeps_every_readable_row(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    _store_with(run.store_path, 200)
    data = bytearray(run.store_path.read_bytes())
    data[4096 * 12: 4096 * 13] = b"\xff" * 4096  # one page of rows (past the schema and prompts pages)
    run.store_path.write_bytes(bytes(data))
    with pytest.raises(BiasbenchError, match="is damaged .*biasbench salvage"):
        run.open_store()
    saved, lost, aside = salvage(run.path)
    assert aside.is_file() and aside.read_bytes() == bytes(data)  # the damaged file is kept as it was
    keys = run.open_store().done_keys()
    assert len(keys) == saved and 150 <= saved < 200  # the damaged page's rows only are lost


def test_salvage_of_an_unreadable_file_says_nothing_can_be_saved(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.store_path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BiasbenchError, match="cannot be read at all"):
        salvage(run.path)
    assert run.store_path.read_bytes() == b"not a database at all" * 100


@pytest.mark.parametrize("url, kept", [
    # user information, user name and password alike: `http://TOKEN@host` is how some proxies take a key
    ("http://user:S3CRET@host:8000/v1", "http://<redacted>@host:8000/v1"),
    ("--base-url https://:S3CRET@h/v1 --model x", "--base-url https://<redacted>@h/v1 --model x"),
    ("--base-url=http://S3CRET@10.0.0.1:8080/v1 -m x", "--base-url=http://<redacted>@10.0.0.1:8080/v1 -m x"),
    # every query value, whatever its name, and the fragment
    ("https://h/v1?api_key=S3CRET&x=1", "https://h/v1?api_key=<redacted>&x=<redacted>"),
    ("https://h/v1?k=S3CRET", "https://h/v1?k=<redacted>"),
    ("https://h/v1?S3CRET", "https://h/v1?<redacted>"),
    ("https://h/v1#access_token=S3CRET", "https://h/v1#<redacted>"),
    # path segments that carry a key; ordinary ones (versions, model and deployment names) stay readable
    ("https://h/v1/sk-proj-S3CRET", "https://h/v1/<redacted>"),
    ("https://h/hf_S3CRETxyz/v1", "https://h/<redacted>/v1"),
    ("https://h/p/9f86d081884c7d659a2feaa0c55ad015S3CRET/v1", "https://h/p/<redacted>/v1"),
    ("https://h/123e4567-e89b-12d3-a456-426614174000/v1", "https://h/<redacted>/v1"),
    ("https://h/key/S3CRET/v1", "https://h/key/<redacted>/v1"),
    ("https://hooks.example/s/T01/XXXXXXXXXXXXXXXXXXXXXXXXS3CRET", "https://hooks.example/s/T01/<redacted>"),
    ("https://r.openai.azure.com/openai/deployments/gpt-4o-audio-preview-2024-12-17/v1",
     "https://r.openai.azure.com/openai/deployments/gpt-4o-audio-preview-2024-12-17/v1"),
    ("http://[::1]:8000/api/v1beta/models", "http://[::1]:8000/api/v1beta/models"),
    ("error: http://h/v1 refused; see http://S3CRET@h2/x", "error: http://h/v1 refused; see http://<redacted>@h2/x"),
])
def test_credentials_inside_urls_are_redacted(url, kept):
    assert redact_credentials(url) == kept and "S3CRET" not in redact_credentials(url)


def test_every_error_line_and_manifest_string_is_redacted(tmp_path, monkeypatch):
    """Catch-alls for URLs a library or plugin put in a message or a record: the CLI's error line
    and the manifest writer redact whatever they are given."""
    from rich.console import Console

    from biasbench import cli

    recording = Console(record=True, width=300)
    monkeypatch.setattr(cli, "console", recording)
    cli._error("could not load https://S3CRET@hub.example/data.csv?token=S3CRET")
    line = "error: could not load https://<redacted>@hub.example/data.csv?token=<redacted>"
    assert recording.export_text().strip() == line
    run = RunDir(tmp_path / "run")
    run.create({"model": {"fingerprint": {"endpoint": "http://h/v1/sk-S3CRET"}},
                "failed": [{"error": "http://S3CRET@h"}]})
    assert "S3CRET" not in run.manifest_path.read_text()
    assert run.read_manifest()["failed"] == [{"error": "http://<redacted>@h"}]


# ---------------------------------------------------------------- task data paths

TOY_DATA = 'item_id,question\nq1,"What is 1?"\nq2,"What is 2?"\n'


def toy_task(folder, data_path, **extra):
    lines = ["task: toy", f"dataset: {{local: {{path: {json.dumps(data_path)}}}}}", 'doc_to_text: "{{ question }}"',
             "output_type: generate_categorical", "categories: {safe: [fine]}"] + [f"{k}: {v}" for k, v in extra.items()]
    return write(folder / "toy.yaml", "\n".join(lines) + "\n")


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_task_data_outside_the_tasks_folder_needs_the_explicit_flag(tmp_path, how):
    secret = write(tmp_path / "private" / "secrets.csv", 'item_id,question\nq1,"the password is hunter2"\n')
    if how == "symlink":
        (tmp_path / "tasks").mkdir()
        (tmp_path / "tasks" / "innocent.csv").symlink_to(secret)
    data_path = {"dotdot": "../private/secrets.csv", "absolute": str(secret), "symlink": "innocent.csv"}[how]
    task_path = toy_task(tmp_path / "tasks", data_path)
    with pytest.raises(ConfigError, match="dataset.local.path.*leads outside.*--allow-data-outside-task"):
        load_task(str(task_path))
    assert "hunter2" in load_task(str(task_path), allow_data_outside=True).items[0].spoken_text


def test_task_data_in_a_subfolder_of_the_task_is_read(tmp_path):
    write(tmp_path / "tasks" / "data" / "toy.csv", TOY_DATA)
    assert len(load_task(str(toy_task(tmp_path / "tasks", "data/toy.csv"))).items) == 2


def test_a_lexicon_outside_the_tasks_folder_is_refused(tmp_path):
    write(tmp_path / "tasks" / "toy.csv", TOY_DATA)
    write(tmp_path / "lex.csv", "phrase,category\nfine,safe\n")
    with pytest.raises(ConfigError, match="lexicon.*leads outside"):
        load_task(str(toy_task(tmp_path / "tasks", "toy.csv", lexicon="../lex.csv")))


# ---------------------------------------------------------------- bounded templates


@pytest.mark.parametrize("template, why", [
    ("{{ (9 ** 99999999) % 7 }}", "bits"),
    ("{{ range(10**7)|list|length }}", "range of 10,000,000"),
    ("{{ 'x' * 3000000000 }}", "3,000,000,000 long"),
    ("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
     "joined string"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}{{ i }}{% endfor %}{% endfor %}", "longer than 1 s"),
    ("{{ '%999999999d' % 1 }}", "formatted field"),
    ("{{ '{:>{}}'.format(1, 10**9) }}", "width taken from an argument"),
    ("{{ 'x'.center(10**9) }}", "str.center"),
    ("{{ 'x'|center(10**9) }}", "center filter"),
    ("{{ ('a' * 99999).replace('a', 'b' * 99999) }}", "str.replace"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError"),
    ("{{ 10.0 ** 100000 }}", "OverflowError"),
])
def test_a_costly_template_is_a_clear_error_within_a_second(template, why):
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"t.yaml, field 'doc_to_text'.*{re.escape(why)}"):
        render(template, {"question": "Q?"}, path="t.yaml", field="doc_to_text", item_id="q1")
    assert time.monotonic() - started < 1.5


def test_ordinary_template_arithmetic_and_formatting_still_work():
    text = render("{{ question }} {{ 'x' ~ 'y' }} {{ 2 ** 10 }} {{ '%5.2f' % 3.14159 }} {{ '{:,}'.format(120000) }} "
                  "{% for i in range(3) %}{{ letters[i] }}{% endfor %}", {"question": "Q?"}, path="t", field="f")
    assert text == "Q? xy 1024  3.14 120,000 ABC"


# ---------------------------------------------------------------- YAML and pools

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    pool = write(tmp_path / "pool.yaml", BOMB + "pool: p\nvoices:\n  - {id: v, gender: female, ethnicity: black, "
                 "accent: x, label_source: proxy, tts: {backend: espeak-ng, voice: en-us, extra: *i}}\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"pool.yaml: its aliases .* expand to [\d,]+ values"):
        read_yaml(pool)
    assert time.monotonic() - started < 1


def test_ordinary_aliases_are_still_read(tmp_path):
    data = read_yaml(write(tmp_path / "t.yaml", "base: &b {x: 1}\nother: *b\n"))
    assert data == {"base": {"x": 1}, "other": {"x": 1}}


@pytest.mark.parametrize("value, why", [("{deep: {er: 1}}", "plain string, number"), ("[1, 2]", "got a list"),
                                        ("'" + "x" * 1001 + "'", "1,001 characters")])
def test_tts_params_are_plain_values(tmp_path, value, why):
    pool = write(tmp_path / "pool.yaml", "pool: p\nvoices:\n  - {id: v, gender: female, ethnicity: black, "
                 f"accent: x, label_source: proxy, tts: {{backend: espeak-ng, voice: en-us, pitch: {value}}}}}\n")
    with pytest.raises(ConfigError, match=f"voices.0.tts.*'pitch'.*{why}"):
        load_voice_pool(pool)


@requires_espeak
def test_a_pool_naming_a_voice_or_variant_espeak_lacks_is_named_before_any_work(tmp_path):
    shipped = (PROJECT / "voices" / "espeak-default.yaml").read_text()
    bad = shipped.replace("voice: en-029, variant: f1", "voice: en-029, variant: f9", 1)
    bad = bad.replace("voice: en-029, variant: f2", "voice: en-xx, variant: f2", 1)
    pool = load_voice_pool(write(tmp_path / "bad.yaml", bad))
    variant, voice = engine_problems(pool)
    assert variant == "voice 'espeak-f-black-1': espeak-ng param 'variant': 'f9' is not installed"
    assert voice.startswith("voice 'espeak-f-black-2': espeak-ng has no voice 'en-xx'")
    assert engine_problems(load_voice_pool(PROJECT / "voices" / "espeak-default.yaml")) == []


def test_a_url_inside_the_model_spec_reaches_neither_run_id_nor_tables(tmp_path):
    """A plugin's model may be a URL (NAME:https://TOKEN@host/...): the run id, the manifest's model
    names (which the tables and summary copy) carry it redacted."""
    from biasbench.models.base import GenerationSettings
    from biasbench.models.registry import ModelChoice
    from biasbench.models.simulated import PitchBiasedBackend
    from biasbench.runner import RunOptions, _manifest

    write(tmp_path / "tasks" / "toy.csv", TOY_DATA)
    task = load_task(str(toy_task(tmp_path / "tasks", "toy.csv")))
    spec = "myplug:https://S3CRET@llm.example/v1?key=S3CRET"
    choice = ModelChoice(spec, spec, "plugin:myplug", spec.split(":", 1)[1], pipeline_check=False)
    manifest = _manifest(RunOptions(task="toy", model=spec), task, {"hash": "p"}, choice, PitchBiasedBackend(),
                         GenerationSettings())
    assert "S3CRET" not in manifest["run_id"] + manifest["model"]["name"] + manifest["model"]["requested"]
    assert manifest["run_id"].startswith("toy-myplug_https_redacted_llm.example_v1_key_redacted-")
