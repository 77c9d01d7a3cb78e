"""What the PyTorch references of the benches share: the Pythia-70M-shaped model (as
../shared/bench/torch_ref.py builds it) and the timer (mean seconds per call after warm-up
calls, as torch_ref.py times)."""
import time

from transformers import GPTNeoXConfig, GPTNeoXForCausalLM


def pythia70m(dtype):
    """transformers' GPTNeoXForCausalLM of Pythia-70M's shape, random weights, eval mode."""
    cfg = GPTNeoXConfig(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                        intermediate_size=2048, rotary_pct=0.25, max_position_embeddings=2048,
                        use_parallel_residual=True, tie_word_embeddings=False)
    return GPTNeoXForCausalLM(cfg).eval().to(dtype)


def timeit(fn, n, warm):
    for _ in range(warm):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n
