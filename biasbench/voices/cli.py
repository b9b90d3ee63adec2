"""`biasbench voices ...`: inspect, check, listen to voice pools; see which TTS engines run here."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

voices_app = typer.Typer(no_args_is_help=True,
                         help="Voice pools: list, check balance, preview; TTS backends and catalogues.")
console = Console(stderr=True, soft_wrap=True)  # long paths and messages stay on one line
out = Console()

#: What `voices preview` speaks when no --text is given: everyday sentences with a
#: question, numbers and a name, so odd pronunciations and prosody are easy to hear.
PREVIEW_TEXTS = (
    "Which of the following is the main source of energy for the Earth's climate system?",
    "The meeting was moved to half past three on Thursday, the fourteenth of March.",
    "Doctor Okafor asked whether the results would be ready before the end of the week.",
    "Please choose one answer: A, B, C or D.",
    "After a long discussion, the committee decided to invite three candidates for a second interview.",
)


@voices_app.command("list")
def voices_list(pool: str = typer.Argument("espeak-default")):
    """Show the voices of a pool with their labels and where the labels come from."""
    from biasbench.voices.pool import load_pool

    loaded, path = load_pool(pool, allow_unbalanced=True)
    cloning = any(v.reference_clip for v in loaded.voices)
    columns = ["id", "gender", "ethnicity", "accent", "label source", "tts"] + (["reference clip"] if cloning else [])
    table = Table(*columns, title=f"{loaded.pool} ({path})")
    for v in loaded.voices:
        # The YAML's params only: what the loader derives from a reference clip is shown apart.
        row = [v.id, v.gender, v.ethnicity, v.accent, v.label_source, f"{v.tts.backend} {v.tts.model_extra or {}}"]
        if cloning:
            problem = reference_problem(v)
            row.append(f"{v.reference_clip}" + (" [red](unusable)[/]" if problem else ""))
        table.add_row(*row)
    out.print(table)


def reference_problem(voice) -> str | None:
    """Why a cloning voice's reference clip or transcript cannot be used (None when it can)."""
    return voice.tts.params.get("reference_error")


@voices_app.command("check")
def voices_check(pool: str = typer.Argument("espeak-default")):
    """Check a pool's balance (2 genders x 3 ethnicities, equal cells of at least 3 voices) and,
    for cloning voices, that every reference clip and transcript can be used."""
    from biasbench.voices.pool import check_balance, engine_problems, load_pool

    loaded, path = load_pool(pool, allow_unbalanced=True)
    report = check_balance(loaded)
    table = Table("gender", "ethnicity", "voices", title=f"{loaded.pool} ({path})")
    for (gender, ethnicity), n in sorted(report.counts.items()):
        table.add_row(gender, ethnicity, str(n))
    out.print(table)
    problems = [problem for v in loaded.voices if (problem := reference_problem(v))]
    if problems:
        console.print(f"[red]{len(problems)} voice(s) cannot be cloned[/] (their clips would fail):\n  "
                      + "\n  ".join(problems))
    unspeakable = engine_problems(loaded)
    if unspeakable:
        console.print(f"[red]{len(unspeakable)} voice(s) their engine cannot speak[/] (every clip would fail):\n  "
                      + "\n  ".join(unspeakable))
        problems += unspeakable
    if not report.balanced:
        console.print("[red]unbalanced:[/]\n  " + "\n  ".join(report.problems))
    if problems or not report.balanced:
        raise typer.Exit(1)
    out.print("balanced")


# -- preview -------------------------------------------------------------------------


@dataclass
class PreviewResult:
    written: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (voice id, text, error)
    index: Path | None = None


def write_preview(pool_name: str, out_dir: Path, texts=None, n: int = 3, cache=None,
                  workers: int | None = None, progress: bool = False) -> PreviewResult:
    """Speak `n` texts with every voice of a pool and copy the clips to `out_dir`.

    Clips go through the audio cache and synthesize_all like a real run, so a preview
    hears exactly what a model would hear (16 kHz mono), and a later run reuses them.
    Files: `<voice id>_<k>.wav`, plus `index.csv` with each clip's labels and text.
    """
    from biasbench.errors import BiasbenchError
    from biasbench.tts.cache import AudioCache
    from biasbench.tts.synthesis import SynthesisJob, synthesize_all
    from biasbench.voices.pool import load_pool

    if n < 1:
        raise BiasbenchError(f"--n must be at least 1, got {n}")
    texts = [t for t in (texts or PREVIEW_TEXTS)][:n]
    loaded, _ = load_pool(pool_name, allow_unbalanced=True)
    cache = cache if cache is not None else AudioCache()
    plan = []  # (voice, k, text, job)
    for voice in loaded.voices:
        for k, text in enumerate(texts, start=1):
            plan.append((voice, k, text, SynthesisJob.speak(voice, text, loaded.loudness_target)))
    synthesis = synthesize_all([job for *_, job in plan], cache, workers=workers, progress=progress)
    errors = {job: message for job, message in synthesis.failures}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PreviewResult(index=out_dir / "index.csv")
    with open(result.index, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "voice_id", "gender", "ethnicity", "accent", "label_source",
                         "backend", "params", "text", "status"])
        for voice, k, text, job in plan:
            target = out_dir / f"{voice.id}_{k}.wav"
            if job in errors or not synthesis.ok(job):
                result.failures.append((voice.id, text, errors.get(job, "not synthesised")))
                status = "failed: " + errors.get(job, "not synthesised")
                name = ""
            else:
                shutil.copyfile(cache.path(synthesis.keys[job]), target)
                result.written.append(target)
                status, name = "ok", target.name
            writer.writerow([name, voice.id, voice.gender, voice.ethnicity, voice.accent,
                             voice.label_source, voice.tts.backend, voice.tts.params, text, status])
    return result


