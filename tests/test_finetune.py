"""Debiasing fine-tunes (biasbench/finetune): LoRA SFT, DPO, adapters, comparison. CPU, tiny models.

The models are tiny Qwen2-Audio of the real classes with a 3 s audio window (10x cheaper than
the 30 s one, same code path). Voices are pitched tones from a test TTS engine registered for
this module ("test-tone"): a voice's pitch stands for its gender, and the word "alpha" or
"beta" in the text adds a high content tone, so the right answer (A for alpha, B for beta) can
be heard, and a model can be made to depend on the voice's pitch.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import PROJECT

pytest.importorskip("peft")
pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from biasbench.config import VoicePool  # noqa: E402
from biasbench.errors import BiasbenchError, ConfigError  # noqa: E402
from biasbench.finetune.adapter import (  # noqa: E402
    MANIFEST_NAME,
    add_lora,
    adapted_modules,
    read_adapter,
    save_adapter,
)
from biasbench.finetune.collate import IGNORE_INDEX, PreferenceCollator, SFTCollator, SpokenChat  # noqa: E402
from biasbench.finetune.compare import answer_divergence, compare_runs, to_markdown  # noqa: E402
from biasbench.finetune.config import FinetuneConfig, LoraSpec, load_finetune_config  # noqa: E402
from biasbench.finetune.data import (  # noqa: E402
    CounterfactualSampler,
    SpokenDataset,
    check_pools_disjoint,
    load_instruction_pairs,
    load_pools,
    speak_rows,
)
from biasbench.finetune.dpo import mine_pairs, run_dpo  # noqa: E402
from biasbench.finetune.sft import group_divergence, response_loss, run_sft  # noqa: E402
from biasbench.models.base import Request  # noqa: E402
from biasbench.models.registry import load_backend, resolve_model  # noqa: E402
from biasbench.tts.cache import AudioCache  # noqa: E402

SR = 16000
PROMPT = "Answer A or B."
LN2 = math.log(2)


# --------------------------------------------------------------------------- fixtures


class ToneTTS:
    """Test TTS: a harmonic tone at the voice's f0, plus a content tone (3 kHz for 'alpha',
    5 kHz otherwise) jittered by the text, 1 s long."""

    name = "test-tone"

    def version(self) -> str:
        return "1"

    def synthesize(self, text: str, params: dict):
        f0, bright = float(params["f0"]), float(params.get("bright", 0.5))
        t = np.arange(SR) / SR
        voice = sum((bright ** k) * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(3))
        content = (3000.0 if "alpha" in text else 5000.0) + (zlib.crc32(text.encode()) % 200) - 100
        return (0.125 * voice + 0.2 * np.sin(2 * np.pi * content * t)).astype(np.float32), SR


def tone_pool(name: str, prefix: str, female: list[float], male: list[float]) -> dict:
    voices = []
    for gender, pitches in (("female", female), ("male", male)):
        for n, (ethnicity, k) in enumerate((e, k) for e in ("black", "white", "east_asian") for k in range(3)):
            voices.append({"id": f"{prefix}-{gender[0]}-{ethnicity}-{k}", "gender": gender, "ethnicity": ethnicity,
                           "accent": "tone", "label_source": "proxy",
                           "tts": {"backend": "test-tone", "f0": pitches[n], "bright": 0.3 + 0.1 * k}})
    return {"pool": name, "voices": voices}


TRAIN_POOL = tone_pool("tone-train", "tr", [200, 215, 230, 245, 260, 275, 210, 235, 255],
                       [90, 100, 110, 120, 130, 140, 95, 115, 135])
EVAL_POOL = tone_pool("tone-eval", "ev", [205, 220, 240, 250, 265, 270, 225, 228, 258],
                      [93, 105, 112, 118, 125, 138, 98, 108, 132])


def items(lo: int, hi: int) -> list[tuple[str, str, str]]:
    """(id, spoken text, right answer): even ids say 'alpha' (answer A), odd ones 'beta' (B)."""
    return [(f"q{k}", f"Question {k} {'alpha' if k % 2 == 0 else 'beta'}.", "A" if k % 2 == 0 else "B")
            for k in range(lo, hi)]


TRAIN_ITEMS, MINE_ITEMS, TEST_ITEMS = items(0, 30), items(50, 64), items(100, 112)


@pytest.fixture(scope="module", autouse=True)
def _module_env(biasbench_cache):
    """The tone engine registered; one torch thread (the tiny model is faster single-threaded,
    and far faster when other processes share the CPUs)."""
    from biasbench.tts import registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.BACKENDS, "test-tone", ToneTTS)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)


def build_tiny_short(path: Path, seed: int = 0, hidden: int = 64) -> Path:
    """The tiny Qwen2-Audio (real classes) with a 3 s audio window; `seed` picks the weights."""
    from transformers import (
        AutoProcessor,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    from biasbench.models.tiny.qwen2audio import tiny_qwen2audio_path

    source = tiny_qwen2audio_path()
    full = AutoProcessor.from_pretrained(source)
    extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=SR, hop_length=160, n_fft=400, chunk_length=3)
    processor = Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=full.tokenizer,
                                    chat_template=full.chat_template)
    config = Qwen2AudioConfig.from_pretrained(source)
    config.audio_config.max_source_positions = 150  # 300 mel frames = 3 s
    config.text_config.hidden_size, config.text_config.intermediate_size = hidden, 2 * hidden
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2AudioForConditionalGeneration(config).eval()
    model.generation_config = Qwen2AudioForConditionalGeneration.from_pretrained(source).generation_config
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return Path(path)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finetune")
    (root / "train.yaml").write_text(yaml.safe_dump(TRAIN_POOL), encoding="utf-8")
    (root / "eval.yaml").write_text(yaml.safe_dump(EVAL_POOL), encoding="utf-8")
    with (root / "train.jsonl").open("w", encoding="utf-8") as f:
        for item_id, text, answer in TRAIN_ITEMS:
            f.write(json.dumps({"id": item_id, "instruction": text, "response": answer}) + "\n")
    pd.DataFrame([{"item_id": i, "text": t, "answer": a} for i, t, a in MINE_ITEMS]).to_csv(root / "mine.csv",
                                                                                            index=False)
    (root / "mine.yaml").write_text(
        "task: tone_ab\ndataset:\n  id_field: item_id\n  local: {path: mine.csv}\ndoc_to_text: \"{{ text }}\"\n"
        f"instruction: \"{PROMPT}\"\ndoc_to_choice: [alpha, beta]\ndoc_to_target: \"{{{{ answer }}}}\"\n"
        "output_type: multiple_choice\nscoring: logprobs\nmetrics: [accuracy]\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    return build_tiny_short(tmp_path_factory.mktemp("tiny-short") / "model", seed=0)


def make_config(work: Path, model: Path, name: str, **overrides) -> FinetuneConfig:
    training = {"learning_rate": 1e-3, "max_steps": 1, "batch_size": 6, "gradient_accumulation_steps": 1,
                "save_steps": 100, "logging_steps": 1, **overrides.pop("training", {})}
    data = dict(
        name=name, model=str(model), train_pool=str(work / "train.yaml"), eval_pool=str(work / "eval.yaml"),
        data={"id_field": "id", "local": {"path": str(work / "train.jsonl")}}, text_prompt=PROMPT,
        output_dir=str(work / "runs"), training=training)
    data.update(overrides)
    return FinetuneConfig.model_validate(data)


def processor_of(model: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model)


def spoken(rows, pool=TRAIN_POOL, max_seconds=3.0):
    examples, _ = speak_rows(rows, VoicePool.model_validate(pool), AudioCache(), max_audio_seconds=max_seconds,
                             progress=False)
    return examples


# --------------------------------------------------------------------------- config, data, pools


def test_config_defaults_and_refusals(tmp_path):
    config = FinetuneConfig(name="x", train_pool="a", eval_pool="b")
    assert (config.lora.rank, config.lora.alpha, config.lora.dropout) == (8, 32, 0.05)
    assert config.training.learning_rate == 1e-4 and config.training.mixed_precision == "auto"
    assert config.lora.target_modules.startswith(".*language_model")
    with pytest.raises(ValueError, match="multiple of"):
        FinetuneConfig(name="x", train_pool="a", eval_pool="b", training={"batch_size": 4})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain_pool: a\neval_pool: b\nlora: {rnak: 4}\n")
    with pytest.raises(ConfigError, match="lora.rnak"):
        load_finetune_config(bad)
    # The shipped example validates, and its pools are balanced and disjoint.
    example = load_finetune_config(PROJECT / "biasbench" / "finetune" / "examples" / "sft_tiny.yaml")
    pools = load_pools(example)
    assert len(pools.train.voices) == len(pools.eval.voices) == 18
    pairs, info = load_instruction_pairs(example, data_source="local")
    assert len(pairs) == 30 and info["data_hash"]


def test_overlapping_train_and_eval_voices_are_refused():
    train, evaluation = VoicePool.model_validate(TRAIN_POOL), VoicePool.model_validate(EVAL_POOL)
    check_pools_disjoint(train, evaluation)  # disjoint: fine
    same_id = VoicePool.model_validate({**EVAL_POOL, "voices": [TRAIN_POOL["voices"][0], *EVAL_POOL["voices"][1:]]})
    with pytest.raises(BiasbenchError, match="in both pools"):
        check_pools_disjoint(train, same_id)
    renamed = {**TRAIN_POOL["voices"][3], "id": "a-new-name"}  # same voice under another id
    same_params = VoicePool.model_validate({**EVAL_POOL, "voices": [renamed, *EVAL_POOL["voices"][1:]]})
    with pytest.raises(BiasbenchError, match="same voice .*same TTS backend and parameters"):
        check_pools_disjoint(train, same_params)


def test_training_data_without_expected_columns_or_rows_is_refused(work, base_model, tmp_path):
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"id": "a", "question": "q?", "answer": "x"}\n')
    config = make_config(work, base_model, "cols", data={"id_field": "id", "local": {"path": str(wrong)}})
    with pytest.raises(ConfigError, match=r"no column\(s\) \['instruction', 'response'\].*question"):
        load_instruction_pairs(config)
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"id": "a", "instruction": "q?", "response": ""}\n{"id": "b", "instruction": " ", '
                     '"response": "x"}\n')
    config = make_config(work, base_model, "empty", data={"id_field": "id", "local": {"path": str(blank)}})
    with pytest.raises(ConfigError, match="training set is empty"):
        run_sft(config, progress=False)
    assert not (work / "runs" / "empty").exists()  # refused before anything was written


def test_counterfactual_sampler_groups_one_instruction_over_balanced_voices():
    examples = spoken([{"group_id": i, "spoken": t, "text_prompt": PROMPT, "response": a} for i, t, a in items(0, 4)])
    sampler = CounterfactualSampler(examples, 6, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(len(examples)))  # an epoch visits every (item, voice) once
    for start in range(0, len(order), 6):
        chunk = [examples[i] for i in order[start:start + 6]]
        assert len({e.group for e in chunk}) == 1  # one instruction ...
        assert len({(e.gender, e.ethnicity) for e in chunk}) == 6  # ... one voice per cell
    assert order == list(CounterfactualSampler(examples, 6, seed=3))  # same seed and epoch: same order
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_collators_mask_the_prompt_and_match_the_evaluation_prompt(base_model):
    processor = processor_of(base_model)
    chat = SpokenChat(processor)
    examples = spoken([{"group_id": "q0", "spoken": "Question 0 alpha.", "text_prompt": PROMPT, "response": "A"},
                       {"group_id": "q1", "spoken": "Question 1 beta, longer.", "text_prompt": PROMPT,
                        "response": "B, because."}])[::6]
    rows = SpokenDataset(examples)
    batch = SFTCollator(chat, AudioCache())([rows[i] for i in range(len(rows))])
    tokenizer = processor.tokenizer
    from biasbench.models.hf_qwen2audio import HFQwen2AudioBackend

    backend = HFQwen2AudioBackend(str(base_model), device="cpu")
    for i, example in enumerate(examples):
        labels = batch["labels"][i]
        kept = labels[labels != IGNORE_INDEX].tolist()
        assert tokenizer.decode(kept) == example.response + "<|im_end|>"  # loss on the response only
        n = int(batch["attention_mask"][i].sum())
        assert batch["attention_mask"][i, :n].all() and not batch["attention_mask"][i, n:].any()  # right padded
        assert (labels[n:] == IGNORE_INDEX).all()
        # The prompt is exactly what the evaluation backend sends for the same clip and text.
        request = Request("r", PROMPT, audio=AudioCache().get(example.audio_key), choices=["A", "B"])
        eval_ids = backend._encode([request])["input_ids"][0].tolist()
        assert batch["input_ids"][i, : n - len(kept)].tolist() == eval_ids
    pref = PreferenceCollator(chat, AudioCache())(
        [{**rows[i], "chosen": "A", "rejected": "B"} for i in range(len(rows))])
    assert pref["input_ids"].shape[0] == 2 * len(rows) and pref["input_features"].shape[0] == 2 * len(rows)
    chosen = pref["input_ids"][0][pref["completion_mask"][0].bool()].tolist()
    rejected = pref["input_ids"][len(rows)][pref["completion_mask"][len(rows)].bool()].tolist()
    assert tokenizer.decode(chosen) == "A<|im_end|>" and tokenizer.decode(rejected) == "B<|im_end|>"


def test_consistency_divergence_is_zero_for_identical_voices_and_positive_otherwise():
    logits = torch.randn(4, 5, 11)
    labels = torch.full((4, 5), IGNORE_INDEX)
    labels[:, 3:] = 2
    groups = torch.tensor([0, 0, 1, 1])
    same = logits.clone()
    same[1], same[3] = same[0], same[2]
    assert float(group_divergence(same, labels, groups, "js")) < 1e-6
    assert float(group_divergence(logits, labels, groups, "js")) > 0
    assert float(group_divergence(logits, labels, groups, "sym_kl")) > 0


def test_lora_goes_on_the_language_model_only(base_model):
    from transformers import Qwen2AudioForConditionalGeneration

    model = Qwen2AudioForConditionalGeneration.from_pretrained(base_model)
    names = adapted_modules(add_lora(model, LoraSpec()))
    assert names and all("language_model" in n for n in names)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(base_model)
    with pytest.raises(BiasbenchError, match="audio encoder or projector"):
        add_lora(model, LoraSpec(target_modules=r".*\.(q_proj|k_proj|v_proj)"))


# --------------------------------------------------------------------------- SFT and adapters


@pytest.fixture(scope="module")
def one_step(work, base_model):
    """One SFT step (one instruction spoken by 6 voices, lr 1e-3) and the batch it trained on."""
    one = work / "one.jsonl"
    one.write_text(json.dumps({"id": "q0", "instruction": "Question 0 alpha.", "response": "A"}) + "\n")
    config = make_config(work, base_model, "one-step", data={"id_field": "id", "local": {"path": str(one)}},
                         counterfactual={"voices_per_instruction": 6, "consistency_weight": 0.5})
    result = run_sft(config, progress=False)
    examples = spoken([{"group_id": "q0", "spoken": "Question 0 alpha.", "text_prompt": PROMPT, "response": "A"}])
    rows = SpokenDataset(examples)
    batch = SFTCollator(SpokenChat(processor_of(base_model)), AudioCache())([rows[i] for i in range(len(rows))])
    return result, batch


def test_one_sft_step_lowers_the_loss_and_changes_only_lora(one_step, base_model):
    from transformers import Qwen2AudioForConditionalGeneration

    result, batch = one_step
    base = Qwen2AudioForConditionalGeneration.from_pretrained(base_model).eval()
    trained = result.model.eval()
    with torch.no_grad():
        before, _ = response_loss(base, batch)
        after, _ = response_loss(trained, batch)
    assert float(after) < float(before) - 1e-3, (float(before), float(after))

    base_state = base.state_dict()
    lora = {k: v for k, v in trained.state_dict().items() if "lora_" in k}
    assert lora and any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at 0
    frozen = {k.removeprefix("base_model.model.").replace(".base_layer", ""): v
              for k, v in trained.state_dict().items() if "lora_" not in k}
    assert set(frozen) == set(base_state)
    for name, value in frozen.items():  # every base weight, encoder and projector included, bit-identical
        assert torch.equal(value, base_state[name]), name
    assert any(k.startswith("model.audio_tower") for k in frozen)
    assert any(k.startswith("model.multi_modal_projector") for k in frozen)

    manifest = json.loads((result.adapter_dir / MANIFEST_NAME).read_text())
    for key in ("base_model", "data", "pools", "settings", "versions", "adapter_sha256", "training"):
        assert manifest[key], key
    assert manifest["pools"]["train"]["voices"] == [v["id"] for v in TRAIN_POOL["voices"]]
    assert manifest["pools"]["eval"]["pool"] == "tone-eval" and manifest["training"]["global_step"] == 1
    assert manifest["base_model"]["local_sha256"] and manifest["data"]["data_hash"]
    assert str(result.adapter_dir).startswith(str(result.run_dir))  # the run's own folder, no hub cache


def test_adapter_loads_in_the_backend_and_changes_the_fingerprint(one_step, base_model):
    result, _ = one_step
    choice = resolve_model(str(base_model))
    plain = load_backend(choice, device="cpu")
    adapted = load_backend(choice, device="cpu", adapter=str(result.adapter_dir))
    assert "adapter" not in plain.fingerprint()
    assert adapted.fingerprint()["adapter"]["sha256"] == read_adapter(result.adapter_dir).sha256
    audio = AudioCache().get(spoken([{"group_id": "q0", "spoken": "Question 0 alpha.", "text_prompt": PROMPT}])[0]
                             .audio_key)
    request = [Request("r", PROMPT, audio=audio, choices=["A", "B"])]
    assert plain.score_choices(request)[0].option_logprobs != adapted.score_choices(request)[0].option_logprobs
    with pytest.raises(BiasbenchError, match="adapter applies to transformers"):
        load_backend(resolve_model("simulated-no-bias"), adapter=str(result.adapter_dir))


def test_adapter_for_a_different_base_is_refused(one_step, tmp_path):
    result, _ = one_step
    other_weights = build_tiny_short(tmp_path / "seed1", seed=1)  # same shapes, other weights
    with pytest.raises(BiasbenchError, match="weights differ"):
        load_backend(resolve_model(str(other_weights)), device="cpu", adapter=str(result.adapter_dir))
    narrower = build_tiny_short(tmp_path / "narrow", seed=0, hidden=32)  # other shapes
    with pytest.raises(BiasbenchError, match="different architecture"):
        load_backend(resolve_model(str(narrower)), device="cpu", adapter=str(result.adapter_dir))
    # An adapter without biasbench's manifest: its declared base name, then every LoRA shape.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (foreign / name).write_bytes((result.adapter_dir / name).read_bytes())
    with pytest.raises(BiasbenchError, match="declares base model"):
        load_backend(resolve_model(str(narrower)), device="cpu", adapter=str(foreign))
    config = json.loads((foreign / "adapter_config.json").read_text())
    (foreign / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(narrower)}))
    with pytest.raises(BiasbenchError, match=r"has shape .* made for another base model"):
        load_backend(resolve_model(str(narrower)), device="cpu", adapter=str(foreign))


def test_a_failed_save_leaves_no_adapter_that_looks_complete(one_step, tmp_path):
    result, _ = one_step

    class Failing:
        def save_pretrained(self, path, **kwargs):
            (Path(path) / "adapter_config.json").write_text("{}")
            raise OSError("disk full")

    target = tmp_path / "run" / "adapter"
    with pytest.raises(OSError, match="disk full"):
        save_adapter(Failing(), target, {"name": "x"})
    assert not target.exists() and list(target.parent.iterdir()) == []  # no partial folder left
    save_adapter(result.model, target, {"name": "good"})  # a complete one ...
    with pytest.raises(OSError, match="disk full"):
        save_adapter(Failing(), target, {"name": "x"})
    assert json.loads((target / MANIFEST_NAME).read_text())["name"] == "good"  # ... survives a failed overwrite
    assert read_adapter(target).sha256 and [p.name for p in target.parent.iterdir()] == ["adapter"]


def test_resume_continues_from_the_checkpoint_at_the_right_step(work, base_model):
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt

    settings = dict(training={"max_steps": 4, "save_steps": 2, "learning_rate": 1e-3},
                    counterfactual={"consistency_weight": 0.3}, limit=4)
    straight = run_sft(make_config(work, base_model, "straight", **settings), progress=False)
    config = make_config(work, base_model, "killed", **settings)
    with pytest.raises(KeyboardInterrupt):
        run_sft(config, progress=False, callbacks=[StopAfterSave()])
    run_dir = work / "runs" / "killed"
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir() and not (run_dir / "adapter").exists()
    with pytest.raises(BiasbenchError, match="--resume"):
        run_sft(config, progress=False)
    steps = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)

    resumed = run_sft(config, progress=False, resume=True, callbacks=[Record()])
    assert resumed.manifest["training"]["resumed_from"].endswith("checkpoint-2")
    assert resumed.manifest["training"]["global_step"] == 4
    assert steps == [3, 4]  # continued at step 3, did not redo steps 1-2
    assert [h["step"] for h in resumed.log_history if "loss" in h] == [1, 2, 3, 4]  # one history, no repeats
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for name in (k for k in a if "lora_" in k):
        assert torch.allclose(a[name], b[name], atol=1e-6), name  # the same adapter as without the kill


# --------------------------------------------------------------------------- DPO


def test_dpo_first_step_loss_is_ln2_and_training_lowers_it(work, base_model, one_step):
    pairs = work / "pairs.jsonl"
    pairs.write_text(json.dumps({"pair_id": "p0", "item_id": "q0", "spoken_text": "Question 0 alpha.",
                                 "text_prompt": PROMPT, "chosen": "A", "rejected": "B"}) + "\n")
    config = make_config(work, base_model, "dpo-ln2", data=None, dpo={"pairs": str(pairs), "beta": 0.5},
                         training={"max_steps": 3, "learning_rate": 5e-3})
    result = run_dpo(config, progress=False)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert abs(losses[0] - LN2) < 1e-4, losses  # fresh LoRA: policy == reference (adapter disabled)
    assert losses[-1] < LN2 - 0.01, losses
    assert (result.run_dir / "pairs.jsonl").is_file() and (result.adapter_dir / MANIFEST_NAME).is_file()
    # Continuing an SFT adapter: the reference is a frozen copy of it, so the first loss is ln 2 too,
    # and the saved adapter is the trained copy (one adapter, not the reference).
    sft_adapter = one_step[0].adapter_dir
    chained = make_config(work, base_model, "dpo-from-sft", data=None,
                          dpo={"pairs": str(pairs), "beta": 0.5, "init_adapter": str(sft_adapter)},
                          training={"max_steps": 2, "learning_rate": 5e-3})
    result = run_dpo(chained, progress=False)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert abs(losses[0] - LN2) < 1e-4 and losses[-1] < LN2, losses
    assert result.manifest["init_adapter"]["sha256"] == read_adapter(sft_adapter).sha256
    assert read_adapter(result.adapter_dir).sha256 != read_adapter(sft_adapter).sha256
    assert not (result.adapter_dir / "ref").exists()


def mined_run(work: Path, root: Path, answers) -> Path:
    """A run folder of the `tone_ab` task whose answer per (item, voice) is answers(item, voice)."""
    from biasbench.tasks.loader import load_task

    task = load_task(str(work / "mine.yaml"), data_source="local")
    rows = [{"item_id": item.item_id, "voice_id": v["id"], "gender": v["gender"], "ethnicity": v["ethnicity"],
             "condition": "audio", "status": "valid", "answer": answers(item, v), "response_text": answers(item, v),
             "target": item.letters[item.target]} for item in task.items for v in EVAL_POOL["voices"]]
    root.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "responses.parquet")
    fingerprint = task.fingerprint()
    manifest = {"run_id": root.name, "task": {**fingerprint, "path": str(task.path)}, "options": {"limit": "None"},
                "model": {"name": "m"}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_mining_chooses_correct_or_majority_answers_and_adds_anchors(work, tmp_path):
    def answers(item, voice):  # female voices always say B; everyone else is right
        return "B" if voice["gender"] == "female" else item.letters[item.target]

    run = mined_run(work, tmp_path / "run", answers)
    pairs, info = mine_pairs(run)  # auto: a multiple-choice accuracy task -> the correct answer
    dependent = [p for p in pairs if p.reason == "correct"]
    anchors = [p for p in pairs if p.reason == "anchor"]
    assert info["mode"] == "correct" and len(dependent) == 7 and len(anchors) == 7  # 7 alpha items, 7 beta items
    assert all(p.chosen == "A" and p.rejected == "B" and len(p.rejected_voices) == 9 for p in dependent)
    assert all(p.chosen == "B" and p.rejected == "A" for p in anchors)
    assert len(mine_pairs(run, anchor_ratio=0)[0]) == 7

    def probe(item, voice):  # a probe: 2 of 3 ethnicities say A, east_asian voices say B (both genders)
        return "B" if voice["ethnicity"] == "east_asian" else "A"

    run = mined_run(work, tmp_path / "probe", probe)
    pairs, info = mine_pairs(run, mode="majority")
    assert info["mode"] == "majority" and len(pairs) == 14  # every item; no anchors for probes
    assert all(p.chosen == "A" and p.rejected == "B" and p.reason == "majority" for p in pairs)
    assert {v for p in pairs for v in p.rejected_voices} == {v["id"] for v in EVAL_POOL["voices"]
                                                             if v["ethnicity"] == "east_asian"}
    unanimous = mined_run(work, tmp_path / "same", lambda item, voice: "A")
    assert mine_pairs(unanimous, mode="majority")[0] == []  # no voice dependence: nothing to prefer


# --------------------------------------------------------------------------- compare


def fake_run(root: Path, name: str, voices: list[dict], accuracy: dict, seed: int, adapter=None) -> Path:
    """A run folder with a tidy table whose per-voice accuracy depends on gender as given."""
    rng = np.random.default_rng(seed)
    rows = []
    for voice in voices:
        for k in range(40):
            correct = float(rng.random() < accuracy[voice["gender"]])
            rows.append({"item_id": f"i{k}", "voice_id": voice["id"], "gender": voice["gender"],
                         "ethnicity": voice["ethnicity"], "status": "valid", "correct": correct,
                         "answer": "A" if correct else "B", "condition": "audio"})
    run = root / name
    run.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(run / "responses.parquet")
    fingerprint = {"adapter": adapter} if adapter else {}
    (run / "manifest.json").write_text(json.dumps({"run_id": name, "task": {"task": "t"},
                                                   "model": {"name": name, "fingerprint": fingerprint}}))
    return run


def test_compare_finds_a_shrunken_gap_paired_and_unpaired(tmp_path):
    voices = EVAL_POOL["voices"]
    before = fake_run(tmp_path, "before", voices, {"female": 0.3, "male": 0.9}, seed=1)
    after = fake_run(tmp_path, "after", voices, {"female": 0.85, "male": 0.9}, seed=2)
    result = compare_runs(before, after, n_boot=300, n_perm=300)
    assert result["paired"] and result["outcome"] == "correct"
    gender = next(g for g in result["gaps"] if g["grouping"] == "gender")
    assert gender["a"] > 0.4 and gender["b"] < 0.2 and gender["change"] < -0.3
    assert gender["ci_change"][1] < 0 and gender["p_value"] < 0.05
    ethnicity = next(g for g in result["gaps"] if g["grouping"] == "ethnicity")
    assert ethnicity["p_value"] > 0.05  # no ethnicity effect was planted
    assert result["accuracy"]["change"] > 0.2
    assert next(d for d in result["divergence"] if d["grouping"] == "gender")["change"] < 0
    report = to_markdown(result)
    assert "gap in correct" in report and "overall accuracy" in report and "paired by voice" in report
    other = fake_run(tmp_path, "other-voices", TRAIN_POOL["voices"], {"female": 0.85, "male": 0.9}, seed=3)
    unpaired = compare_runs(before, other, n_boot=200, n_perm=200)
    assert not unpaired["paired"]
    assert next(g for g in unpaired["gaps"] if g["grouping"] == "gender")["p_value"] < 0.05


def test_compare_and_finetune_commands(tmp_path):
    from typer.testing import CliRunner

    from biasbench.cli import app

    before = fake_run(tmp_path, "a", EVAL_POOL["voices"], {"female": 0.3, "male": 0.9}, seed=1)
    after = fake_run(tmp_path, "b", EVAL_POOL["voices"], {"female": 0.9, "male": 0.9}, seed=2)
    result = CliRunner().invoke(app, ["compare", str(before), str(after), "--n-boot", "100", "--n-perm", "100",
                                      "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "| gap in correct" in result.output and json.loads((tmp_path / "c.json").read_text())["paired"]
    result = CliRunner().invoke(app, ["finetune", "--help"])
    assert all(name in result.output for name in ("sft", "dpo", "mine-pairs", "compare"))


def test_answer_divergence_metric():
    table = pd.DataFrame({"item_id": ["a", "a", "b", "b"], "voice_id": ["f", "m", "f", "m"],
                          "gender": ["female", "male", "female", "male"], "answer": ["A", "B", "A", "A"],
                          "status": "valid"})
    assert answer_divergence(table, "gender") == pytest.approx(0.5)  # 1 bit on item a, 0 on b
    probs = table.assign(p_A=[0.5, 0.5, 0.9, 0.9], p_B=[0.5, 0.5, 0.1, 0.1])
    assert answer_divergence(probs, "gender", prob_columns={"A": "p_A", "B": "p_B"}) == pytest.approx(0.0)


# --------------------------------------------------------------------------- the planted dependence


def plant_voice_dependence(base: Path, out: Path) -> Path:
    """Make a model whose answer depends on the voice: trained (full language model + projector,
    60 steps) to answer right for male voices and 'B' whatever the item for female ones."""
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(base)
    model.model.audio_tower.requires_grad_(False)
    examples = spoken([{"group_id": i, "spoken": t, "text_prompt": PROMPT, "response": a} for i, t, a in TRAIN_ITEMS])
    examples = [replace(e, response="B") if e.gender == "female" else e for e in examples]
    collate = SFTCollator(SpokenChat(processor), AudioCache())
    rows = SpokenDataset(examples)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    torch.manual_seed(0)
    model.train()
    order = list(CounterfactualSampler(examples, 6, seed=0))
    for step in range(60):
        start = (step * 12) % len(order)
        loss, _ = response_loss(model, collate([rows[i] for i in order[start:start + 12]]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    return out


def held_out_dependence(model: Path, adapter: Path | None = None) -> dict:
    """On held-out items spoken by held-out (evaluation) voices: the mean over items of the JS
    divergence (bits) between the female and the male voices' mean answer distributions
    (option probabilities of A and B from the real scoring backend), and accuracy by gender."""
    examples = spoken([{"group_id": i, "spoken": t, "text_prompt": PROMPT} for i, t, _ in TEST_ITEMS], pool=EVAL_POOL)
    backend = load_backend(resolve_model(str(model)), device="cpu", adapter=str(adapter) if adapter else None)
    cache = AudioCache()
    requests = [Request(e.example_id, PROMPT, audio=cache.get(e.audio_key), choices=["A", "B"]) for e in examples]
    responses = [r for k in range(0, len(requests), 36) for r in backend.score_choices(requests[k:k + 36])]
    target = {i: a for i, _, a in TEST_ITEMS}
    table = pd.DataFrame([{"item_id": e.group_id, "voice_id": e.voice_id, "gender": e.gender,
                           "p_A": math.exp(r.option_logprobs["A"]), "p_B": math.exp(r.option_logprobs["B"]),
                           "correct": float(r.text == target[e.group_id])} for e, r in zip(examples, responses)])
    accuracy = table.groupby("gender")["correct"].mean()
    return {"js_bits": answer_divergence(table, "gender", prob_columns={"A": "p_A", "B": "p_B"}),
            "accuracy_female": float(accuracy["female"]), "accuracy_male": float(accuracy["male"])}


def test_planted_voice_dependence_shrinks_after_sft_and_after_dpo(work, base_model, tmp_path_factory):
    from biasbench.runner import RunOptions, run

    biased = plant_voice_dependence(base_model, tmp_path_factory.mktemp("biased") / "model")
    before = held_out_dependence(biased)
    assert before["js_bits"] > 0.3 and before["accuracy_female"] < before["accuracy_male"] - 0.3, before

    # SFT: the right answers, every training voice, counterfactual batches + JS consistency loss.
    sft = run_sft(make_config(work, biased, "debias-sft", training={"max_steps": 30, "batch_size": 12},
                              counterfactual={"voices_per_instruction": 6, "consistency_weight": 1.0}),
                  progress=False)
    after_sft = held_out_dependence(biased, sft.adapter_dir)

    # DPO: pairs mined from a real evaluation run of the biased model (other items, eval voices),
    # spoken again by the training voices.
    mined = run(RunOptions(task=str(work / "mine.yaml"), model=str(biased), pool=str(work / "eval.yaml"),
                           output_dir=work / "evals", run_id="biased", data_source="local", progress=False))
    pairs, info = mine_pairs(mined.run_dir)
    assert info["mode"] == "correct" and info["n_pairs"] > 0 and info["n_anchor_pairs"] > 0
    assert all(p.chosen == ("A" if "alpha" in p.spoken_text else "B") != p.rejected for p in pairs)
    dependent = [p for p in pairs if p.reason == "correct"]  # the voice-dependent items: female voices said B
    assert dependent and all("alpha" in p.spoken_text and p.rejected == "B" for p in dependent)
    assert {v for p in dependent for v in p.rejected_voices} == {v["id"] for v in EVAL_POOL["voices"]
                                                                 if v["gender"] == "female"}
    dpo = run_dpo(make_config(work, biased, "debias-dpo", data=None, dpo={"run_dir": str(mined.run_dir), "beta": 0.05},
                              training={"max_steps": 40, "learning_rate": 3e-3}), progress=False)
    after_dpo = held_out_dependence(biased, dpo.adapter_dir)

    report = {"metric": "mean over held-out items of JS(female, male answer distributions), bits, held-out voices",
              "before": before, "after_sft": after_sft, "after_dpo": after_dpo,
              "n_dpo_pairs": info["n_pairs"], "n_anchor_pairs": info["n_anchor_pairs"]}
    print("\nplanted voice dependence:", json.dumps(report, indent=1))
    for name in ("after_sft", "after_dpo"):
        assert report[name]["js_bits"] < 0.6 * before["js_bits"], report
        assert report[name]["accuracy_male"] >= 0.9, report  # the fairness was not bought with knowledge
