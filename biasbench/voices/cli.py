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

from biasbench.cli_options import include_path_option
from biasbench.formats import safe_row
from biasbench.listing import FORMAT_HELP, ListFormat, print_listing

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
def voices_list(pool: str = typer.Argument("espeak-default"),
                fmt: ListFormat = typer.Option(ListFormat.table, "--format", help=FORMAT_HELP),
                include_path: Optional[list[Path]] = include_path_option()):
    """Show the voices of a pool with their labels and where the labels come from."""
    from biasbench.voices.pool import load_pool

    loaded, path = load_pool(pool, allow_unbalanced=True)
    cloning = any(v.reference_clip for v in loaded.voices)
    rows = []
    for v in loaded.voices:
        # The YAML's params only: what the loader derives from a reference clip is shown apart.
        params = " ".join(f"{k}={value}" for k, value in (v.tts.model_extra or {}).items())
        row = {"id": v.id, "gender": v.gender, "ethnicity": v.ethnicity, "accent": v.accent,
               "label_source": v.label_source, "tts": f"{v.tts.backend} {params}".strip()}
        if cloning:
            row["reference_clip"] = str(v.reference_clip or "")
            row["reference_usable"] = "no" if reference_problem(v) else "yes"
        rows.append(row)
    print_listing(rows, fmt, title=f"{loaded.pool} ({path})")


def reference_problem(voice) -> str | None:
    """Why a cloning voice's reference clip or transcript cannot be used (None when it can)."""
    return voice.tts.params.get("reference_error")


@voices_app.command("check")
def voices_check(pool: str = typer.Argument("espeak-default"),
                 include_path: Optional[list[Path]] = include_path_option()):
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
    # The problems are printed without markup: their file names and extras keep their brackets.
    if problems:
        console.print(f"[red]{len(problems)} voice(s) cannot be cloned[/] (their clips would fail):")
        console.print("  " + "\n  ".join(problems), markup=False)
    unspeakable = engine_problems(loaded)
    if unspeakable:
        console.print(f"[red]{len(unspeakable)} voice(s) their engine cannot speak[/] (every clip would fail):")
        console.print("  " + "\n  ".join(unspeakable), markup=False)
        problems += unspeakable
    if not report.balanced:
        console.print("[red]unbalanced:[/]")
        console.print("  " + "\n  ".join(report.problems), markup=False)
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
            writer.writerow(safe_row([name, voice.id, voice.gender, voice.ethnicity, voice.accent,
                                      voice.label_source, voice.tts.backend, voice.tts.params, text, status]))
    return result


