"""Lab 08's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

Each check re-runs the notebook's visible test on the grader's side and adds
the hidden cases. Nothing here loads SmolLM2: the checks use small tensors and
tiny Llamas (``helpers.llm.tiny_llama``) built here and, where the student's
classes must run on them, in the kernel through ``helpers.probes`` factories
(``lora_exercise``: a base linear whose report exercises the student's
``LoRALinearNF4``; ``lora_llama``: a tiny Llama whose report, taken after
``add_lora`` / ``finetune`` / ``merge_lora`` returns, gives its structure,
state, logits and gradients). References: bitsandbytes' NF4 table,
``helpers.kernels.triton.nf4`` (the torch reference of bitsandbytes' NF4
bytes), peft's LoRA layer and plain torch, all computed here.
"""
import contextlib
import io
import math
import os

import numpy as np
import torch
from torch import nn

from autograder.trusted import ModuleSpec, Ref, task
from helpers import llm
from helpers.checks import check, check_close, check_dtype, check_equal, check_shape

os.environ.setdefault("TRITON_INTERPRET", "1")
from helpers.kernels.triton import nf4 as nf4_ref  # noqa: E402 - the torch reference of the NF4 format

# The published NF4 levels (bitsandbytes' table), the fallback if bitsandbytes does not import here.
NF4_PUBLISHED = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


def _nf4_oracle() -> torch.Tensor:
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            import bitsandbytes.functional as bnbf

            return bnbf.get_4bit_type("nf4", device="cpu").float()
        except Exception:  # noqa: BLE001 - no usable bitsandbytes build here
            return torch.tensor(NF4_PUBLISHED)


NF4 = _nf4_oracle()


def _tensor(value, what: str, t: str) -> torch.Tensor:
    check(torch.is_tensor(value), f"{what} is a {type(value).__name__}, expected a torch tensor.", task=t,
          hint=None if value is not None else "did the function forget to `return` its result?")
    return value


def _number(value, what: str, t: str) -> float:
    if torch.is_tensor(value) and value.numel() == 1:
        return float(value.item())
    check(isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool),
          f"{what} is a {type(value).__name__}, expected a number.", task=t)
    return float(value)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- references

def _ref_blockwise(w: torch.Tensor, code: torch.Tensor, block: int):
    blocks = w.detach().float().reshape(-1, block)
    absmax = blocks.abs().amax(1)
    normed = blocks / absmax.clamp(min=1e-12)[:, None]
    idx = (normed.reshape(-1, 1) - code[None, :]).abs().argmin(1)
    return idx, absmax


def _ref_double_quant(absmax: torch.Tensor, block: int = 256):
    mean = absmax.mean()
    centred = absmax - mean
    out = torch.empty_like(absmax)
    for start in range(0, absmax.numel(), block):
        b = centred[start:start + block]
        c = b.abs().max().clamp(min=1e-12)
        out[start:start + block] = torch.round(b / c * 127) / 127 * c
    return out + mean


def _ref_nf4_weight(w: torch.Tensor) -> torch.Tensor:
    """W0 as QLoRA stores it: NF4 (block 64) with double-quantized absmax (block 256)."""
    idx, absmax = _ref_blockwise(w, NF4, 64)
    return (NF4[idx].reshape(-1, 64) * _ref_double_quant(absmax)[:, None]).reshape(w.shape)


def _nf4_tolerance(w: torch.Tensor) -> float:
    """How far a correct W0 may be from the reference: one int8 step of the double-quantized
    absmax (rounding ties, float order) times the largest NF4 level."""
    absmax = w.detach().float().reshape(-1, 64).abs().amax(1)
    centred = absmax - absmax.mean()
    step = max(float(centred[s:s + 256].abs().max()) for s in range(0, absmax.numel(), 256)) / 127
    return 1.01 * step + 1e-6


