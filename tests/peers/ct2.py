"""CTranslate2 Whisper `model.bin` -> OpenAI Whisper weights, with numpy only.

    dims, weights = ct2.load(model_dir)

`dims` has the keys of openai-whisper's `ModelDimensions` (n_mels, n_audio_ctx,
n_audio_state, n_audio_head, n_audio_layer, n_vocab, n_text_ctx, n_text_state, n_text_head,
n_text_layer); `weights` maps OpenAI state-dict names (`encoder.blocks.0.attn.query.weight`,
...) to float32 arrays in OpenAI's shapes (Linear (out, in), Conv1d (out, in, kernel)).

`read_variables(model_dir)` is the raw reader: {CT2 variable name: array as stored}.
The format (binary version 6): u32 version, string spec name (`WhisperSpec`), u32 revision,
u32 variable count; per variable: string name, u8 rank, u32 dims, u8 dtype, u32 byte
count, raw little-endian data; then u32 alias count and (alias, target) string pairs.
Strings are u16 length + bytes including a trailing NUL. CT2 fuses the self-attention
QKV and the cross-attention KV projections and stores zero key biases; both are undone
here. Quantized (int8 + `_scale`) models are refused.

`write_mlx(model_dir, out_dir)` writes the same weights in mlx-whisper's layout
(`weights.npz` + `config.json`, as `mlx_whisper.load_models.load_model` reads them).
"""
import json
import os
import re
import struct

import numpy as np

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_variables(model_dir):
    """{CTranslate2 variable name: numpy array (a view of the file's bytes)}."""
    with open(os.path.join(model_dir, "model.bin"), "rb") as f:
        data = f.read()
    off = 0

    def take(fmt):
        nonlocal off
        value = struct.unpack_from("<" + fmt, data, off)[0]
        off += struct.calcsize(fmt)
        return value

    def string():
        nonlocal off
        n = take("H")
        s = data[off : off + n].rstrip(b"\0").decode()
        off += n
        return s

    version = take("I")
    if version != 6:
        raise ValueError(f"{model_dir}/model.bin: binary version {version}, expected 6")
    spec = string()
    if spec != "WhisperSpec":
        raise ValueError(f"{model_dir}/model.bin: spec {spec!r}, expected WhisperSpec")
    take("I")  # revision
    variables = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        dims = [take("I") for _ in range(rank)]
        code = take("B")
        if code not in _DTYPES:
            raise ValueError(f"{name}: unsupported dtype code {code}")
        dtype = np.dtype(_DTYPES[code])
        nbytes = take("I")
        arr = np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize, offset=off)
        off += nbytes
        variables[name] = arr.reshape(dims)
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if off != len(data):
        raise ValueError(f"{model_dir}/model.bin: {len(data) - off} trailing bytes")
    if any(k.endswith("_scale") for k in variables):
        raise ValueError(f"{model_dir}: quantized model (int8 + scales) is not handled")
    return variables


def _count_layers(variables, scope):
    return len({m.group(1) for k in variables if (m := re.match(rf"{scope}/layer_(\d+)/", k))})