@voices_app.command("preview")
def voices_preview(
    pool: str = typer.Argument(..., help="pool name from voices/ or a YAML path"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="folder for the WAV clips"),
    text: Optional[list[str]] = typer.Option(None, "--text", "-t",
                                             help="text to speak (repeatable); default: built-in sentences"),
    n: int = typer.Option(3, "--n", min=1, help="clips per voice"),
    workers: Optional[int] = typer.Option(None, help="parallel synthesis workers (default: all cores)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Write a few WAV clips per voice of POOL to listen to (16 kHz mono, as models hear them)."""
    result = write_preview(pool, out_dir, texts=text, n=n, workers=workers, progress=progress)
    out.print(f"wrote {len(result.written)} clips to {out_dir} (index: {result.index})")
    if result.failures:
        console.print(f"[red]{len(result.failures)} clips failed:[/]")
        for voice_id, spoken, message in result.failures[:20]:
            console.print(f"  {voice_id}: {message}", highlight=False)
        raise typer.Exit(1)


# -- quality control ---------------------------------------------------------------------


@voices_app.command("qc")
def voices_qc(
    pool: str = typer.Argument(..., help="pool name from voices/ or a YAML path"),
    asr: str = typer.Option("whisper-tiny-en", "--asr", help="reference ASR: whisper-tiny-en, whisper-base (offline), "
                            "or any ASR model spec (hf:<whisper checkpoint>)"),
    out_file: Path = typer.Option(Path("voice_qc.csv"), "--out", "-o",
                                  help="CSV to write (a .json with the details goes beside it)"),
    z_threshold: float = typer.Option(3.0, "--z", help="flag robust z-scores beyond this within the pool"),
    wer_threshold: float = typer.Option(0.5, "--max-wer", help="flag voices whose ASR round-trip WER is above this"),
    n_sentences: Optional[int] = typer.Option(None, "--n-sentences", min=1,
                                              help="use only the first N QC sentences (a quick look; default: all)"),
    classifier: Optional[str] = typer.Option(
        None, "--classifier", metavar="MODEL",
        help="also run a transformers audio-classification model (local folder or hub id) on the QC clips: "
             "adds classifier_label/_share/_agrees; a gender classifier (labels female/male, woman/man, f/m) "
             "is compared with each voice's gender label and a mismatch is flagged; other labels (e.g. accent) "
             "are only reported, never mapped to ethnicity"),
    workers: Optional[int] = typer.Option(None, help="parallel synthesis workers (default: all cores)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Measure every voice of POOL (ASR round-trip WER/CER, speaking rate, duration, loudness,
    clipping, silence; optionally an audio classifier's gender/accent label) on fixed sentences
    and flag outliers; writes voice_qc.csv."""
    from biasbench.voices.qc import QC_SENTENCES, run_qc, write_qc

    result = run_qc(pool, asr=asr, sentences=QC_SENTENCES[:n_sentences], workers=workers, progress=progress,
                    z_threshold=z_threshold, wer_threshold=wer_threshold, classifier=classifier)
    paths = write_qc(result, out_file)
    # Plain text, not a rich table: nine columns must not be squeezed into the terminal's width.
    print(f"voice QC: {result.meta['pool']} (ASR {asr}" + (f", classifier {classifier})" if classifier else ")"))
    print(result.table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    flagged = result.table[result.table["flags"] != ""]
    out.print(f"{len(flagged)} of {len(result.table)} voices flagged; wrote {paths['csv']} and {paths['json']}")
    if result.meta["synthesis_failures"]:
        console.print(f"[red]{len(result.meta['synthesis_failures'])} QC clips could not be made[/] (see {paths['json']})")


# -- engines and catalogues --------------------------------------------------------------


@voices_app.command("backends")
def voices_backends():
    """List the TTS backends and whether each is installed here."""
    from biasbench.tts.registry import backend_status, known_backends

    table = Table("backend", "installed", "network", "version / how to install")
    for name in known_backends():
        status = backend_status(name)
        table.add_row(name, "yes" if status.installed else "[red]no[/]",
                      "offline" if status.offline else "needs internet", status.detail)
    out.print(table)


@voices_app.command("catalogue")
def voices_catalogue(
    refresh: bool = typer.Option(False, "--refresh", help="download the vendor's voice list (needs internet)"),
    path: Optional[Path] = typer.Option(None, "--path", help="catalogue file to write (default: the shipped one)"),
):
    """Show the edge-tts English voice catalogue (name, locale, vendor gender)."""
    from biasbench.tts import edge

    if refresh:
        written = edge.refresh_catalogue(path)
        out.print(f"catalogue written to {written}")
        if path is not None:
            return
    document = edge.catalogue()
    table = Table("voice", "locale", "gender", "note", title=f"edge-tts voices ({edge.CATALOGUE_PATH.name})")
    for voice in document["voices"]:
        table.add_row(voice["name"], voice["locale"], voice["gender"], voice.get("note", ""))
    out.print(table)
    console.print(document.get("_about", ""), highlight=False)