@voices_app.command("preview")
def voices_preview(
    pool: str = typer.Argument(..., help="pool name from voices/ or a YAML path"),
    out_dir: Path = typer.Option(..., "--output-dir", "--out", "-o", help="folder for the WAV clips"),
    text: Optional[list[str]] = typer.Option(None, "--text", "-t",
                                             help="text to speak (repeatable); default: built-in sentences"),
    n: int = typer.Option(3, "--n", min=1, help="clips per voice"),
    workers: Optional[int] = typer.Option(None, help="parallel synthesis workers (default: all cores)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    include_path: Optional[list[Path]] = include_path_option(),
):
    """Write a few WAV clips per voice of POOL to listen to (16 kHz mono, as models hear them)."""
    result = write_preview(pool, out_dir, texts=text, n=n, workers=workers, progress=progress)
    out.print(f"wrote {len(result.written)} clips to {out_dir} (index: {result.index})")
    if result.failures:
        console.print(f"[red]{len(result.failures)} clips failed:[/]")
        for voice_id, spoken, message in result.failures[:20]:
            console.print(f"  {voice_id}: {message}", highlight=False, markup=False)
        raise typer.Exit(1)


# -- quality control ---------------------------------------------------------------------


@voices_app.command("qc")
def voices_qc(
    pool: str = typer.Argument(..., help="pool name from voices/ or a YAML path"),
    asr: str = typer.Option("whisper-tiny-en", "--asr", help="reference ASR: whisper-tiny-en, whisper-base (offline), "
                            "or any ASR model spec (hf:<whisper checkpoint>)"),
    out_file: Path = typer.Option(Path("voice_qc.csv"), "--output", "--out", "-o",
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
    speaker_embeddings: Optional[bool] = typer.Option(
        None, "--speaker/--no-speaker",
        help="speaker embeddings (resemblyzer): clone fidelity of cloning voices and each voice's nearest other "
             "voice (default: on when resemblyzer is installed)"),
    workers: Optional[int] = typer.Option(None, help="parallel synthesis workers (default: all cores)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    include_path: Optional[list[Path]] = include_path_option(),
):
    """Measure every voice of POOL (ASR round-trip WER/CER, speaking rate, duration, loudness,
    clipping, silence, pitch, SNR; clone fidelity and nearest voice by speaker embeddings; optionally
    an audio classifier's gender/accent label) on fixed sentences and flag outliers; writes voice_qc.csv."""
    from biasbench.voices import speaker
    from biasbench.voices.qc import QC_SENTENCES, run_qc, write_qc

    if speaker_embeddings is None:
        speaker_embeddings = speaker.available()
    result = run_qc(pool, asr=asr, sentences=QC_SENTENCES[:n_sentences], workers=workers, progress=progress,
                    z_threshold=z_threshold, wer_threshold=wer_threshold, classifier=classifier,
                    speaker_embeddings=speaker_embeddings)
    paths = write_qc(result, out_file)
    # Plain text, not a rich table: nine columns must not be squeezed into the terminal's width.
    print(f"voice QC: {result.meta['pool']} (ASR {asr}" + (f", classifier {classifier})" if classifier else ")"))
    print(result.table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    flagged = result.table[result.table["flags"] != ""]
    out.print(f"{len(flagged)} of {len(result.table)} voices flagged; wrote {paths['csv']} and {paths['json']}")
    if result.meta["synthesis_failures"]:
        console.print(f"[red]{len(result.meta['synthesis_failures'])} QC clips could not be made[/] (see {paths['json']})")


# -- building a pool from a speech corpus -------------------------------------------------


@voices_app.command("build")
def voices_build(
    recipe: Path = typer.Argument(..., help="recipe YAML (voices/recipes/*.yaml or your own)"),
    out_file: Path = typer.Option(..., "--out", "-o", help="pool YAML to write; reference clips go to "
                                  "<stem>-references/ beside it, the selection log to <stem>.build.json"),
    per_cell: int = typer.Option(5, "--per-cell", min=1, help="speakers per gender x ethnicity cell"),
    seed: int = typer.Option(0, "--seed", help="seed of the speaker order within each cell"),
    allow_unbalanced: bool = typer.Option(False, "--allow-unbalanced",
                                          help="keep cells with fewer than --per-cell speakers (not empty ones)"),
    clone: bool = typer.Option(False, "--clone", help="also clone two sentences per speaker with the recipe's "
                               "cloning backend and refuse speakers whose clone fidelity is below the threshold"),
    natural: bool = typer.Option(False, "--natural", help="voices are the speakers' own recordings (no TTS); "
                                 "also writes <stem>-recordings/asr.yaml, asr_fairness over the sentences they all read"),
    asr: str = typer.Option("whisper-tiny-en", "--asr", help="ASR for the round-trip transcript gate"),
):
    """Pick speakers per cell from a corpus (deterministic, under quality gates), cut their reference
    clips and write a cloning pool with each voice's provenance. See voices/README.md."""
    from biasbench.voices.build import build_pool

    result = build_pool(recipe, out_file, per_cell=per_cell, seed=seed, allow_unbalanced=allow_unbalanced,
                        clone=clone, natural=natural, asr=asr, progress=lambda message: console.print(message, highlight=False))
    table = Table("cell", "chosen", "rejected", title=f"{result.out} ({len(result.pool['voices'])} voices)")
    for cell, entry in result.log.items():
        table.add_row(cell, ", ".join(entry["chosen"]), str(len(entry["rejected"])))
    out.print(table)
    out.print(f"wrote {result.out}, clips in {result.clips_dir}, log in {result.out.with_suffix('.build.json')}")


# -- engines and catalogues --------------------------------------------------------------


@voices_app.command("backends")
def voices_backends(fmt: ListFormat = typer.Option(ListFormat.table, "--format", help=FORMAT_HELP)):
    """List the TTS backends and whether each is installed here."""
    from biasbench.tts.registry import backend_status, known_backends

    rows = []
    for name in known_backends():
        status = backend_status(name)
        rows.append({"backend": name, "installed": "yes" if status.installed else "no",
                     "network": "offline" if status.offline else "needs internet",
                     "version / how to install": status.detail})
    print_listing(rows, fmt)


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
