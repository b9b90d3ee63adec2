"""Issue 15: runs killed (-9) at seeded random moments, with a synthesis failure injected, then
resumed, store exactly what an uninterrupted run stores; a second process on a run refuses;
damaged clips are re-made. Everything goes through the installed console script.

CI-sized; benchmarks/fault_campaign.py runs many more kills with the same kit."""

import random
import time

import pytest

from conftest import requires_espeak
from faultkit import Faults, differences
from test_openai_backend import server  # noqa: F401 - a fixture, used by api()

pytestmark = [requires_espeak, pytest.mark.slow]

N = 2 * 18  # 2 items x 18 voices of the default pool


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    kit = Faults(tmp_path_factory.mktemp("faults"), items=2)
    result = kit.run("reference")
    assert result.returncode == 0, result.stderr
    return kit


@pytest.fixture(scope="module")
def reference(faults):
    rows = faults.stored("reference")
    assert len(rows) == N and (rows["status"] != "synthesis_failed").all()
    return rows


def resume_clean(faults, run_id):
    """Resume with no faults left; the run must end complete."""
    faults.failing(False)
    faults.slow(None)
    result = faults.run(run_id, "--resume")
    assert result.returncode == 0, result.stderr
    assert faults.manifest(run_id)["complete"] is True
    return faults.stored(run_id)


@pytest.mark.parametrize("seed", [1])
def test_killed_during_synthesis_with_a_failing_voice_then_resumed(faults, reference, seed):
    faults.fresh_audio_cache(f"cache-synthesis-{seed}")
    faults.failing(True)  # one voice's clips fail: synthesis_failed rows may be stored before the kill
    faults.slow(0.05)
    clips = random.Random(seed).randint(1, N - 6)
    run_id = f"synthesis-{seed}"
    assert faults.kill_when(faults.start(run_id), lambda: faults.clips() >= clips), "the run ended before the kill"
    assert len(faults.stored(run_id)) < N
    assert differences(resume_clean(faults, run_id), reference) == []


@pytest.mark.parametrize("seed", [4])
def test_killed_while_answering_after_a_synthesis_failure_then_resumed(faults, reference, seed):
    """Also issue 15 #1: the synthesis_failed rows and their retries' answers used to both stay."""
    run_id = f"answering-{seed}"
    faults.fresh_audio_cache(f"cache-answering-{seed}")  # the failing voice's clips are not cached yet
    faults.failing(True)
    first = faults.run(run_id)  # complete but for the failing voice: 2 synthesis_failed rows
    assert (faults.stored(run_id)["status"] == "synthesis_failed").sum() == 2
    # Issue 21 #1: not a success: exit 3, one line counting what could not be spoken
    assert first.returncode == 3 and faults.manifest(run_id)["complete"] is False
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 36 requests were not answered: 2 could not be spoken") and "--resume" in last
    faults.failing(False)
    retried = random.Random(seed).randint(0, 1)  # of the failed voice's 2 answers, stored before the kill
    process = faults.start(run_id, "--resume")
    faults.kill_when(process, lambda: (faults.stored(run_id)["status"] == "valid").sum() >= N - 2 + retried)
    assert differences(resume_clean(faults, run_id), reference) == []


def test_a_second_process_on_the_same_run_refuses_and_the_first_finishes_intact(faults, reference):
    faults.fresh_audio_cache("cache-two-processes")
    faults.slow(0.1)  # the first process is still synthesising when the second one starts
    first = faults.start("shared")
    lock = faults.run_dir("shared") / ".lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    second = faults.run("shared", "--resume")
    assert second.returncode == 2 and "in use by another biasbench process" in second.stderr
    assert "Traceback" not in second.stderr
    faults.slow(None)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert differences(faults.stored("shared"), reference) == []


