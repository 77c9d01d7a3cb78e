#!/usr/bin/env python3
"""Check saerun's SAELens interchange against the real library (sae-lens 6.54.12).

Two modes:

  fixtures [OUT]   Write small SAELens SAEs with SAELens itself (`SAE.save_model`) and
                   their encode/decode outputs for fixed inputs into OUT (default
                   tests/fixtures/saelens/): what tests/saelens.rs compares saerun's
                   import against (|diff| <= 1e-5).
  check DIR        Load every SAE folder in DIR (a `saerun export --format saelens` output)
                   with `SAE.load_from_disk` and compare its encode/decode with the outputs
                   the exported weights must give (computed here with numpy from the
                   safetensors file, saerun's equations). Exit 1 on any mismatch.

Setup (the version the fixtures were made with; torch comes with it):

  python3 -m venv .venv-saelens && .venv-saelens/bin/pip install sae-lens==6.54.12
  .venv-saelens/bin/python scripts/saelens_interchange.py fixtures
"""

import json
import sys
from pathlib import Path

import numpy as np
import sae_lens
import torch
from safetensors.numpy import load_file, save_file

SAE_LENS_VERSION = "6.54.12"
TOL = 1e-5
# tiny-pythia's d_model and the hook its sweep reads, so the fixtures also import into
# experiments/tiny_pythia_sweep.toml (tests/saelens.rs does, with ../shared).
D_IN, D_SAE, K, N = 128, 64, 8, 24
HOOK = "blocks.2.hook_resid_post"
TL_PROCESSING = {
    "fold_ln": True,
    "center_writing_weights": True,
    "center_unembed": True,
    "fold_value_biases": True,
}


def make_fixtures(out: Path) -> None:
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    x = torch.randn(N, D_IN) * 2.0 + 0.5
    variants = [
        ("standard", StandardSAE, StandardSAEConfig, {}),
        ("standard_no_b_dec_in", StandardSAE, StandardSAEConfig, {"apply_b_dec_to_input": False}),
        ("topk", TopKSAE, TopKSAEConfig, {"k": K}),
        ("topk_rescaled", TopKSAE, TopKSAEConfig, {"k": K, "rescale_acts_by_decoder_norm": True}),
    ]
    for name, sae_cls, cfg_cls, extra in variants:
        cfg = cfg_cls(d_in=D_IN, d_sae=D_SAE, dtype="float32", device="cpu", **extra)
        cfg.metadata.hook_name = HOOK
        cfg.metadata.model_name = "tiny-pythia"
        cfg.metadata.context_size = 25
        cfg.metadata.prepend_bos = False
        cfg.metadata.model_from_pretrained_kwargs = dict(TL_PROCESSING)
        sae = sae_cls(cfg)
        with torch.no_grad():
            # Random weights on every tensor (SAELens initialises biases to zero), decoder
            # rows of uneven norm, so every term of encode/decode is exercised.
            sae.W_enc.copy_(torch.randn(D_IN, D_SAE) * 0.15)
            sae.b_enc.copy_(torch.randn(D_SAE) * 0.5)
            sae.W_dec.copy_(torch.randn(D_SAE, D_IN) * 0.1)
            sae.b_dec.copy_(torch.randn(D_IN) * 0.3)
            acts = sae.encode(x)
            recon = sae.decode(acts)
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        sae.save_model(str(d))
        save_file(
            {"x": x.numpy(), "feature_acts": acts.numpy(), "sae_out": recon.numpy()},
            str(d / "io.safetensors"),
        )
        active = (acts > 0).sum(-1).float().mean().item()
        print(f"wrote {d} ({sae.cfg.architecture()}, mean active {active:.1f})")
    (out / "VERSION").write_text(f"sae-lens {sae_lens.__version__}\ntorch {torch.__version__}\n")


def expected(w: dict, cfg: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """saerun's SAE: f = act((x - b_dec) W_enc + b_enc), x_hat = f W_dec + b_dec."""
    x64 = x.astype(np.float64)
    pre = (x64 - w["b_dec"]) @ w["W_enc"].astype(np.float64) + w["b_enc"]
    if cfg["architecture"] == "topk":
        k = cfg["k"]
        f = np.zeros_like(pre)
        idx = np.argsort(-pre, axis=-1)[:, :k]
        rows = np.arange(pre.shape[0])[:, None]
        f[rows, idx] = np.maximum(pre[rows, idx], 0.0)
    else:
        f = np.maximum(pre, 0.0)
    return f, f @ w["W_dec"].astype(np.float64) + w["b_dec"]


def check(root: Path) -> int:
    from sae_lens import SAE

    folders = sorted(p.parent for p in root.glob("*/cfg.json"))
    if (root / "cfg.json").is_file():
        folders = [root]
    if not folders:
        print(f"no SAELens folders (*/cfg.json) in {root}", file=sys.stderr)
        return 1
    failures = 0
    rng = np.random.default_rng(0)
    for d in folders:
        cfg = json.loads((d / "cfg.json").read_text())
        w = load_file(str(d / "sae_weights.safetensors"))
        sae = SAE.load_from_disk(str(d))
        problems = []
        if sae.cfg.d_in != w["W_enc"].shape[0] or sae.cfg.d_sae != w["W_enc"].shape[1]:
            problems.append(f"shape: cfg d_in {sae.cfg.d_in} d_sae {sae.cfg.d_sae}, W_enc {w['W_enc'].shape}")
        # Inputs on the scale of the SAE's data: around b_dec, spread like the atoms.
        x = (w["b_dec"] + rng.standard_normal((64, sae.cfg.d_in)) * 2.0).astype(np.float32)
        f_ref, out_ref = expected(w, cfg, x)
        with torch.no_grad():
            f = sae.encode(torch.from_numpy(x)).double().numpy()
            out = sae.decode(torch.from_numpy(f_ref.astype(np.float32))).double().numpy()
        df, dout = np.abs(f - f_ref).max(), np.abs(out - out_ref).max()
        if not (df <= TOL and dout <= TOL):
            problems.append(f"encode max |diff| {df:.2e}, decode max |diff| {dout:.2e} (tolerance {TOL})")
        meta = sae.cfg.metadata
        saerun = meta.get("saerun") or {}
        if saerun.get("model_source"):
            for key in ("hook_name", "model_name", "context_size", "model_from_pretrained_kwargs"):
                if meta.get(key) is None:
                    problems.append(f"metadata.{key} missing")
        status = "FAIL" if problems else "ok"
        print(
            f"{status:4} {d.name}: {type(sae).__name__} d_in {sae.cfg.d_in} d_sae {sae.cfg.d_sae}"
            f"{' k ' + str(sae.cfg.k) if hasattr(sae.cfg, 'k') else ''}, hook {meta.get('hook_name')},"
            f" model {meta.get('model_name')}; encode |diff| {df:.1e}, decode |diff| {dout:.1e},"
            f" mean active {np.mean((f > 0).sum(-1)):.1f}"
        )
        for p in problems:
            print(f"     {p}")
        failures += bool(problems)
    print(f"{len(folders) - failures} of {len(folders)} SAEs load in sae-lens {sae_lens.__version__} and match")
    return 1 if failures else 0


def main() -> int:
    if sae_lens.__version__ != SAE_LENS_VERSION:
        print(f"note: sae-lens {sae_lens.__version__}, checked with {SAE_LENS_VERSION}", file=sys.stderr)
    if len(sys.argv) >= 2 and sys.argv[1] == "fixtures":
        out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent.parent / "tests/fixtures/saelens"
        make_fixtures(out)
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        return check(Path(sys.argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
