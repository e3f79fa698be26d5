"""CTranslate2 Whisper directory -> Hugging Face transformers' Whisper layout, numpy only.

    python hf.py CT2_DIR OUT_DIR [--dtype float16|float32]

Writes what `WhisperForConditionalGeneration.from_pretrained` and
`WhisperProcessor.from_pretrained` read: `model.safetensors` (written here without the
safetensors package: an 8-byte header length, a JSON header, raw little-endian data),
`config.json`, `generation_config.json`, `preprocessor_config.json`, `tokenizer.json`
(copied) and `tokenizer_config.json`. The weights come from ct2.load (OpenAI state-dict
names) and are renamed to transformers' (`model.encoder.layers.0.self_attn.q_proj.weight`,
...); the output projection is tied to the token embedding, as in every Whisper
checkpoint. Special-token ids are read from the tokenizer by name, and the suppressed
tokens from the CTranslate2 config, so multilingual and English-only models both work.
"""
import argparse
import json
import os
import re
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ct2  # noqa: E402

_LAYER = {
    "attn.query": "self_attn.q_proj",
    "attn.key": "self_attn.k_proj",
    "attn.value": "self_attn.v_proj",
    "attn.out": "self_attn.out_proj",
    "attn_ln": "self_attn_layer_norm",
    "cross_attn.query": "encoder_attn.q_proj",
    "cross_attn.key": "encoder_attn.k_proj",
    "cross_attn.value": "encoder_attn.v_proj",
    "cross_attn.out": "encoder_attn.out_proj",
    "cross_attn_ln": "encoder_attn_layer_norm",
    "mlp.0": "fc1",
    "mlp.2": "fc2",
    "mlp_ln": "final_layer_norm",
}
_TOP = {
    "encoder.conv1": "model.encoder.conv1",
    "encoder.conv2": "model.encoder.conv2",
    "encoder.ln_post": "model.encoder.layer_norm",
    "decoder.ln": "model.decoder.layer_norm",
    "decoder.token_embedding": "model.decoder.embed_tokens",
}


def hf_name(name):
    """OpenAI state-dict name -> transformers' name."""
    if name == "encoder.positional_embedding":
        return "model.encoder.embed_positions.weight"
    if name == "decoder.positional_embedding":
        return "model.decoder.embed_positions.weight"
    m = re.fullmatch(r"(encoder|decoder)\.blocks\.(\d+)\.(.+)\.(weight|bias)", name)
    if m:
        side, i, part, kind = m.groups()
        return f"model.{side}.layers.{i}.{_LAYER[part]}.{kind}"
    module, kind = name.rsplit(".", 1)
    return f"{_TOP[module]}.{kind}"


def write_safetensors(path, tensors):
    """tensors: {name: numpy array}; float16/float32 only."""
    codes = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32"}
    header, offset = {}, 0
    names = sorted(tensors)
    for name in names:
        a = tensors[name]
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in names:
            f.write(np.ascontiguousarray(tensors[name]).astype(tensors[name].dtype.newbyteorder("<")).tobytes())
    os.replace(tmp, path)


def special_ids(tokenizer_json):
    with open(tokenizer_json, encoding="utf-8") as f:
        tok = json.load(f)
    ids = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    return ids


def convert(ct2_dir, out_dir, dtype=np.float16):
    dims, weights = ct2.load(ct2_dir)
    os.makedirs(out_dir, exist_ok=True)
    tensors = {hf_name(k): v.astype(dtype) for k, v in weights.items()}
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)

    tokenizer_json = os.path.join(ct2_dir, "tokenizer.json")
    shutil.copyfile(tokenizer_json, os.path.join(out_dir, "tokenizer.json"))
    ids = special_ids(tokenizer_json)
    eot = ids["<|endoftext|>"]
    sot = ids["<|startoftranscript|>"]
    multilingual = dims["n_vocab"] >= 51865
    with open(os.path.join(ct2_dir, "config.json"), encoding="utf-8") as f:
        ct2_config = json.load(f)
    suppress = [int(t) for t in ct2_config.get("suppress_ids", [])]
    suppress_begin = [int(t) for t in ct2_config.get("suppress_ids_begin", [220, eot])]
    langs = {c: i for c, i in ids.items() if re.fullmatch(r"<\|[a-z]{2,3}(_[a-z]+)?\|>", c) and c not in ("<|nocaptions|>",)}
    lang_ids = set(ct2_config.get("lang_ids", []))
    if lang_ids:
        langs = {c: i for c, i in langs.items() if i in lang_ids}
    d = dims["n_audio_state"]
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": dims["n_vocab"],
        "num_mel_bins": dims["n_mels"],
        "d_model": d,
        "encoder_layers": dims["n_audio_layer"],
        "encoder_attention_heads": dims["n_audio_head"],
        "decoder_layers": dims["n_text_layer"],
        "decoder_attention_heads": dims["n_text_head"],
        "encoder_ffn_dim": 4 * d,
        "decoder_ffn_dim": 4 * d,
        "max_source_positions": dims["n_audio_ctx"],
        "max_target_positions": dims["n_text_ctx"],
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "pad_token_id": eot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "decoder_start_token_id": sot,
        "begin_suppress_tokens": suppress_begin,
        "suppress_tokens": suppress,
        "median_filter_width": 7,
        "torch_dtype": "float16" if dtype == np.float16 else "float32",
    }
    generation = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": dims["n_text_ctx"],
        "begin_suppress_tokens": suppress_begin,
        "suppress_tokens": suppress,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
        "is_multilingual": multilingual,
        "alignment_heads": [list(h) for h in ct2.alignment_heads(ct2_dir)],
    }
    if multilingual:
        generation["lang_to_id"] = langs
        generation["task_to_id"] = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    preprocessor = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "WhisperProcessor",
        "feature_size": dims["n_mels"],
        "sampling_rate": 16000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }
    tokenizer_config = {
        "tokenizer_class": "WhisperTokenizer",
        "processor_class": "WhisperProcessor",
        "model_max_length": 1024,
        "errors": "replace",
        "add_prefix_space": False,
        "unk_token": "<|endoftext|>",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    for name, value in [
        ("config.json", config),
        ("generation_config.json", generation),
        ("preprocessor_config.json", preprocessor),
        ("tokenizer_config.json", tokenizer_config),
    ]:
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1)
            f.write("\n")
    return out_dir


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ct2_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    args = ap.parse_args()
    convert(args.ct2_dir, args.out_dir, np.float16 if args.dtype == "float16" else np.float32)
    print(f"wrote {args.out_dir}")


if __name__ == "__main__":
    main()