def _nearest_levels_ok(w, absmax, idx, code, block, what, t):
    """Each index names a nearest code level of its value / block absmax (ties either way)."""
    blocks = w.detach().float().reshape(-1, block)
    normed = (blocks / absmax.float().clamp(min=1e-12)[:, None]).reshape(-1)
    dist = (normed[:, None] - code[None, :]).abs()
    chosen = dist.gather(1, idx.long().reshape(-1, 1).clamp(0, code.numel() - 1)).squeeze(1)
    bad = (chosen > dist.min(1).values + 1e-6) | (idx.long().reshape(-1) >= code.numel())
    bad &= (absmax.float() > 0).repeat_interleave(block)
    if bool(bad.any()):
        check(False, f"{what}: {int(bad.sum())} of {bad.numel()} indices are not the nearest code level "
              f"(first at position {int(bad.nonzero()[0])}).", task=t,
              hint="divide each block by its absolute maximum, then take the index of the nearest code value")


# ---------------------------------------------------------------- Part 1

@task("task_1_1_nf4_code_book")
def nf4_code_book(student):
    code = _tensor(student.function("nf4_code_book")(), "nf4_code_book()", "1.1")
    check_shape(code, (16,), name="nf4_code_book()", task="1.1")
    code = code.float()
    check(bool((code[1:] > code[:-1]).all()), "the code book must be sorted ascending, without repeats.", task="1.1")
    check_close(torch.stack([code[0], code[-1]]), [-1.0, 1.0], name="min and max of the code book", task="1.1",
                hint="divide by the largest value")
    check(bool((code == 0).any()), "NF4 contains an exact zero.", task="1.1")
    check(int((code > 0).sum()) == 8 and int((code < 0).sum()) == 7,
          f"NF4 has 8 positive and 7 negative levels, got {int((code > 0).sum())} and {int((code < 0).sum())}.",
          task="1.1")
    check_close(code, NF4, name="nf4_code_book() (vs bitsandbytes' NF4 table)", task="1.1", atol=1e-5,
                hint="positive: icdf(linspace(0.9677083, 0.5, 9)[:-1]); negative: -icdf(linspace(0.9677083, 0.5, 8)[:-1])")


