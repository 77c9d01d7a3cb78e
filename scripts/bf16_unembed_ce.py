"""How much would a bf16 unembedding product change the study's CE? The trained tiny GPT-NeoX
in ../shared (transformers, f32) on 2048 tinyshakespeare contexts of 25 tokens: mean
next-token CE with the unembedding in f32 against the same product with its inputs (the
final layer norm's output and W_U) rounded to bf16 and accumulated in f32, as an
`avx512_bf16` kernel would compute it. A measurement for issue 12's precision question;
saerun does not use bf16 products.

  SAERUN_SHARED_DIR=../shared python scripts/bf16_unembed_ce.py   # needs torch, transformers
"""
import os

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, GPTNeoXForCausalLM

shared = os.environ.get("SAERUN_SHARED_DIR", os.path.join(os.path.dirname(__file__), "../../shared"))
path = os.path.join(shared, "data/tiny-pythia")
model = GPTNeoXForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(path)
text = open(os.path.join(shared, "data/tinyshakespeare.txt")).read()[:400_000]
ids = tok(text, return_tensors="pt").input_ids[0]
ctx = 25
batch = ids[: min(len(ids) // ctx, 2048) * ctx].reshape(-1, ctx)
with torch.inference_mode():
    h = model.gpt_neox(batch).last_hidden_state[:, :-1].reshape(-1, model.config.hidden_size)
    w = model.get_output_embeddings().weight
    targets = batch[:, 1:].reshape(-1)
    ce32 = F.cross_entropy(h @ w.T, targets, reduction="none").double()
    ce16 = F.cross_entropy(h.bfloat16().float() @ w.bfloat16().float().T, targets,
                           reduction="none").double()
    diff = ce16 - ce32
print(f"{batch.shape[0]} contexts x {ctx} tokens: mean CE f32 {ce32.mean():.6f}, "
      f"bf16 inputs {ce16.mean():.6f}; mean difference {diff.mean():.2e}, "
      f"mean |difference| per token {diff.abs().mean():.2e}, largest {diff.abs().max():.2e}")
