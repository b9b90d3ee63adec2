"""`biasbench plan`'s GPU hours from FLOPs, checked against a computation by hand."""

import pytest
from typer.testing import CliRunner

from biasbench.cli import app
from biasbench.gpu_estimate import SPECS
from biasbench.plan import format_estimate, plan_estimate
from conftest import write

TASK = """task: plan_check
dataset: {local: {path: items.csv}}
doc_to_text: "{{question}}"
instruction: "Answer with the letter."
doc_to_choice: ["yes", "no"]
doc_to_target: "0"
"""


@pytest.fixture
def task_file(tmp_path):
    # At the planner's 150 words/min: 30 words -> 12 s (heard), 100 words -> 40 s (over 30 s: skipped).
    write(tmp_path / "items.csv", "item_id,question\nshort," + " ".join(["word"] * 30) + "\nlong,"
          + " ".join(["word"] * 100) + "\n")
    return write(tmp_path / "plan_check.yaml", TASK)


def test_qwen2_audio_spec_is_its_config_counted_by_hand():
    spec = SPECS["Qwen/Qwen2-Audio-7B-Instruct"]
    assert spec.encoder_params == 32 * (4 * 1280 * 1280 + 2 * 1280 * 5120) == 629_145_600
    assert spec.lm_params == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008) == 6_476_005_376
    assert spec.head_params == 156_032 * 4096
    assert 8.3e9 < spec.total_params < 8.5e9  # Qwen2-Audio-7B has about 8.4 B parameters


def test_gpu_hours_match_a_hand_computation_and_leave_out_skipped_clips(task_file, tmp_path):
    estimate = plan_estimate(task=str(task_file), pool="espeak-default", model="qwen2audio", data_source="local",
                             runs_dir=tmp_path / "no-runs", audio_cache=tmp_path / "empty-cache")
    compute = estimate["compute"]
    assert estimate["n_requests"] == 36 and compute["n_skipped"] == 18 and compute["n_counted"] == 18
    # One request of the short item, by hand: encoder over 1500 positions; LM over 12 s x 25 audio tokens
    # and the 4-word instruction (1.3 x 4 + 20 = 25.2 tokens); the head once; 2 FLOP per parameter per token.
    encoder = 2 * 629_145_600 * 1500
    lm = 2 * 6_476_005_376 * (12 * 25 + 25.2)
    head = 2 * 156_032 * 4096
    per_request = encoder + lm + head
    assert compute["flops_per_request"] == pytest.approx(per_request, rel=1e-9)
    assert per_request == pytest.approx(6.10e12, rel=0.01)
    assert compute["decode_steps"] == 0  # letters scored in one forward pass
    h100 = 18 * per_request / (989e12 * 0.3) / 3600
    assert compute["gpu_hours"]["H100"] == pytest.approx(h100, rel=1e-9)
    assert compute["gpu_hours"]["A100"] == pytest.approx(h100 * 989 / 312, rel=1e-9)
    text = format_estimate(estimate)
    for shown in ("18 left out: clips over 30 s", "2 FLOP per parameter per token", "30% of peak", "H200",
                  "planned only (no model is loaded)"):
        assert shown in text


def test_truncating_counts_every_clip_at_most_one_window(task_file, tmp_path):
    compute = plan_estimate(task=str(task_file), pool="espeak-default", model="qwen2audio", data_source="local",
                            runs_dir=tmp_path, audio_cache=tmp_path / "c", long_audio="truncate")["compute"]
    assert compute["n_skipped"] == 0 and compute["n_counted"] == 36


def test_plan_runs_without_a_gpu_from_the_command_line(task_file, tmp_path):
    result = CliRunner().invoke(app, ["plan", "--model", "qwen2audio", "--task", str(task_file), "--data-source",
                                      "local", "--runs-dir", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert "GPU hours (computed):  A100" in result.output


def test_earlier_runs_with_damaged_manifests_are_skipped_not_a_traceback(tmp_path):
    """Issue 21 #3: `plan` reads every run's manifest under --output-dir for measured figures."""
    from biasbench.plan import measured_figures

    for name, text in {"list": "[1]", "null": "null", "model-a-string": '{"model": "x"}',
                       "usage-a-list": '{"model": {"name": "m"}, "usage": [1], "n_responses": 3}',
                       "good": '{"model": {"name": "m"}, "usage": {"estimated_cost_usd": 0.3}, "n_responses": 3}'}.items():
        write(tmp_path / name / "manifest.json", text)
    figures = measured_figures(tmp_path, "m")
    assert figures["cost_per_request"] == pytest.approx(0.1)  # the good run alone
