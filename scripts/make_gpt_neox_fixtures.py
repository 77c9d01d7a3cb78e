"""Regenerate the GPT-NeoX reference fixtures in tests/fixtures/gpt_neox/.

Builds two tiny random GPT-NeoX models with Hugging Face transformers, saves their weights
(HF layout) and the outputs transformers computes in float32 for fixed token ids, so the Rust
forward pass (src/model) can be checked against the reference implementation without Python.

  parallel/   use_parallel_residual=True,  rotary_pct 0.25, f32 weights, Pythia-hub dialect
              (rotary_pct, rotary_emb_base, torch_dtype; unembedding named embed_out.weight)
  sequential/ use_parallel_residual=False, rotary_pct 1.0,  bf16 weights, recent-transformers dialect
              (rope_parameters.partial_rotary_factor / rope_theta, dtype; lm_head.weight)

Each directory holds config.json, model.safetensors and expected.safetensors with
  input_ids (int64, batch x seq), logits (f32), hidden_states.N (transformers' hidden_states[N]),
  and per-layer module outputs named after the TransformerLens hooks they correspond to
  (unprocessed weights): blocks.L.attn.hook_z (batch, seq, d_model = heads*head_dim, i.e. the input
  of attention.dense), blocks.L.hook_attn_out, blocks.L.mlp.hook_post, blocks.L.hook_mlp_out,
  ln_final.hook_normalized.

Run from the repository root:  python3 scripts/make_gpt_neox_fixtures.py
Needs torch, transformers (tested with torch 2.x, transformers 5.x) and safetensors.
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gpt_neox")
VOCAB, D, HEADS, LAYERS, D_MLP, BATCH, SEQ = 512, 64, 4, 2, 256, 2, 12


def randomize(model, gen):
    # HF's init (std 0.02, LN weight 1, bias 0) gives near-uniform attention and tiny MLP outputs,
    # which would let a broken rotary or head split slip through; use O(1) activations instead.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[1]
                scale = 1.0 if "embed_in" in name else 1.5 / fan_in ** 0.5
                p.copy_(scale * torch.randn(p.shape, generator=gen))


def build(name, parallel, rotary_pct, dtype, dialect, seed):
    gen = torch.Generator().manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=D_MLP, rotary_pct=rotary_pct, rotary_emb_base=10000 if parallel else 500,
                        max_position_embeddings=64, use_parallel_residual=parallel, tie_word_embeddings=False,
                        layer_norm_eps=1e-5, hidden_act="gelu", attn_implementation="eager")
    model = GPTNeoXForCausalLM(cfg).eval()
    randomize(model, gen)
    # Round the weights to the storage dtype first, so the f32 reference uses exactly what is saved.
    # Only the parameters: `model.to(bf16)` would also round the rotary inv_freq buffer, which
    # transformers recomputes in f32 when loading a bf16 checkpoint.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())

    out_dir = os.path.join(OUT, name)
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    if dialect == "pythia":
        # Pythia hub checkpoints (transformers 4.x) call the unembedding embed_out;
        # transformers 5 names it lm_head. Keep one of each so both are tested.
        state["embed_out.weight"] = state.pop("lm_head.weight")
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})

    cfg_dict = json.loads(cfg.to_json_string(use_diff=False))
    for k in ["attn_implementation", "_attn_implementation_autoset", "output_attentions", "return_dict"]:
        cfg_dict.pop(k, None)
    dtype_name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    if dialect == "pythia":
        rope = cfg_dict.pop("rope_parameters")
        cfg_dict.pop("dtype", None)
        cfg_dict["rotary_pct"] = rope["partial_rotary_factor"]
        cfg_dict["rotary_emb_base"] = rope["rope_theta"]
        cfg_dict["torch_dtype"] = dtype_name
    else:
        cfg_dict.pop("torch_dtype", None)
        cfg_dict["dtype"] = dtype_name
    cfg_dict["architectures"] = ["GPTNeoXForCausalLM"]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=2, sort_keys=True)

    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    captured = {}

    def save_as(key, use_input=False):
        def hook(_module, inputs, output):
            captured[key] = (inputs[0] if use_input else output).detach().float().contiguous()
        return hook

    for l, layer in enumerate(model.gpt_neox.layers):
        layer.attention.dense.register_forward_hook(save_as(f"blocks.{l}.attn.hook_z", use_input=True))
        layer.attention.dense.register_forward_hook(save_as(f"blocks.{l}.hook_attn_out"))
        layer.mlp.act.register_forward_hook(save_as(f"blocks.{l}.mlp.hook_post"))
        layer.mlp.register_forward_hook(save_as(f"blocks.{l}.hook_mlp_out"))
    model.gpt_neox.final_layer_norm.register_forward_hook(save_as("ln_final.hook_normalized"))

    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    expected = {"input_ids": ids.contiguous(), "logits": out.logits.float().contiguous()}
    for i, h in enumerate(out.hidden_states):
        expected[f"hidden_states.{i}"] = h.float().clone()
    expected.update(captured)
    save_file(expected, os.path.join(out_dir, "expected.safetensors"),
              metadata={"torch": torch.__version__, "transformers": __import__("transformers").__version__})
    print(name, {k: tuple(v.shape) for k, v in expected.items()})


if __name__ == "__main__":
    torch.manual_seed(0)
    build("parallel", parallel=True, rotary_pct=0.25, dtype=torch.float32, dialect="pythia", seed=1)
    build("sequential", parallel=False, rotary_pct=1.0, dtype=torch.bfloat16, dialect="transformers", seed=2)