@task("task_2_1_blockwise")
def blockwise(student):
    quant, dequant = student.function("quantize_blockwise"), student.function("dequantize_blockwise")
    pack, unpack = student.function("pack_4bit"), student.function("unpack_4bit")

    def quantize(w, code, block):
        got = quant(w, code, block)
        check(isinstance(got, (tuple, list)) and len(got) == 2,
              f"quantize_blockwise returned a {type(got).__name__}, expected (idx, absmax).", task="2.1")
        return _tensor(got[0], "idx", "2.1"), _tensor(got[1], "absmax", "2.1")

    code = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    w = torch.tensor([[0.0, 2.0, -1.1, 0.9], [0.1, -0.2, 0.06, 0.0]])
    idx, absmax = quantize(w, code, 4)
    check_close(absmax, [2.0, 0.2], name="absmax", task="2.1")
    check_equal(idx.tolist(), [2, 4, 1, 3, 3, 0, 3, 2], name="idx", task="2.1",
                hint="divide each block by its absolute maximum, then take the index of the nearest code value")
    check_dtype(idx, torch.uint8, name="idx", task="2.1")
    check_close(_tensor(dequant(idx, absmax, code, (2, 4)), "dequantize_blockwise(...)", "2.1"),
                [[0.0, 2.0, -1.0, 1.0], [0.1, -0.2, 0.1, 0.0]], name="dequantize_blockwise", task="2.1")
    idx0, absmax0 = quantize(torch.zeros(8), code, 4)
    zeros = _tensor(dequant(idx0, absmax0, code, (8,)), "dequantize_blockwise of zeros", "2.1")
    check(bool(torch.isfinite(zeros).all()) and bool((zeros == 0).all()), "a block of zeros must dequantize to "
          "zeros (no NaN).", task="2.1", hint="guard the division by a zero absmax")
    packed = _tensor(pack(torch.tensor([1, 2, 15, 0], dtype=torch.uint8)), "pack_4bit(...)", "2.1")
    check_equal(packed.tolist(), [0x12, 0xF0], name="pack_4bit([1, 2, 15, 0])", task="2.1",
                hint="element 2i goes to the high nibble")
    check_equal(_tensor(unpack(torch.tensor([0x12, 0xF0], dtype=torch.uint8)), "unpack_4bit(...)", "2.1").tolist(),
                [1, 2, 15, 0], name="unpack_4bit(pack_4bit([1, 2, 15, 0]))", task="2.1")
    # Real shapes with outliers, against the torch reference of bitsandbytes' NF4 bytes.
    gen = _gen(4)
    for shape in ((64, 96), (3, 128), (192, 10)):
        w = torch.randn(*shape, generator=gen) * (1 + 5 * (torch.rand(shape, generator=gen) < 0.01))
        ref = nf4_ref.quantize_nf4(w, blocksize=64)
        ref_idx = torch.stack([ref.packed >> 4, ref.packed & 0xF], 1).reshape(-1)
        idx, absmax = quantize(w, NF4, 64)
        check_shape(idx, (w.numel(),), name=f"idx of a {shape} weight", task="2.1")
        check_close(absmax, ref.absmax, name=f"absmax of a {shape} weight", task="2.1", rtol=1e-6)
        _nearest_levels_ok(w, ref.absmax, idx, NF4, 64, f"idx of a {shape} weight", "2.1")
        check_equal(_tensor(pack(ref_idx.to(torch.uint8)), "pack_4bit(...)", "2.1"), ref.packed,
                    name=f"pack_4bit of the NF4 indices of a {shape} weight (vs bitsandbytes' layout)", task="2.1")
        check_close(_tensor(dequant(ref_idx.to(torch.uint8), ref.absmax, NF4, shape), "dequantize_blockwise", "2.1"),
                    nf4_ref.nf4_dequantize_spec(ref), name=f"dequantized {shape} weight", task="2.1", atol=1e-6)
    r = torch.randint(0, 16, (1000,), generator=gen, dtype=torch.int64).to(torch.uint8)
    packed = _tensor(pack(r), "pack_4bit(random)", "2.1")
    check_equal(packed.numel(), 500, name="packed size of 1000 indices", task="2.1")
    check_equal(_tensor(unpack(packed), "unpack_4bit", "2.1"), r, name="unpack_4bit(pack_4bit(random))", task="2.1")
    check_equal(_tensor(unpack(torch.tensor([0xAB, 0x0F, 0xF0], dtype=torch.uint8)), "unpack_4bit", "2.1").tolist(),
                [10, 11, 0, 15, 15, 0], name="unpack_4bit([0xAB, 0x0F, 0xF0])", task="2.1")


# ---------------------------------------------------------------- Part 1: double quantization, code books

