"""A tiny random-weight F5-TTS (DiT + CFM) and Vocos vocoder on disk, for tests and benchmarks.

`build(root)` writes a model config, a .safetensors checkpoint and a Vocos directory and
returns the BIASBENCH_F5_* variables that point the f5-tts backend at them, so F5-TTS's own
inference code runs offline. The clips are noise shaped by random weights: they exercise
the engine, never a voice. Needs the `cloning` extra (f5-tts, vocos, torchaudio).
"""

from __future__ import annotations

from pathlib import Path

#: The test model; `benchmarks/bench_cloning.py --size small` widens it.
SIZES = {
    "tiny": dict(dim=16, depth=2, heads=2, dim_head=8, text_dim=8),
    "small": dict(dim=256, depth=4, heads=4, dim_head=64, text_dim=128),
}
MEL = dict(target_sample_rate=24000, n_mel_channels=100, hop_length=256, win_length=1024, n_fft=1024,
           mel_spec_type="vocos")


def arch(size: str = "tiny") -> dict:
    """The DiT arguments of a config of `size` (F5TTS_v1_Base's, scaled down)."""
    return dict(**SIZES[size], ff_mult=1, text_mask_padding=True, qk_norm=None, conv_layers=1, pe_attn_head=None,
                attn_backend="torch", attn_mask_enabled=False, checkpoint_activations=False)


def build(root: Path, size: str = "tiny", seed: int = 0) -> dict[str, str]:
    """Write the model, config and vocoder under `root`; return the BIASBENCH_F5_* settings."""
    import torch
    import yaml
    from safetensors.torch import save_file
    from vocos import Vocos

    from f5_tts.infer import utils_infer
    from f5_tts.model import CFM, DiT
    from f5_tts.model.utils import get_tokenizer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = root / f"F5TTS_{size}.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": f"F5TTS_{size}", "tokenizer": "custom", "backbone": "DiT",
                                                 "arch": arch(size), "mel_spec": MEL}}))
    vocab_map, vocab_size = get_tokenizer(str(Path(utils_infer.__file__).parent / "examples" / "vocab.txt"), "custom")
    model = CFM(transformer=DiT(**arch(size), text_num_embeds=vocab_size, mel_dim=MEL["n_mel_channels"]),
                mel_spec_kwargs=dict(MEL), vocab_char_map=vocab_map)
    # DiT starts out as the identity (adaLN-zero gates, a zero output layer), so its output
    # would not depend on attention at all. Random weights there make the transformer shape
    # the clip as a trained one does (and lets a test see one clip of a batch leak into another).
    for param in model.transformer.parameters():
        if not param.any():
            torch.nn.init.normal_(param, std=0.1)
    checkpoint = root / f"model_{size}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    return {"BIASBENCH_F5_MODEL": str(config), "BIASBENCH_F5_CHECKPOINT": str(checkpoint),
            "BIASBENCH_F5_VOCODER": str(_vocoder(root / f"vocos-{size}", Vocos)), "BIASBENCH_F5_DEVICE": "cpu"}


def _vocoder(folder: Path, Vocos) -> Path:
    """A one-layer random Vocos with the real mel front end, as a local vocoder directory."""
    import torch
    import yaml

    folder.mkdir(exist_ok=True)
    config = {
        "feature_extractor": {"class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
                              "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256,
                                            "n_mels": 100, "padding": "center"}},
        "backbone": {"class_path": "vocos.models.VocosBackbone",
                     "init_args": {"input_channels": 100, "dim": 16, "intermediate_dim": 32, "num_layers": 1}},
        "head": {"class_path": "vocos.heads.ISTFTHead",
                 "init_args": {"dim": 16, "n_fft": 1024, "hop_length": 256, "padding": "center"}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(Vocos.from_hparams(str(folder / "config.yaml")).state_dict(), folder / "pytorch_model.bin")
    return folder
