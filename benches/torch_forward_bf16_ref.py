"""PyTorch reference for `cargo bench --bench forward -- --bf16`: `../shared/bench/torch_ref.py
--only lm` (same model shape, batch, timing and JSON keys) with the model in bfloat16
(`model.to(torch.bfloat16)`: weights and activations bf16, oneDNN's bf16 kernels on the CPU),
as saerun's `model.dtype = "bf16"`. Needs `pip install torch transformers`.

  python benches/torch_forward_bf16_ref.py [--lm-batch 64 --lm-ctx 25 --lm-layer 2 --repeats 10]
"""
import argparse
import json

import torch

from torch_common import pythia70m, timeit

ap = argparse.ArgumentParser()
ap.add_argument("--lm-batch", type=int, default=64)
ap.add_argument("--lm-ctx", type=int, default=25)
ap.add_argument("--lm-layer", type=int, default=2, help="stop after this block for the harvest case")
ap.add_argument("--repeats", type=int, default=10)
a = ap.parse_args()
torch.manual_seed(0)
out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": "bfloat16"}

model = pythia70m(torch.bfloat16)
ids = torch.randint(0, 50277, (a.lm_batch, a.lm_ctx))
n = max(3, a.repeats // 2)
with torch.inference_mode():
    out["lm_full_forward_tokens_per_s"] = ids.numel() / timeit(lambda: model(ids), n, 2)
    model.gpt_neox.layers = model.gpt_neox.layers[: a.lm_layer + 1]
    out[f"lm_to_block{a.lm_layer}_tokens_per_s"] = ids.numel() / timeit(lambda: model.gpt_neox(ids), n, 2)
print(json.dumps(out, indent=1))