@task("task_3_1_double_quant")
def double_quant(student):
    dq, ddq, bits = (student.function(n) for n in ("double_quantize", "double_dequantize", "bits_per_param"))

    def quantize(a, block):
        got = dq(a, block)
        check(isinstance(got, (tuple, list)) and len(got) == 3,
              f"double_quantize returned a {type(got).__name__}, expected (q, scales, mean).", task="3.1")
        q, scales = _tensor(got[0], "q", "3.1"), _tensor(got[1], "scales", "3.1")
        return q, scales, _number(got[2], "mean", "3.1")

    check_close(_number(bits(64, False), "bits_per_param(64, False)", "3.1"), 4.5, name="bits_per_param(64, False)",
                task="3.1")
    check_close(_number(bits(64, True), "bits_per_param(64, True)", "3.1"), 4 + 8 / 64 + 32 / (64 * 256),
                name="bits_per_param(64, True)", task="3.1",
                hint="each absmax costs 8 bits, and each block of 256 absmax values one fp32 scale")
    check_close(_number(bits(32, True, 128), "bits_per_param(32, True, 128)", "3.1"), 4 + 8 / 32 + 32 / (32 * 128),
                name="bits_per_param(32, True, 128)", task="3.1")
    check_close(_number(bits(128, False), "bits_per_param(128, False)", "3.1"), 4.25, name="bits_per_param(128, False)",
                task="3.1")
    check_close(_number(bits(block_size=16, double_quant=True, block_size2=64), "bits_per_param", "3.1"),
                4 + 8 / 16 + 32 / (16 * 64), name="bits_per_param(block_size=16, double_quant=True, block_size2=64)",
                task="3.1")
    for seed, n, block, low, span in ((0, 600, 256, 0.02, 0.1), (1, 1000, 128, 1.0, 3.0), (2, 256, 256, 0.5, 0.01)):
        a = torch.rand(n, generator=_gen(seed)) * span + low   # far from zero in case 2: the mean must be subtracted
        q, scales, mean = quantize(a, block)
        n_blocks = -(-n // block)
        check_dtype(q, torch.int8, name="q", task="3.1")
        check_shape(q, (n,), name=f"q ({n} values)", task="3.1")
        check_shape(scales, (n_blocks,), name=f"scales ({n} values, block {block})", task="3.1",
                    hint="the last block may be shorter: ceil(n / block_size) scales")
        check_close(mean, a.mean(), name=f"mean ({n} values)", task="3.1", rtol=1e-5,
                    hint="subtract the mean of the absmax values before quantizing them")
        centred = a - a.mean()
        ref_scales = torch.stack([centred[s:s + block].abs().max() for s in range(0, n, block)])
        check_close(scales, ref_scales, name=f"block scales ({n} values, block {block})", task="3.1", rtol=1e-5)
        rec = _tensor(ddq(q, scales, mean, block), "double_dequantize(...)", "3.1")
        check_shape(rec, (n,), name="double_dequantize(...)", task="3.1")
        half_step = ref_scales.repeat_interleave(block)[:n] / 127 / 2
        err = (rec.float() - a).abs()
        check(bool((err <= half_step * 1.01 + 1e-6).all()),
              f"double quantization error {float(err.max()):.4g} is larger than half a step of its block "
              f"({float(half_step[int(err.argmax())]):.4g}) ({n} values, block {block}).", task="3.1",
              hint="q = round(127 (a - mean) / c), c the block's absolute maximum of a - mean")


@task("task_4_1_code_books")
def code_books(student):
    int4 = _tensor(student.function("int4_code_book")(), "int4_code_book()", "4.1")
    fp4 = _tensor(student.function("fp4_code_book")(), "fp4_code_book()", "4.1")
    mse = student.function("reconstruction_mse")
    check_shape(int4, (15,), name="int4_code_book()", task="4.1")
    check_shape(fp4, (15,), name="fp4_code_book()", task="4.1", hint="+0 and -0 are one level")
    check_close(fp4[-3:], [0.5, 4 / 6, 1.0], name="three largest FP4 levels", task="4.1",
                hint="E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6, divided by 6")
    check_close(int4, [k / 7 for k in range(-7, 8)], name="int4_code_book()", task="4.1")
    e2m1 = [0.5, 1, 1.5, 2, 3, 4, 6]
    check_close(fp4, [-v / 6 for v in reversed(e2m1)] + [0.0] + [v / 6 for v in e2m1], name="fp4_code_book()",
                task="4.1")
    w = torch.randn(64, 64, generator=_gen(0))
    e = {}
    for name, book in (("nf4", NF4), ("int4", int4.float()), ("fp4", fp4.float())):
        e[name] = _number(mse(w, book, 64), f"reconstruction_mse(w, {name})", "4.1")
        idx, absmax = _ref_blockwise(w, book, 64)
        want = ((book[idx].reshape(-1, 64) * absmax[:, None]).reshape(w.shape) - w).pow(2).mean()
        check_close(e[name], want, name=f"reconstruction_mse of a 64x64 normal weight ({name.upper()})", task="4.1",
                    rtol=1e-4, atol=1e-12)
    check(e["nf4"] < e["int4"] and e["nf4"] < e["fp4"], f"on normal weights NF4 should have the smallest error: {e}",
          task="4.1")
    w = torch.randn(32, 128, generator=_gen(8)) * 0.02
    got = {}
    for block in (32, 64, 128):
        idx, absmax = _ref_blockwise(w, NF4, block)
        want = ((NF4[idx].reshape(-1, block) * absmax[:, None]).reshape(w.shape) - w).pow(2).mean()
        got[block] = _number(mse(w, NF4, block), "reconstruction_mse", "4.1")
        check_close(got[block], want, name=f"reconstruction_mse (NF4, block {block})", task="4.1", rtol=1e-4,
                    atol=1e-12, hint="quantize and dequantize with the block_size you are given")
    check(got[32] < got[128], "smaller blocks should give a smaller error: is block_size passed through?", task="4.1")


# ---------------------------------------------------------------- Part 2: LoRA

def _peft_output(w0, A, B, rank, alpha, x):
    """peft's LoRA layer on a linear holding W0, with the given adapters."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        from peft import LoraConfig, get_peft_model

    class Holder(nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x)

    lin = nn.Linear(w0.shape[1], w0.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w0)
    model = get_peft_model(Holder(lin), LoraConfig(r=rank, lora_alpha=alpha, target_modules=["lin"], lora_dropout=0.0))
    mod = model.base_model.model.lin
    with torch.no_grad():
        mod.lora_A["default"].weight.copy_(A)
        mod.lora_B["default"].weight.copy_(B)
        return model(x)


@task("task_5_1_lora_layer")
def lora_layer(student):
    make = student.function("LoRALinearNF4", args_back=True)
    for seed, (d_in, d_out, r, alpha) in enumerate(((128, 64, 4, 8), (192, 96, 8, 16), (64, 256, 2, 7))):
        t = f"(in={d_in}, out={d_out}, r={r}, alpha={alpha})"
        gen = _gen(10 + seed)
        weight = torch.randn(d_out, d_in, generator=gen) * d_in**-0.5
        A = torch.randn(r, d_in, generator=gen) * 0.1
        B = torch.randn(d_out, r, generator=gen)
        x = torch.randn(3, 5, d_in, generator=gen)
        _, (rec, *_) = make(ModuleSpec("helpers.probes.lora_exercise",
                                       {"layer": Ref("LoRALinearNF4"), "weight": weight, "rank": r, "alpha": alpha,
                                        "x": x, "A": A, "B": B}), rank=r, alpha=alpha)
        check(isinstance(rec, dict) and "parameters" in rec, "LoRALinearNF4 could not be exercised.", task="5.1")
        params = {n: (shape, grad) for n, shape, grad in rec["parameters"]}
        check_equal(sorted(params), ["lora_A", "lora_B"], name=f"trainable parameters of LoRALinearNF4 {t}", task="5.1",
                    hint="store the NF4 weight with register_buffer, not as an nn.Parameter (nor the base layer)")
        check_equal(tuple(params["lora_A"][0]), (r, d_in), name=f"lora_A's shape {t}", task="5.1")
        check_equal(tuple(params["lora_B"][0]), (d_out, r), name=f"lora_B's shape {t}", task="5.1")
        check(params["lora_A"][1] and params["lora_B"][1], "lora_A and lora_B must require gradients.", task="5.1")
        check(bool((rec["init_B"] == 0).all()), "lora_B must start at zero so the adapted layer starts as the base "
              "layer.", task="5.1")
        bound = d_in**-0.5  # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))
        init_a = rec["init_A"].float()
        check(bool((init_a != 0).any()), "lora_A must start random (kaiming_uniform_): with A = 0 and B = 0 neither "
              "gets a gradient.", task="5.1")
        check(float(init_a.abs().max()) <= bound * 1.0001 and float(init_a.std()) > 0.4 * bound / math.sqrt(3),
              f"lora_A does not look like kaiming_uniform_(A, a=math.sqrt(5)) (max {float(init_a.abs().max()):.4g}, "
              f"std {float(init_a.std()):.4g}, expected U(-{bound:.4g}, {bound:.4g})).", task="5.1")
        check(rec["scaling"] is not None, "the layer needs a `scaling` attribute (alpha / rank).", task="5.1")
        check_close(rec["scaling"], alpha / r, name=f"scaling (alpha / rank) {t}", task="5.1")
        # The stored base: 4-bit, never trained, close to QLoRA's NF4 + double quantization of W.
        buffers = {n: b for n, b in rec["buffers"].items()}
        n_bytes = sum(b.numel() * b.element_size() for b in buffers.values())
        check(weight.numel() / 2 <= n_bytes <= weight.numel() * (0.5 + 1 / 64 + 1 / 256) + 64,
              f"the NF4 buffers take {n_bytes} bytes for {weight.numel()} weights, expected about half a byte per "
              "weight (packed 4-bit indices + 8-bit absmax + fp32 scales).", task="5.1",
              hint="register_buffer the pack_4bit indices and the double-quantized absmax (not the fp32 weight)")
        check(not rec["buffer_requires_grad"], "the NF4 base must not require gradients.", task="5.1")
        w0 = _tensor(rec["W0"], "dequantized_weight()", "5.1").float()
        check_shape(w0, (d_out, d_in), name=f"dequantized_weight() {t}", task="5.1")
        ref_w0 = _ref_nf4_weight(weight)
        check_close(w0, ref_w0, rtol=0, atol=_nf4_tolerance(weight), name=f"dequantized_weight() {t}", task="5.1",
                    hint="NF4 with block 64 (quantize_blockwise), absmax double-quantized in blocks of 256")
        check_close(rec["y_init"], x @ w0.T, name=f"output at initialisation {t}", task="5.1", rtol=1e-5, atol=1e-5)
        check_close(rec["y"], _peft_output(w0, A, B, r, alpha, x), name=f"LoRA output vs peft {t}", task="5.1",
                    rtol=1e-4, atol=1e-4, hint="y = x W0^T + (alpha / r) x A^T B^T")
        # Gradients of sum(y**2): to A, B and the input, as autograd gives them for the formula.
        a_ref, b_ref, x_ref = (v.clone().requires_grad_(True) for v in (A, B, x))
        (x_ref @ w0.T + (x_ref @ a_ref.T @ b_ref.T) * (alpha / r)).pow(2).sum().backward()
        for name, got, want in (("lora_A", rec["grad_A"], a_ref.grad), ("lora_B", rec["grad_B"], b_ref.grad),
                                ("the input", rec["grad_x"], x_ref.grad)):
            check(got is not None, f"the gradient must reach {name}.", task="5.1")
            check_close(got, want, name=f"gradient of sum(y**2) with respect to {name} {t}", task="5.1",
                        rtol=1e-3, atol=1e-3)
        after = rec["buffers_after_step"]
        check(set(after) == set(buffers) and all(torch.equal(after[n], buffers[n]) for n in buffers),
              "an optimizer step changed the NF4 base.", task="5.1")


def _tiny(seed, hidden, intermediate, heads, kv_heads, layers):
    return {"seed": seed, "hidden": hidden, "intermediate": intermediate, "heads": heads, "kv_heads": kv_heads,
            "layers": layers}


def _logits_with(tiny: dict, weights: dict, ids) -> torch.Tensor:
    """Logits of ``tiny_llama(**tiny)`` with the named block linears' weights replaced."""
    model = llm.tiny_llama(**tiny)
    linears = llm.block_linears(model)
    with torch.no_grad():
        for name, w in weights.items():
            linears[name].weight.copy_(w)
        return model(ids).logits


@task("task_6_1_add_lora")
def add_lora(student):
    add = student.function("add_lora", args_back=True)
    for tiny, r, alpha in ((_tiny(0, 128, 256, 4, 2, 2), 4, 8), (_tiny(3, 128, 192, 4, 1, 3), 2, 4)):
        ids = torch.randint(0, 96, (2, 12), generator=_gen(tiny["seed"]))
        n_train, (rec, *_) = add(ModuleSpec("helpers.probes.lora_llama",
                                            {"ids": ids, "layer": Ref("LoRALinearNF4"), "backward": True, **tiny}),
                                 rank=r, alpha=alpha)
        check(isinstance(rec, dict) and "lora_modules" in rec, "the model could not be inspected after add_lora.",
              task="6.1")
        linears = llm.block_linears(llm.tiny_llama(**tiny))
        check_equal(rec["lora_modules"], sorted(linears), name=f"the LoRALinearNF4 layers ({len(linears)} block "
                    f"linears, {tiny['layers']} blocks)", task="6.1",
                    hint="replace every linear of block_linears(model), with setattr on its parent")
        expected = sum(r * (m.in_features + m.out_features) for m in linears.values())
        check(isinstance(n_train, int) and not isinstance(n_train, bool),
              f"add_lora returned a {type(n_train).__name__}, expected the trainable-parameter count (an int).",
              task="6.1")
        check_equal(n_train, expected, name="trainable parameters (returned)", task="6.1",
                    hint="only lora_A and lora_B may require gradients")
        want_trainable = sorted(f"{n}.lora_{m}" for n in linears for m in "AB")
        check_equal(rec["requires_grad"], want_trainable, name="the parameters that require gradients", task="6.1",
                    hint="freeze the model (requires_grad_(False)) before adding the adapters")
        check("model.embed_tokens.weight" not in rec["requires_grad"], "the embedding must be frozen.", task="6.1")
        for name, lin in linears.items():
            shape = tuple(rec["state"][f"{name}.lora_A"].shape)
            check_equal(shape, (r, lin.in_features), name=f"{name}.lora_A's shape (rank {r})", task="6.1",
                        hint="pass rank and alpha on to LoRALinearNF4")
        # At initialisation the adapted model is the NF4-quantized model (its own dequantized weights).
        w0 = rec["dequantized"]
        for name, lin in linears.items():
            check_close(w0[name].float(), _ref_nf4_weight(lin.weight), rtol=0, atol=_nf4_tolerance(lin.weight),
                        name=f"{name}'s NF4 base", task="6.1")
        check_close(rec["logits"], _logits_with(tiny, w0, ids), name="logits of the adapted model at initialisation",
                    task="6.1", rtol=1e-4, atol=1e-4,
                    hint="at initialisation the adapted model equals the NF4-quantized model")
        frozen = [n for n in rec["has_grad"] if not n.endswith(("lora_A", "lora_B"))]
        check(not frozen, f"gradients reached frozen parameters: {frozen[:3]}", task="6.1")
        check(all(n in rec["has_grad"] for n in want_trainable if n.endswith("lora_A")),
              "every lora_A must receive a gradient.", task="6.1")


_REF_RUNS: dict = {}


def _ref_finetune(tiny, trainable, stream, steps, batch, seq, lr, seed):
    key = repr((tiny, trainable, stream.tolist(), steps, batch, seq, lr, seed))
    if key not in _REF_RUNS:  # the lab's own tests run the same check many times
        _REF_RUNS[key] = _ref_finetune_run(tiny, trainable, stream, steps, batch, seq, lr, seed)
    return _REF_RUNS[key]


def _ref_finetune_run(tiny, trainable, stream, steps, batch, seq, lr, seed):
    model = llm.tiny_llama(**tiny)
    for n, p in model.named_parameters():
        p.requires_grad_(any(n.startswith(t) for t in trainable))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        b = llm.sample_windows(stream, batch, seq, seed=seed + step)
        loss = model(b, labels=b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, {k: v.detach() for k, v in model.state_dict().items()}


@task("task_7_1_finetune")
def finetune(student):
    fine = student.function("finetune", args_back=True)
    # A tiny Llama with its embedding (tied head) frozen: only the parameters that require gradients may learn.
    cases = [(_tiny(0, 128, 256, 4, 2, 2), ["model.layers."], torch.arange(2000) % 7 + 3, (20, 4, 32, 1e-2, 0)),
             (_tiny(4, 128, 256, 4, 2, 1), ["model.layers.0.mlp.", "model.norm"], (torch.arange(3000) * 5) % 11 + 1,
              (6, 2, 24, 5e-3, 3))]
    for tiny, trainable, stream, (steps, batch, seq, lr, seed) in cases:
        start = llm.tiny_llama(**tiny).state_dict()
        ids = torch.randint(0, 96, (1, 8), generator=_gen(1))
        losses, (rec, *_) = fine(ModuleSpec("helpers.probes.lora_llama", {"ids": ids, "trainable": trainable, **tiny}),
                                 stream, steps=steps, batch_size=batch, seq_len=seq, lr=lr, seed=seed)
        check(isinstance(losses, list), f"finetune returned a {type(losses).__name__}, expected a list of losses.",
              task="7.1")
        check_equal(len(losses), steps, name="len(losses)", task="7.1")
        check(all(isinstance(v, float) for v in losses), "losses must be Python floats (loss.item()).", task="7.1")
        want_losses, want_state = _ref_finetune(tiny, trainable, stream, steps, batch, seq, lr, seed)
        if steps >= 10:
            check(sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5,
                  f"the loss did not fall: first {losses[:3]}, last {losses[-3:]}", task="7.1",
                  hint="are the trainable parameters passed to the optimizer, and is zero_grad called each step?")
        # AdamW with or without its default weight decay both pass: it moves the losses by < 0.5 % and the
        # updates by < 5 % here; a wrong lr, batch or missing zero_grad moves them by 40 % or more.
        check_close(losses, want_losses, rtol=1e-2, atol=1e-4, name=f"losses ({steps} AdamW steps, lr={lr}, seed={seed})",
                    task="7.1", hint="batch t is llm.sample_windows(train_ids, batch_size, seq_len, seed=seed + t); "
                    "backward, step and zero the gradients every step")
        state = rec["state"]
        frozen = [k for k in start if not any(k.startswith(t) for t in trainable) and k in state]
        changed = [k for k in frozen if not torch.equal(state[k], start[k])]
        check(not changed, f"training changed frozen parameters: {changed[:3]}", task="7.1")
        moving = [k for k in start if any(k.startswith(t) for t in trainable)]
        still = [k for k in moving if torch.equal(state[k], start[k])]
        check(not still, f"only {len(moving) - len(still)} of {len(moving)} trainable tensors were updated "
              f"(not {still[:2]}).", task="7.1")
        for k in moving:
            update, want_update = state[k].float() - start[k], want_state[k] - start[k]
            off = float((update - want_update).norm() / want_update.norm().clamp(min=1e-12))
            check(off < 0.15, f"the update of {k} is {100 * off:.0f}% off the expected AdamW update.", task="7.1",
                  hint="AdamW over the parameters that require gradients, with the lr you are given")
        check(not rec["training"], "finetune should leave the model in eval mode.", task="7.1")


@task("task_8_1_merge")
def merge(student):
    merge_fn = student.function("merge_lora", args_back=True)
    for tiny, r, alpha, std_a, std_b in ((_tiny(1, 128, 256, 4, 2, 2), 4, 8, 0.1, 0.05),
                                         (_tiny(6, 192, 320, 6, 2, 1), 3, 12, 1.0, 1.0)):
        gen = _gen(20 + tiny["seed"])
        linears = llm.block_linears(llm.tiny_llama(**tiny))
        A = {n: torch.randn(r, m.in_features, generator=gen) * std_a for n, m in linears.items()}
        B = {n: torch.randn(m.out_features, r, generator=gen) * std_b for n, m in linears.items()}
        ids = torch.randint(0, 96, (2, 16), generator=_gen(0))
        _, (rec, *_) = merge_fn(ModuleSpec("helpers.probes.lora_llama", {
            "ids": ids, "layer": Ref("LoRALinearNF4"), "lora": {"rank": r, "alpha": alpha, "A": A, "B": B}, **tiny}))
        check(isinstance(rec, dict) and "lora_modules" in rec, "the model could not be inspected after merge_lora.",
              task="8.1")
        check_equal(len(rec["lora_modules"]), 0, name="LoRA layers left after merging", task="8.1")
        check(not rec["biases"], f"merged layers must be nn.Linear without bias ({rec['biases'][:2]} have one).",
              task="8.1")
        merged = {}
        for name in linears:
            check(rec["modules"].get(name) == "Linear",
                  f"{name} is a {rec['modules'].get(name)} after merging, expected an nn.Linear.", task="8.1")
            w0 = rec["recorded"][name].float()
            merged[name] = w0 + (alpha / r) * B[name] @ A[name]
            check_close(rec["state"][f"{name}.weight"], merged[name], rtol=1e-5, atol=1e-5,
                        name=f"merged {name}.weight (alpha / r = {alpha / r:g})", task="8.1",
                        hint="W = W0 + scaling * lora_B @ lora_A, with W0 the dequantized NF4 weight")
        check_close(rec["logits"], _logits_with(tiny, merged, ids), name="logits after merging", task="8.1",
                    rtol=1e-4, atol=1e-4, hint="W = W0 + scaling * lora_B @ lora_A")
