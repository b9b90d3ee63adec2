"""Tiny random-weight MaskGCT models on disk (Amphion's), for tests and benchmarks.

`build(root, amphion_dir)` writes a shrunk copy of Amphion's config/maskgct.json, the six
checkpoints in the hub repo's layout (semantic and acoustic codecs, T2S, both S2A models),
a tiny w2v-bert semantic model and its feature statistics, all built with Amphion's own
builders, and returns the BIASBENCH_* variables that point the maskgct backend at them, so
Amphion's MaskGCT code runs offline on a CPU. The clips are noise shaped by random weights:
they exercise the engine, never a voice.

Needs an Amphion checkout with its MaskGCT requirements (see biasbench.tts.maskgct). The
checkout is never written to: Amphion is run from `root/Amphion`, a mirror of it by
symlinks plus two data files its G2P opens at import when the checkout lacks them (they are
git-LFS sized). Building imports Amphion from that mirror into this process, so a process
that imported Amphion from elsewhere cannot build (biasbench.tts.maskgct refuses two roots).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from biasbench.formats import dumps

H = 16  # every hidden size
ESTIMATOR_STD = 0.3  # of the T2S and S2A estimators' weights (see build)

#: A one-node ONNX graph (Identity): stands in for Amphion's Chinese polyphone model, which
#: its g2p loads at import but English never runs.
_STUB_ONNX = bytes.fromhex(
    "08083a3a0a100a017812017922084964656e746974791204737475625a0f0a0178120a0a08080112040a020801"
    "620f0a0179120a0a08080112040a02080142040a00100d")
_G2P_SOURCES = "models/tts/maskgct/g2p/sources"
#: Data files Amphion's g2p opens at import, written to the mirror where the checkout lacks them.
IMPORT_DATA = {f"{_G2P_SOURCES}/chinese_lexicon.txt": b"",
               f"{_G2P_SOURCES}/g2p_chinese_model/poly_bert_model.onnx": _STUB_ONNX}


def overlay(source: Path, target: Path, extra: dict[str, bytes]) -> Path:
    """`target` mirrors `source` by symlinks, plus `extra` files where `source` lacks them."""
    def mirror(src: Path, dst: Path, wanted: dict[tuple[str, ...], bytes]):
        dst.mkdir(parents=True, exist_ok=True)
        heads = {parts[0] for parts in wanted}
        for child in src.iterdir():
            if child.name not in heads:
                (dst / child.name).symlink_to(child, target_is_directory=child.is_dir())
        for head in heads:
            below = {parts[1:]: data for parts, data in wanted.items() if parts[0] == head and len(parts) > 1}
            if below:
                mirror(src / head, dst / head, below)
            elif not (src / head).exists():
                (dst / head).write_bytes(wanted[(head,)])
            else:
                (dst / head).symlink_to(src / head)

    missing = {tuple(rel.split("/")): data for rel, data in extra.items() if not (source / rel).exists()}
    mirror(source, target, missing)
    return target


def tiny_config(source: Path) -> dict:
    """Amphion's config/maskgct.json with every size shrunk (the 12 codec layers, 50 Hz
    frames and 24 kHz codec are kept: the pipeline relies on them). The codebooks keep 128
    and 64 tokens: sampling keeps the top 2% (top_k 0.98), so with fewer than 50 only one
    token survives and the seed would not matter."""
    config = json.loads(source.read_text(encoding="utf-8"))
    model = config["model"]
    model["t2s_model"].update(hidden_size=H, num_layers=1, num_heads=2, cond_codebook_size=128, cond_dim=H)
    for part in ("s2a_1layer", "s2a_full"):
        model["s2a_model"][part].update(hidden_size=H, num_layers=1, num_heads=2, codebook_size=64,
                                        cond_codebook_size=128, cond_dim=H)
    model["semantic_codec"].update(codebook_size=128, hidden_size=H, codebook_dim=4, vocos_dim=H,
                                   vocos_intermediate_dim=32, vocos_num_layers=1)
    model["acoustic_codec"]["encoder"].update(d_model=2, out_channels=H)
    # The decoder reads `in_channels` (the shipped config's `in_channel` is ignored: 256).
    model["acoustic_codec"]["decoder"].update(in_channel=H, in_channels=H, upsample_initial_channel=H,
                                              codebook_size=64, codebook_dim=4, vocos_dim=H,
                                              vocos_intermediate_dim=32, vocos_num_layers=1)
    return config


def build(root: Path, amphion_dir: str | Path, seed: int = 0) -> dict[str, str]:
    """Write the tiny models under `root`; return the BIASBENCH_* settings of the maskgct backend.

    Raises BiasbenchError when Amphion cannot be imported from `amphion_dir`."""
    from biasbench.tts import maskgct

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    mirror = root / "Amphion"
    if not mirror.exists():
        overlay(Path(amphion_dir).resolve(), mirror, IMPORT_DATA)
    modules = maskgct._import_amphion(maskgct.Settings(amphion_dir=str(mirror)))
    torch, mu, load_config = modules["torch"], modules["maskgct_utils"], modules["load_config"]
    from safetensors.torch import save_model
    from transformers import (
        SeamlessM4TFeatureExtractor,
        Wav2Vec2BertConfig,
        Wav2Vec2BertModel,
    )

    torch.manual_seed(seed)
    config_path = root / "maskgct-tiny.json"
    config_path.write_text(dumps(tiny_config(mirror / maskgct.DEFAULT_CONFIG)))
    cfg = load_config(str(config_path)).model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Amphion's codecs use weight_norm
        codec_encoder, codec_decoder = mu.build_acoustic_codec(cfg.acoustic_codec, "cpu")
        built = {"semantic_codec": mu.build_semantic_codec(cfg.semantic_codec, "cpu"),
                 "codec_encoder": codec_encoder, "codec_decoder": codec_decoder,
                 "t2s_model": mu.build_t2s_model(cfg.t2s_model, "cpu"),
                 "s2a_1layer": mu.build_s2a_model(cfg.s2a_model.s2a_1layer, "cpu"),
                 "s2a_full": mu.build_s2a_model(cfg.s2a_model.s2a_full, "cpu")}
    # Amphion initialises with std 0.02, which leaves the estimators' attention too weak to
    # change a token: a clip would then not notice another clip's padding leaking into it.
    for name in ("t2s_model", "s2a_1layer", "s2a_full"):
        for param in built[name].diff_estimator.parameters():
            if param.dim() > 1:
                torch.nn.init.normal_(param, std=ESTIMATOR_STD)
    checkpoints = root / "MaskGCT"
    for name, module in built.items():
        maskgct._contiguous_buffers(module)
        target = checkpoints / maskgct.CHECKPOINT_FILES[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        save_model(module, str(target))
    # w2v-bert-2.0's shape, shrunk: 160 = 80 mel bins x stride 2 of SeamlessM4TFeatureExtractor;
    # MaskGCT reads hidden layer 17, so 17 layers.
    semantic = root / "w2v-bert-tiny"
    Wav2Vec2BertModel(Wav2Vec2BertConfig(
        hidden_size=H, num_hidden_layers=maskgct.SEMANTIC_LAYER, num_attention_heads=2, intermediate_size=32,
        feature_projection_input_dim=160, conv_depthwise_kernel_size=3, output_hidden_size=H,
    )).save_pretrained(semantic)
    SeamlessM4TFeatureExtractor().save_pretrained(semantic)
    stats = root / "wav2vec2bert_stats.pt"
    torch.save({"mean": torch.randn(H) * 0.1, "var": torch.rand(H) + 0.5}, stats)
    return {"BIASBENCH_AMPHION_DIR": str(mirror), "BIASBENCH_MASKGCT_CONFIG": str(config_path),
            "BIASBENCH_MASKGCT_CHECKPOINTS": str(checkpoints), "BIASBENCH_MASKGCT_SEMANTIC_MODEL": str(semantic),
            "BIASBENCH_MASKGCT_SEMANTIC_STATS": str(stats), "BIASBENCH_MASKGCT_DEVICE": "cpu"}