def load(model_dir):
    """(dims dict, {OpenAI state-dict name: float32 array})."""
    ct2 = read_variables(model_dir)

    def f32(name):
        return np.ascontiguousarray(ct2[name], dtype=np.float32)

    sd = {}
    for conv in ("conv1", "conv2"):
        for p in ("weight", "bias"):
            sd[f"encoder.{conv}.{p}"] = f32(f"encoder/{conv}/{p}")
    sd["encoder.positional_embedding"] = f32("encoder/position_encodings/encodings")
    sd["decoder.token_embedding.weight"] = f32("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = f32("decoder/position_encodings/encodings")
    for scope, canon in (("encoder", "encoder.ln_post"), ("decoder", "decoder.ln")):
        sd[f"{canon}.weight"] = f32(f"{scope}/layer_norm/gamma")
        sd[f"{canon}.bias"] = f32(f"{scope}/layer_norm/beta")

    def layer(scope, i, cross):
        c, o = f"{scope}/layer_{i}", f"{scope}.blocks.{i}"
        norms = [("self_attention/layer_norm", "attn_ln"), ("ffn/layer_norm", "mlp_ln")]
        linears = [("self_attention/linear_1", "attn.out"), ("ffn/linear_0", "mlp.0"), ("ffn/linear_1", "mlp.2")]
        if cross:
            norms.append(("attention/layer_norm", "cross_attn_ln"))
            linears += [("attention/linear_0", "cross_attn.query"), ("attention/linear_2", "cross_attn.out")]
        for a, b in norms:
            sd[f"{o}.{b}.weight"] = f32(f"{c}/{a}/gamma")
            sd[f"{o}.{b}.bias"] = f32(f"{c}/{a}/beta")
        for a, b in linears:
            sd[f"{o}.{b}.weight"] = f32(f"{c}/{a}/weight")
            sd[f"{o}.{b}.bias"] = f32(f"{c}/{a}/bias")
        fused = [("self_attention/linear_0", "attn", ["query", "key", "value"])]
        if cross:
            fused.append(("attention/linear_1", "cross_attn", ["key", "value"]))
        for a, attn, names in fused:
            weights = np.split(f32(f"{c}/{a}/weight"), len(names), axis=0)
            biases = np.split(f32(f"{c}/{a}/bias"), len(names), axis=0)
            for n, w, b in zip(names, weights, biases):
                sd[f"{o}.{attn}.{n}.weight"] = np.ascontiguousarray(w)
                if n == "key":  # Whisper's key projections have no bias; CT2 stores zeros
                    if float(np.abs(b).max()) != 0.0:
                        raise ValueError(f"{c}/{a}: non-zero key bias")
                else:
                    sd[f"{o}.{attn}.{n}.bias"] = np.ascontiguousarray(b)

    n_enc, n_dec = _count_layers(ct2, "encoder"), _count_layers(ct2, "decoder")
    for i in range(n_enc):
        layer("encoder", i, False)
    for i in range(n_dec):
        layer("decoder", i, True)

    state = sd["encoder.conv1.weight"].shape[0]
    dims = {
        "n_mels": sd["encoder.conv1.weight"].shape[1],
        "n_audio_ctx": sd["encoder.positional_embedding"].shape[0],
        "n_audio_state": state,
        "n_audio_head": int(ct2["encoder/num_heads"]),
        "n_audio_layer": n_enc,
        "n_vocab": sd["decoder.token_embedding.weight"].shape[0],
        "n_text_ctx": sd["decoder.positional_embedding"].shape[0],
        "n_text_state": sd["decoder.token_embedding.weight"].shape[1],
        "n_text_head": int(ct2["decoder/num_heads"]),
        "n_text_layer": n_dec,
    }
    return dims, sd


def alignment_heads(model_dir):
    """[(decoder layer, head)] from the CT2 directory's config.json ([] when absent)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [tuple(h) for h in json.load(f).get("alignment_heads", [])]


def to_mlx(weights):
    """OpenAI names/shapes -> mlx-whisper's (mlx_whisper/whisper.py): MLX's Conv1d weight is
    (out, kernel, in); the MLP's `mlp.0`/`mlp.2` are `mlp1`/`mlp2`; the encoder's sinusoidal
    table is computed by mlx-whisper itself (`_positional_embedding`), not loaded."""
    out = {}
    for name, w in weights.items():
        if name == "encoder.positional_embedding":
            continue
        if name in ("encoder.conv1.weight", "encoder.conv2.weight"):
            w = np.ascontiguousarray(w.transpose(0, 2, 1))
        name = name.replace(".mlp.0.", ".mlp1.").replace(".mlp.2.", ".mlp2.")
        out[name] = w
    return out


def write_mlx(model_dir, out_dir, dtype=np.float32):
    """Writes `out_dir/weights.npz` and `out_dir/config.json` for mlx-whisper; returns out_dir."""
    dims, weights = load(model_dir)
    os.makedirs(out_dir, exist_ok=True)
    mlx = {k: v.astype(dtype) for k, v in to_mlx(weights).items()}
    tmp = os.path.join(out_dir, "weights.tmp.npz")
    np.savez(tmp, **mlx)
    os.replace(tmp, os.path.join(out_dir, "weights.npz"))
    config = dict(dims, model_type="whisper")
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
        f.write("\n")
    return out_dir
