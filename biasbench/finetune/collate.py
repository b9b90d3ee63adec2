"""Batches for training: chat formatting, lazy audio, prompt/completion masks, right padding.

Each batch reads its clips from the `AudioCache` when it is built (never the whole dataset in
memory). The prompt (system turn, user turn with the clip and the text prompt, assistant
header) goes through the processor, which expands the one `<|AUDIO|>` placeholder into as many
audio tokens as the clip needs; the completion (the response text + the end-of-turn token) is
tokenized on its own and appended. So the prompt length is the one AFTER expansion, and the
completion tokens are exactly those the model emits when it generates the response.

Training batches are RIGHT padded (each row starts at position 0; evaluation left-pads for
generation, a different need). Labels are -100 on the prompt and on padding: the loss is on
the response tokens only.
"""

from __future__ import annotations

import numpy as np

from biasbench.errors import BiasbenchError
from biasbench.tts.cache import AudioCache

IGNORE_INDEX = -100
_MARK = "\u2063RESPONSE\u2063"  # a string no template or tokenizer rewrites


class SpokenChat:
    """Chat formatting for one processor: the prompt text of a (clip, text) user turn and the
    token ids of an assistant completion. Matches the evaluation backend's prompt exactly: the
    user turn holds the clip, then the text; no system turn (the template's default applies)."""

    def __init__(self, processor):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.sampling_rate = int(processor.feature_extractor.sampling_rate)
        self.max_audio_seconds = float(processor.feature_extractor.n_samples) / self.sampling_rate
        self.turn_end = self._turn_end()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else \
            self.tokenizer.convert_tokens_to_ids(self.tokenizer.eos_token)
        self._specials = [t for t in self.tokenizer.all_special_tokens if t]

    def prompt_text(self, text_prompt: str) -> str:
        content = [{"type": "audio", "audio": "<waveform>"}, {"type": "text", "text": text_prompt}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True, tokenize=False)

    def _turn_end(self) -> str:
        """What the template writes after an assistant message (Qwen: `<|im_end|>`), newline dropped."""
        messages = [{"role": "user", "content": "u"}, {"role": "assistant", "content": _MARK}]
        rendered = self.processor.apply_chat_template(messages, tokenize=False)
        if _MARK not in rendered:
            raise BiasbenchError("the chat template does not render an assistant message; cannot build completions")
        return rendered.split(_MARK, 1)[1].rstrip("\n ") or (self.tokenizer.eos_token or "")

    def check_text(self, text: str, what: str) -> None:
        """Refuse special tokens inside data text: they would be read as control tokens."""
        for special in self._specials:
            if special in text:
                raise BiasbenchError(f"{what} contains the special token {special!r}: {text[:80]!r}")

    def completion_ids(self, text: str) -> list[int]:
        return self.tokenizer(text + self.turn_end, add_special_tokens=False)["input_ids"]

    def encode_prompts(self, rows: list[dict], cache: AudioCache):
        """(prompt token ids per row, audio tensors) for rows with `audio_key` and `text_prompt`."""
        clips = [self._clip(row, cache) for row in rows]
        encoded = self.processor(text=[self.prompt_text(row["text_prompt"]) for row in rows], audio=clips,
                                 sampling_rate=self.sampling_rate, return_tensors="pt", padding=True)
        ids = [row_ids[mask.bool()].tolist() for row_ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
        audio = {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")}
        return ids, audio

    def _clip(self, row: dict, cache: AudioCache) -> np.ndarray:
        audio = cache.get(row["audio_key"])  # read now, for this batch only
        if audio is None:
            raise BiasbenchError(f"audio of {row.get('example_id', row['audio_key'])} vanished from the cache "
                                 f"({cache.root}); rerun to synthesise it again")
        if len(audio) > self.max_audio_seconds * self.sampling_rate:
            raise BiasbenchError(f"{row.get('example_id')}: clip of {len(audio) / self.sampling_rate:.1f} s is "
                                 f"longer than the {self.max_audio_seconds:.0f} s the model hears; it would be "
                                 "truncated silently")
        return audio


def _right_pad(sequences: list[list[int]], value: int):
    import torch

    width = max(map(len, sequences))
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


class SFTCollator:
    """rows -> input_ids, attention_mask, labels (-100 on prompt and padding), input_features,
    feature_attention_mask, and `group_ids` (the text row of each example, for the consistency
    loss; the trainer removes it before the forward pass)."""

    def __init__(self, chat: SpokenChat, cache: AudioCache):
        self.chat, self.cache = chat, cache
        self._completions: dict[str, list[int]] = {}

    def completion(self, text: str) -> list[int]:
        if text not in self._completions:
            self._completions[text] = self.chat.completion_ids(text)
        return self._completions[text]

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        prompts, audio = self.chat.encode_prompts(rows, self.cache)
        completions = [self.completion(row["response"]) for row in rows]
        full = [p + c for p, c in zip(prompts, completions)]
        labels = [[IGNORE_INDEX] * len(p) + c for p, c in zip(prompts, completions)]
        input_ids = _right_pad(full, self.chat.pad_id)
        return {
            "input_ids": input_ids,
            "attention_mask": _right_pad([[1] * len(s) for s in full], 0),
            "labels": _right_pad(labels, IGNORE_INDEX),
            **audio,
            "group_ids": torch.tensor([int(row["group"]) for row in rows], dtype=torch.long),
        }


class PreferenceCollator:
    """rows with `chosen`/`rejected` -> the batch trl's DPOTrainer expects: input_ids,
    attention_mask, completion_mask, input_features, feature_attention_mask; the chosen rows
    first, then the rejected rows of the same examples in the same order (audio repeated)."""

    def __init__(self, chat: SpokenChat, cache: AudioCache):
        self.chat, self.cache = chat, cache

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        prompts, audio = self.chat.encode_prompts(rows, self.cache)
        chosen = [self.chat.completion_ids(row["chosen"]) for row in rows]
        rejected = [self.chat.completion_ids(row["rejected"]) for row in rows]
        prompts2 = prompts + prompts
        completions = chosen + rejected
        full = [p + c for p, c in zip(prompts2, completions)]
        return {
            "input_ids": _right_pad(full, self.chat.pad_id),
            "attention_mask": _right_pad([[1] * len(s) for s in full], 0),
            "completion_mask": _right_pad([[0] * len(p) + [1] * len(c) for p, c in zip(prompts2, completions)], 0),
            **{k: torch.cat([v, v], dim=0) for k, v in audio.items()},
        }
