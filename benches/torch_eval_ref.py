"""PyTorch reference for `cargo bench --bench eval`: the evaluation passes of an SAE study,
done the usual way in PyTorch (as SAELens' evals and TransformerLens' run_with_hooks do): a
hooked full forward of transformers' GPTNeoXForCausalLM from the tokens, full logits, then
cross-entropy.

  - spliced: the activation at `gpt_neox.layers[L]`'s output (TransformerLens'
    blocks.L.hook_resid_post) replaced by a ReLU SAE's reconstruction (d -> m -> d), its
    encoder bias set so that about --l0 latents fire per token, as in a trained SAE (the
    dense products here cost the same whatever the sparsity);
  - baselines: clean, zero-ablated and mean-ablated (three passes).

Pythia-70M shape with random weights (as ../shared/bench/torch_ref.py), batch x ctx tokens.
Prints one JSON object of tokens/s. Needs `pip install torch transformers`.

With `--dtype bfloat16` the model and the SAE run in bfloat16 (`model.to(torch.bfloat16)`).

  python benches/torch_eval_ref.py [--batch 64 --ctx 25 --layer 2 --m 4096 --l0 64 --repeats 10
                                    --dtype float32|bfloat16]
"""
import argparse
import json

import torch
import torch.nn.functional as F

from torch_common import pythia70m, timeit

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--ctx", type=int, default=25)
ap.add_argument("--layer", type=int, default=2)
ap.add_argument("--m", type=int, default=4096, help="SAE latents")
ap.add_argument("--l0", type=int, default=64, help="SAE latents active per token")
ap.add_argument("--repeats", type=int, default=10)
ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
a = ap.parse_args()
torch.manual_seed(0)

dtype = getattr(torch, a.dtype)
model = pythia70m(dtype)
ids = torch.randint(0, 50277, (a.batch, a.ctx))
d = model.config.hidden_size
W_enc = (torch.randn(d, a.m) * 0.02).to(dtype)
b_enc = torch.zeros(a.m, dtype=dtype)
W_dec = torch.randn(a.m, d)
W_dec = (W_dec / W_dec.norm(dim=1, keepdim=True)).to(dtype)
b_dec = torch.zeros(d, dtype=dtype)


def sae(h):
    return torch.relu((h - b_dec) @ W_enc + b_enc) @ W_dec + b_dec


replacement = {"f": None}


def hook(module, inputs, output):
    f = replacement["f"]
    if f is None:
        return None
    if isinstance(output, tuple):
        return (f(output[0]),) + tuple(output[1:])
    return f(output)


model.gpt_neox.layers[a.layer].register_forward_hook(hook)


def ce_with(f):
    replacement["f"] = f
    logits = model(ids).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


with torch.inference_mode():
    captured = {}
    ce_with(lambda h: captured.setdefault("h", h))
    h = captured["h"].reshape(-1, d)
    mean = h.mean(0)
    pre = ((h - b_dec) @ W_enc).flatten().float()
    b_enc.fill_(-pre.kthvalue(pre.numel() - pre.numel() * a.l0 // a.m).values.item())
    l0 = ((h - b_dec) @ W_enc + b_enc > 0).float().sum(1).mean().item()
    spliced = timeit(lambda: ce_with(sae), a.repeats, 2)
    baselines = timeit(lambda: (ce_with(None), ce_with(torch.zeros_like),
                                ce_with(lambda h: mean.expand_as(h))), a.repeats, 2)
n = ids.numel()
print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__, "l0": l0,
                  "spliced_tokens_per_s": n / spliced, "baselines_tokens_per_s": n / baselines}))
