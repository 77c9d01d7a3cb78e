"""Reference for `model.dtype = "bf16"`: the trained tiny GPT-NeoX in ../shared run by
transformers with its weights and activations in bfloat16 (`torch_dtype=torch.bfloat16`, CPU),
scored on the held-out windows that ../shared/data/tiny-pythia/expected.json defines (the last
len/20 tokens of tinyshakespeare, 64-token windows, mean next-token CE over positions 1..63),
and the same in float32 for scale. Writes tests/fixtures/tiny_pythia/bf16_reference.json,
read by tests/model_tiny_pythia.rs.

  SAERUN_SHARED_DIR=../shared python scripts/tiny_pythia_bf16_reference.py   # torch, transformers
"""
import json
import os

import torch
import torch.nn.functional as F
import transformers
from transformers import AutoTokenizer, GPTNeoXForCausalLM

here = os.path.dirname(os.path.abspath(__file__))
shared = os.environ.get("SAERUN_SHARED_DIR", os.path.join(here, "../../shared"))
path = os.path.join(shared, "data/tiny-pythia")
tok = AutoTokenizer.from_pretrained(path)
ids = tok(open(os.path.join(shared, "data/tinyshakespeare.txt")).read(), return_tensors="pt").input_ids[0]
held = ids[len(ids) - len(ids) // 20:]
window = 64
windows = held[: len(held) // window * window].reshape(-1, window)

out = {
    "definition": "expected.json heldout windows; mean next-token CE (nats) over positions 1..63",
    "windows": windows.shape[0],
    "torch": torch.__version__,
    "transformers": transformers.__version__,
}
for name, dtype in [("float32", torch.float32), ("bfloat16", torch.bfloat16)]:
    model = GPTNeoXForCausalLM.from_pretrained(path, torch_dtype=dtype).eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in windows.split(16):
            logits = model(batch).logits.float()
            ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                 reduction="sum")
            total += ce.item()
            count += batch[:, 1:].numel()
    out[f"mean_ce_nats_{name}"] = total / count
dest = os.path.join(here, "../tests/fixtures/tiny_pythia/bf16_reference.json")
with open(dest, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(json.dumps(out, indent=1))
