"""A backend from another package, registered through the `biasbench.backends` entry point.

The plugin is a real distribution on sys.path (a module plus a dist-info folder with
entry_points.txt), used by the installed console script in a subprocess, as a user's
package would be after `pip install`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import requires_espeak, write

BIASBENCH = Path(sys.executable).parent / "biasbench"

PLUGIN_MODULE = '''
"""A listener that always answers the first option, with log-probabilities."""
import math


class FirstOption:
    max_audio_seconds = 30.0

    def __init__(self, model, **options):
        self.model, self.options = model, options

    def fingerprint(self):  # a plugin may record anything, its server's URL and key included
        return {"backend": "first-option", "model": self.model, "dtype": self.options["dtype"],
                "endpoint": self.options["base_url"]}

    def score_choices(self, requests):
        from biasbench.models.base import Response

        out = []
        for r in requests:
            logprobs = {c: (math.log(0.9) if i == 0 else math.log(0.1 / (len(r.choices) - 1)))
                        for i, c in enumerate(r.choices)}
            out.append(Response(r.request_id, r.choices[0], logprobs))
        return out

    def generate(self, requests):
        from biasbench.models.base import Response

        return [Response(r.request_id, f"heard {r.audio_seconds:.2f}s") for r in requests]


def make_backend(model, **options):
    return FirstOption(model, **options)


def not_a_backend(model, **options):
    return object()
'''


def install_plugin(root: Path, entry_points: str) -> Path:
    """A distribution `firstoption-plugin` with the given [biasbench.backends] lines."""
    write(root / "firstoption_plugin.py", PLUGIN_MODULE)
    info = root / "firstoption_plugin-0.3.dist-info"
    write(info / "METADATA", "Metadata-Version: 2.1\nName: firstoption-plugin\nVersion: 0.3\n")
    write(info / "entry_points.txt", f"[biasbench.backends]\n{entry_points}\n")
    return root


def biasbench(*args, plugin_root: Path, **env):
    path = os.pathsep.join(filter(None, [str(plugin_root), os.environ.get("PYTHONPATH")]))
    return subprocess.run([str(BIASBENCH), *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=path, **env))


@pytest.fixture
def plugin_root(tmp_path):
    return install_plugin(tmp_path / "site", "first = firstoption_plugin:make_backend\n"
                                             "hollow = firstoption_plugin:not_a_backend\n"
                                             "broken = firstoption_plugin_missing:make_backend\n"
                                             "hf = firstoption_plugin:make_backend")


def test_models_lists_the_plugin(plugin_root):
    result = biasbench("models", "--format", "json", plugin_root=plugin_root)
    rows = {row["alias"]: row for row in json.loads(result.stdout)}
    assert rows["first:<model>"]["backend"] == "plugin:first"
    assert "firstoption-plugin 0.3" in rows["first:<model>"]["description"]
    assert "hf:<model>" not in rows  # biasbench's own prefixes cannot be taken over
    assert "first:<model>" not in {r["alias"] for r in json.loads(biasbench(
        "models", "--format", "json", plugin_root=plugin_root.parent / "empty").stdout)}


@requires_espeak
def test_a_run_uses_the_plugin_backend(plugin_root, tmp_path, biasbench_cache):
    from test_openai_backend import DATA, TASK, pool_yaml

    write(tmp_path / "tiny.csv", DATA)
    result = biasbench("run", "--model", "first:always-a", "--task", str(write(tmp_path / "tiny.yaml", TASK)),
                       "--pool", str(write(tmp_path / "pool.yaml", pool_yaml())), "--data-source", "local",
                       "--output-dir", str(tmp_path / "runs"), "--run-id", "plugin", "--no-progress",
                       "--no-report", "--dtype", "float32", "--base-url", "https://S3CRET@llm.example/v1?key=S3CRET",
                       plugin_root=plugin_root, BIASBENCH_CACHE=str(biasbench_cache))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "runs" / "plugin" / "manifest.json").read_text()
    manifest = json.loads(text)
    assert manifest["model"]["backend"] == "plugin:first" and "S3CRET" not in text  # whatever recorded the URL
    assert manifest["model"]["fingerprint"] == {"backend": "first-option", "model": "always-a", "dtype": "float32",
                                                "endpoint": "https://<redacted>@llm.example/v1?key=<redacted>"}
    assert manifest["n_responses"] == 36 and manifest["complete"] is True


@pytest.mark.parametrize("model, expected", [
    ("broken:x", "firstoption_plugin_missing:make_backend, from firstoption-plugin 0.3) could not be imported"),
    ("hollow:x", "returned object, which lacks fingerprint, score_choices, generate, max_audio_seconds"),
    ("first:", "give the model after 'first:'"),
])
def test_a_bad_plugin_is_named_in_one_line(plugin_root, tmp_path, model, expected):
    result = biasbench("run", "--model", model, "--task", "mmlu", "--data-source", "local", "--limit", "1",
                       "--output-dir", str(tmp_path / "runs"), "--no-progress", plugin_root=plugin_root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert expected in lines[-1] and lines[-1].startswith("error: ")