def test_damaged_clips_are_made_again_counted_and_answered_as_before(faults, reference):
    faults.fresh_audio_cache("cache")  # the reference run's clips
    wavs = sorted((faults.root / "cache" / "tts").glob("*/*.wav"))
    for path, damage in zip(wavs, [b"", b"RIFF\x00\x00", None]):
        path.write_bytes(damage if damage is not None else path.read_bytes()[: path.stat().st_size // 2])
    result = faults.run("damaged-again")
    assert result.returncode == 0, result.stderr
    assert "3 damaged clips in the audio cache were synthesised again" in result.stderr
    assert faults.manifest("damaged-again")["synthesis"]["repaired"] == 3
    assert differences(faults.stored("damaged-again"), reference) == []


def test_changed_clips_are_made_again_with_a_warning_and_answered_as_before(faults, reference):
    """Issue 21 #2: clips swapped for other voices' clips, or overwritten with noise of the right
    length, are whole WAV files; their digests tell, and they are made again."""
    faults.fresh_audio_cache("cache")  # the reference run's clips
    wavs = sorted((faults.root / "cache" / "tts").glob("*/*.wav"))
    a, b, c = wavs[:3]
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)
    data = c.read_bytes()
    c.write_bytes(data[:44] + bytes(random.Random(0).getrandbits(8) for _ in range(len(data) - 44)))
    result = faults.run("changed-again")
    assert result.returncode == 0, result.stderr
    assert "warning: 3 clips in the audio cache" in result.stderr and "synthesised again" in result.stderr
    assert faults.manifest("changed-again")["synthesis"]["changed"] == 3
    assert differences(faults.stored("changed-again"), reference) == []


def test_an_audio_cache_on_a_full_disk_exits_3_with_one_line_and_resumes(faults, reference):
    """Issue 21 #1: no clip can be written, so nothing can be spoken: not a success."""
    faults.fresh_audio_cache("cache-full")
    faults.disk_full(faults.root / "cache-full")
    try:
        first = faults.run("cache-full")
    finally:
        faults.disk_full(None)
    assert first.returncode == 3 and "Traceback" not in first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: 36 of 36 requests were not answered: 36 could not be "
                                                     "spoken") and "No space left on device" in errors[0]
    assert faults.manifest("cache-full")["complete"] is False
    assert differences(resume_clean(faults, "cache-full"), reference) == []


def test_a_store_whose_disk_fills_mid_run_stops_with_one_line_keeps_its_rows_and_resumes(faults, reference):
    """Issue 21 #3: SQLite's "database or disk is full" mid-run: exit 3, one line, rows kept."""
    faults.fresh_audio_cache("cache")
    faults.store_pages(7)  # full after a few batches: a finished 36-row store needs more pages
    try:
        first = faults.run("store-full")
    finally:
        faults.store_pages(None)
    assert first.returncode == 3 and "Traceback" not in first.stderr, first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "responses.sqlite could not be written (database or disk is full)" in errors[0]
    kept = faults.stored("store-full")
    assert 0 < len(kept) < N and differences(kept, reference) == [f"{N - len(kept)} rows lost"]
    assert differences(resume_clean(faults, "store-full"), reference) == []


@pytest.fixture
def api(server):
    """The loopback OpenAI server of the OpenAI backend's tests (test_openai_backend.server)."""
    return server


def test_api_errors_then_resume_match_an_uninterrupted_run_and_never_pay_twice(faults, api):
    """Refused, malformed and empty replies store nothing for their requests; --resume asks
    exactly those again and ends with what a run without faults stores."""
    model = ["--model", "openai:fake-audio", "--base-url", api.url, "--limit", "1"]
    faults.fresh_audio_cache("cache")
    assert faults.run("api-reference", *model).returncode == 0
    bad_request = ("status", 400, {}, {"error": {"message": "bad request", "type": "invalid_request_error"}})
    api.script.extend([bad_request, ("raw", b"{not json"), ("raw", b"{}"), bad_request, ("raw", b"")])
    first = faults.run("api-faults", *model)
    stored = len(faults.stored("api-faults"))
    assert first.returncode == 3 and "failed when asked and were not stored" in first.stderr  # 3: rerun with --resume
    assert 0 < stored < 18 and faults.manifest("api-faults")["complete"] is False
    before = len(api.calls)
    assert faults.run("api-faults", *model, "--resume").returncode == 0
    assert len(api.calls) - before == 18 - stored  # only what was not stored is asked (and paid) again
    assert faults.manifest("api-faults")["complete"] is True
    assert differences(faults.stored("api-faults"), faults.stored("api-reference")) == []
