"""helpers/gemv_harness.py, edge_llama.py and decode.py: the decode engine against transformers on a tiny random
Llama, the KV cache against full recompute, the W4A8 torch reference against
the engine, and the kernel harness of Lab 07."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import decode
from helpers.checks import CheckError
from helpers.kernels import int4
from helpers.gemv_harness import (check_kernel, compile_kernel, gemv_problem, reference_kernel, run_kernel,
                                  time_kernels)
from helpers.edge_llama import EdgeLlama, engine_kernel, Fp32Gemv, quantize_activation, w4a8_reference_model, W4A8Gemv
from helpers.decode import compare_decode, greedy


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    # Dimensions that are multiples of 32 (the int4 block) and grouped-query
    # attention (4 query heads on 2 kv heads); a large init so that logits,
    # and greedy tokens, differ from position to position.
    cfg = LlamaConfig(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                      tie_word_embeddings=True, rope_theta=10000.0, initializer_range=0.2)
    return LlamaForCausalLM(cfg).eval()


IDS = [3, 17, 99, 42, 5, 150, 7, 64, 23, 88, 11, 2]


def test_fp32_engine_matches_transformers_logits(tiny):
    with torch.no_grad():
        want = tiny(torch.tensor([IDS])).logits[0].numpy()
    engine = EdgeLlama(tiny, Fp32Gemv(), max_len=32)
    got = engine.forward(IDS, engine.new_cache(), all_logits=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.abs(want).max() > 0.5  # the comparison is not between near-zero logits


def test_kv_cache_decode_equals_full_recompute(tiny):
    engine = EdgeLlama(tiny, Fp32Gemv(), max_len=32)
    full = engine.forward(IDS, engine.new_cache(), all_logits=True)
    cache = engine.new_cache()
    steps = np.stack([engine.forward([t], cache) for t in IDS])
    np.testing.assert_allclose(steps, full, rtol=1e-5, atol=1e-5)
    cache = engine.new_cache()  # a prefilled prompt, then one token at a time
    first = engine.forward(IDS[:5], cache, all_logits=True)
    rest = np.stack([engine.forward([t], cache) for t in IDS[5:]])
    np.testing.assert_allclose(np.concatenate([first, rest]), full, rtol=1e-5, atol=1e-5)
    assert cache.length == len(IDS)


def test_cache_overflow_says_what_to_do(tiny):
    engine = EdgeLlama(tiny, Fp32Gemv(), max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        engine.forward(IDS, engine.new_cache())


def test_w4a8_reference_matches_engine_with_reference_kernel(tiny):
    ref_model = w4a8_reference_model(tiny)
    engine = EdgeLlama(tiny, W4A8Gemv(engine_kernel("reference")), max_len=32)
    with torch.no_grad():
        want = ref_model(torch.tensor([IDS])).logits[0].numpy()
        fp32 = tiny(torch.tensor([IDS])).logits[0].numpy()
    got = engine.forward(IDS, engine.new_cache(), all_logits=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.abs(want - fp32).max() > 1e-2  # the reference really is quantized
    tokens = greedy(engine, IDS[:4], 12)
    assert tokens == greedy(ref_model, IDS[:4], 12)
    assert len(set(tokens)) > 1
    # the original model keeps its fp32 linear layers
    assert isinstance(tiny.lm_head, torch.nn.Linear)


def test_w4_engine_with_helpers_all_kernel_matches_reference_kernel(tiny):
    a = EdgeLlama(tiny, W4A8Gemv(engine_kernel("reference")), max_len=32)
    b = EdgeLlama(tiny, W4A8Gemv(engine_kernel("all"), num_threads=2), max_len=32)
    np.testing.assert_allclose(b.forward(IDS, b.new_cache()), a.forward(IDS, a.new_cache()), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [64, 96, 70])
def test_quantize_activation_is_bit_identical_to_helpers(k):
    x = torch.randn(3, k) * torch.linspace(0.1, 10, k)
    x[1, :32] = 0  # an all-zero block: scale 0, codes 0
    xq, xs = quantize_activation(x.numpy())
    wq, ws = int4.quantize_activation_int8(x)
    np.testing.assert_array_equal(xq, wq.numpy())
    np.testing.assert_array_equal(xs, ws.numpy())


def test_reference_src_agrees_with_helpers_reference_and_exact_sums():
    p = gemv_problem(37, 160, seed=3)
    ours = run_kernel(reference_kernel(), p)
    theirs = run_kernel(engine_kernel("reference"), p)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours, p.y_ref, rtol=1e-4, atol=1e-5 * np.abs(p.y_ref).max())


def test_gemv_problem_uses_the_helpers_packing():
    # y_ref must follow helpers.kernels.int4's layout (low nibble = column 32b+j).
    w = torch.randn(8, 64)
    packed = int4.quantize_weight_int4(w)
    p = gemv_problem(8, 64, seed=0)
    p.codes[:], p.scales[:] = packed.codes.numpy(), packed.scales.numpy()
    deq = int4.dequantize_int4(packed).double().numpy()
    x = p.xq.astype(np.float64) * np.repeat(p.xs.astype(np.float64), 32)
    np.testing.assert_allclose(run_kernel(engine_kernel("reference"), p), deq @ x, rtol=1e-4, atol=1e-4)


TAIL_DROPPED = r"""
#include <stdint.h>
void gemv_int4_unroll(const uint8_t *codes, const float *scales, const int8_t *xq, const float *xs,
                      float *y, int n, int k, int num_threads) {
    int nb = k / 32;
    for (int row = 0; row < n - n % 4; row++) {   /* forgets the last n % 4 rows */
        float acc = 0;
        for (int b = 0; b < nb; b++) {
            int s = 0;
            for (int j = 0; j < 16; j++) {
                uint8_t c = codes[(long)row * k / 2 + b * 16 + j];
                s += ((c & 15) - 8) * xq[b * 32 + j] + ((c >> 4) - 8) * xq[b * 32 + 16 + j];
            }
            acc += scales[row * nb + b] * xs[b] * s;
        }
        y[row] = acc;
    }
}
"""


def test_check_kernel_accepts_the_reference_and_names_missing_rows():
    check_kernel(engine_kernel("all"), task="1.4", shapes=[(67, 96), (5, 32)], num_threads=2, repeats=2)
    fn = compile_kernel(TAIL_DROPPED, "unroll")
    check_kernel(fn, task="1.1", shapes=[(64, 96)])
    with pytest.raises(CheckError, match=r"Task 1\.1: .*never wrote y\[64, 65, 66\].*n % 4"):
        check_kernel(fn, task="1.1", shapes=[(67, 96)])


def test_check_kernel_names_a_build_that_computes_nothing():
    fn = compile_kernel("#include <stdint.h>\nvoid gemv_int4_simd(const uint8_t *c, const float *s, const int8_t *xq,"
                        " const float *xs, float *y, int n, int k, int t) {}\n", "simd")
    with pytest.raises(CheckError, match=r"Task 1\.3: with n=8, k=64, num_threads=1, built without AVX2 the kernel "
                                         r"wrote no element of y"):
        check_kernel(fn, task="1.3", shapes=[(8, 64)], build="built without AVX2")


def test_check_kernel_catches_a_wrong_zero_point():
    fn = compile_kernel(TAIL_DROPPED.replace("- 8)", "- 7)"), "unroll")
    with pytest.raises(CheckError, match=r"Task 1\.1: `y \(n=64, k=96, num_threads=1\)` differs"):
        check_kernel(fn, task="1.1", shapes=[(64, 96)])


def test_compile_kernel_names_the_missing_function():
    with pytest.raises(CheckError, match=r"(?s)Task 1\.3: .*no function `gemv_int4_simd`.*static"):
        compile_kernel(TAIL_DROPPED, "simd", task="1.3")
    with pytest.raises(CheckError, match="expected the C code as a str"):
        compile_kernel(None, "simd", task="1.3")


def test_time_kernels_best_of_and_early_stop():
    p = gemv_problem(512, 1024)
    fns = {"reference": (reference_kernel(), 1), "all": (engine_kernel("all"), 1)}
    best = time_kernels(fns, p, min_repeats=3, budget_s=0.2)
    assert set(best) == {"reference", "all"} and all(0 < t < 1 for t in best.values()), best
    calls = []
    time_kernels(fns, p, min_repeats=2, budget_s=30, until=lambda b: calls.append(1) or True)
    assert len(calls) == 1  # stopped as soon as the target held, long before the budget


def test_time_kernels_gives_no_speedup_to_a_kernel_that_ignores_its_threads():
    # The reference runs on one thread whatever num_threads says: timed "on 2
    # threads" (wall clock less waits for a CPU) it must not look faster than
    # on 1 (CPU time), however busy the machine.
    p = gemv_problem(512, 1024)
    ref = reference_kernel()
    best = time_kernels({"1": (ref, 1), "2": (ref, 2)}, p, min_repeats=20, budget_s=0.5)
    assert best["1"] / best["2"] < 1.08


class _Tokenizer:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return messages[0]["content"]

    def __call__(self, text, add_special_tokens):
        return {"input_ids": [ord(c) % 160 for c in text]}


def test_measure_decode_contract(tiny, monkeypatch):
    monkeypatch.setattr(decode, "_smollm2", lambda: (tiny, _Tokenizer()))
    runs = {v: decode.measure_decode(6, v, prompt="hello") for v in ("fp32", "w4", "transformers")}
    for v, r in runs.items():
        assert r["variant"] == v and r["tokens_per_s"] > 0 and len(r["tokens"]) == 6
        assert r["ms_per_token"] == pytest.approx(1e3 / r["tokens_per_s"])
    assert runs["fp32"]["tokens"] == runs["transformers"]["tokens"]
    with pytest.raises(ValueError, match="variant"):
        decode.measure_decode(6, "int3")


def test_compare_decode_interleaves_and_caps_threads(tiny):
    engine = EdgeLlama(tiny, Fp32Gemv(), max_len=32)
    out = compare_decode({"engine": engine, "transformers": tiny}, IDS[:3], 5, num_threads=1)
    assert out["engine"]["tokens"] == out["transformers"]["tokens"] == greedy(tiny, IDS[:3], 5)


def test_llama_cpp_is_skipped_with_a_reason_when_missing():
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        r = decode.measure_llama_cpp(4)
        assert "llama-cpp-python" in r["skipped"]
    else:
        pytest.skip("llama-cpp-python is installed: measured in the lab, not here")
