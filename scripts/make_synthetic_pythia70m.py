"""Write a Pythia-70M-shaped model and a pile-10k-shaped dataset for offline end-to-end runs.

  python3 scripts/make_synthetic_pythia70m.py OUT_DIR [--seed 0] [--shakespeare PATH]

Needs numpy and pyarrow only (no torch). Writes

  OUT_DIR/pythia-70m/   a GPT-NeoX checkpoint in Hugging Face layout:
      config.json        Pythia-70M's config values (d_model 512, 6 layers, 8 heads, d_mlp 2048,
                         vocab 50304, rotary_pct 0.25, rotary_emb_base 10000,
                         max_position_embeddings 2048, parallel residual, untied embed_out, f16)
      model.safetensors  every weight of Pythia-70M by its Hugging Face name and shape
                         (70,426,624 parameters, float16, random: see below), plus the buffers
                         transformers 4.24 saved beside them: attention.bias (bool causal mask
                         [1, 1, 2048, 2048]), attention.masked_bias (scalar) and
                         attention.rotary_emb.inv_freq ([16]); 166 MB in all, 141 MB of it
                         weights. The buffers' dtypes are a guess; saerun never reads them.
      tokenizer.json     copied from the tiny GPT-NeoX in ../shared (the real Pythia tokenizer)
  OUT_DIR/pile-10k/     a dataset in Hugging Face layout, like NeelNanda/pile-10k:
      data/train-00000-of-00001.parquet  10,000 rows, columns `text` (string) and
                         `meta` (struct {pile_set_name}); the text is cut from Tiny Shakespeare
                         (../shared/data/tinyshakespeare.txt): each document starts at a seeded
                         random line and runs whole lines up to a seeded log-normal length
                         (median ~2.5 kB, capped at 64 kB; the Pile's documents are of that
                         order), wrapping around the end of the corpus. ~50 MB of text.

Weights are random (seeded) at a scale chosen so that the forward pass is not degenerate and
the SAEs train to roughly the real model's sparsity: each token embedding is a sum of 8-32 of
8192 random unit "feature" directions with exponential magnitudes (mean 1.5; per-dimension RMS
~0.4); layer-norm weights 1 ± 0.05, biases ± 0.02; QKV and MLP-in std 1/sqrt(512) (attention
logits and GELU inputs of order 1, so attention is not uniform); attention-out and MLP-out std
0.1/sqrt(fan_in) (dense "noise" on the features); embed_out std 2/sqrt(512). With seed 0, SAEs
of resid_l2_sweep trained 2000 steps reached L0 43-223 (4096 latents: 89 at l1 1e-3, 223 at
4e-4), against ~50-160 on the real Pythia-70M at 4096; with i.i.d. Gaussian embeddings they
were far denser (L0 150-670 after 4000 steps), and training time depends on L0. Only the timing
and memory of a run mean anything with these weights; the metrics (CE is ~12.9 nats) do not.

Then, from the repository root:

  saerun run experiments/resid_l2_sweep.toml \
      --set model.source=path:OUT_DIR/pythia-70m --set data.source=path:OUT_DIR/pile-10k
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("SAERUN_SHARED_DIR", os.path.join(HERE, "..", "..", "shared"))

# EleutherAI/pythia-70m config.json (main), key for key.
CONFIG = {
    "architectures": ["GPTNeoXForCausalLM"],
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "gelu",
    "hidden_size": 512,
    "initializer_range": 0.02,
    "intermediate_size": 2048,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048,
    "model_type": "gpt_neox",
    "num_attention_heads": 8,
    "num_hidden_layers": 6,
    "rotary_emb_base": 10000,
    "rotary_pct": 0.25,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.24.0",
    "use_cache": True,
    "use_parallel_residual": True,
    "vocab_size": 50304,
}

N_DOCS = 10_000


# Token embeddings are sparse sums of "feature" directions (below), so that the residual
# stream has the kind of structure an SAE finds (see the module docstring for the L0s).
N_FEATURES = 8192
FEATURES_PER_TOKEN = (8, 32)  # uniform in this range
FEATURE_SCALE = 1.5  # mean magnitude of an active feature (exponential)
# Attention and MLP outputs (what blocks write into the residual stream): std WRITE_SCALE /
# sqrt(fan_in), small beside the embedding, as dense "noise" on top of the sparse features.
WRITE_SCALE = 0.1


def sparse_embedding(rng, v, d):
    """(v, d) float16: each token's row is a sum of 8-32 of N_FEATURES random unit directions
    with exponential magnitudes."""
    feats = rng.standard_normal((N_FEATURES, d), dtype=np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    k = rng.integers(FEATURES_PER_TOKEN[0], FEATURES_PER_TOKEN[1] + 1, size=v)
    emb = np.zeros((v, d), dtype=np.float32)
    for j in range(FEATURES_PER_TOKEN[1]):
        idx = rng.integers(N_FEATURES, size=v)
        mag = rng.exponential(FEATURE_SCALE, size=v).astype(np.float32) * (j < k)
        emb += mag[:, None] * feats[idx]
    return emb.astype(np.float16)


def tensors(rng):
    """(name, numpy array) for every tensor of the checkpoint, in HF names."""
    d, m, v = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["vocab_size"]
    heads, n_pos = CONFIG["num_attention_heads"], CONFIG["max_position_embeddings"]
    rot = int((d // heads) * CONFIG["rotary_pct"])

    def normal(shape, std):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float16)

    def ln(n):
        return (1.0 + normal((n,), 0.05)).astype(np.float16), normal((n,), 0.02)

    out = [("gpt_neox.embed_in.weight", sparse_embedding(rng, v, d))]
    mask = np.tril(np.ones((n_pos, n_pos), dtype=bool)).reshape(1, 1, n_pos, n_pos)
    inv_freq = (1.0 / (CONFIG["rotary_emb_base"] ** (np.arange(0, rot, 2, dtype=np.float32) / rot))).astype(np.float32)
    for layer in range(CONFIG["num_hidden_layers"]):
        p = f"gpt_neox.layers.{layer}"
        w, b = ln(d)
        out += [(f"{p}.input_layernorm.weight", w), (f"{p}.input_layernorm.bias", b)]
        w, b = ln(d)
        out += [(f"{p}.post_attention_layernorm.weight", w), (f"{p}.post_attention_layernorm.bias", b)]
        out += [
            (f"{p}.attention.bias", mask),
            (f"{p}.attention.masked_bias", np.array(-np.inf, dtype=np.float16)),  # -1e9 rounded to f16
            (f"{p}.attention.rotary_emb.inv_freq", inv_freq),
            (f"{p}.attention.query_key_value.weight", normal((3 * d, d), 1.0 / np.sqrt(d))),
            (f"{p}.attention.query_key_value.bias", normal((3 * d,), 0.1)),
            (f"{p}.attention.dense.weight", normal((d, d), WRITE_SCALE / np.sqrt(d))),
            (f"{p}.attention.dense.bias", normal((d,), 0.02)),
            (f"{p}.mlp.dense_h_to_4h.weight", normal((m, d), 1.0 / np.sqrt(d))),
            (f"{p}.mlp.dense_h_to_4h.bias", normal((m,), 0.02)),
            (f"{p}.mlp.dense_4h_to_h.weight", normal((d, m), WRITE_SCALE / np.sqrt(m))),
            (f"{p}.mlp.dense_4h_to_h.bias", normal((d,), 0.02)),
        ]
    w, b = ln(d)
    out += [("gpt_neox.final_layer_norm.weight", w), ("gpt_neox.final_layer_norm.bias", b)]
    out += [("embed_out.weight", normal((v, d), 2.0 / np.sqrt(d)))]
    return out


def write_safetensors(path, named):
    dtypes = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(bool): "BOOL"}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    named = sorted(named, key=lambda t: t[0])
    for name, a in named:
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, a in named:
            f.write(np.ascontiguousarray(a).tobytes())
    os.replace(tmp, path)


def documents(rng, corpus):
    lines = corpus.splitlines(keepends=True)
    n = len(lines)
    docs = []
    for _ in range(N_DOCS):
        target = min(int(rng.lognormal(np.log(2500), 1.2)), 64_000)
        i, parts, size = int(rng.integers(n)), [], 0
        # Whole lines until the target length, skipping blank lines at the start; at least
        # ~300 bytes so every document holds more than the 25 tokens a context takes.
        while size < max(target, 300):
            line = lines[i % n]
            i += 1
            if not parts and not line.strip():
                continue
            parts.append(line)
            size += len(line)
        docs.append("".join(parts))
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shakespeare", default=os.path.join(SHARED, "data", "tinyshakespeare.txt"))
    ap.add_argument("--tokenizer", default=os.path.join(SHARED, "data", "tiny-pythia", "tokenizer.json"))
    args = ap.parse_args()

    model_dir = os.path.join(args.out, "pythia-70m")
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    shutil.copyfile(args.tokenizer, os.path.join(model_dir, "tokenizer.json"))
    rng = np.random.default_rng(args.seed)
    named = tensors(rng)
    n_params = sum(a.size for name, a in named if a.dtype == np.float16 and name.split(".")[-1] != "masked_bias")
    write_safetensors(os.path.join(model_dir, "model.safetensors"), named)
    print(f"{model_dir}: {len(named)} tensors, {n_params:,} parameters")

    data_dir = os.path.join(args.out, "pile-10k", "data")
    os.makedirs(data_dir, exist_ok=True)
    with open(args.shakespeare, encoding="utf-8") as f:
        corpus = f.read()
    docs = documents(np.random.default_rng(args.seed + 1), corpus)
    table = pa.table(
        {
            "text": pa.array(docs, pa.string()),
            "meta": pa.array([{"pile_set_name": "TinyShakespeare"}] * len(docs)),
        }
    )
    path = os.path.join(data_dir, "train-00000-of-00001.parquet")
    pq.write_table(table, path + ".tmp")
    os.replace(path + ".tmp", path)
    total = sum(len(d) for d in docs)
    print(f"{path}: {len(docs)} documents, {total / 1e6:.1f} MB of text (median {int(np.median([len(d) for d in docs]))} bytes)")


if __name__ == "__main__":
    main()
