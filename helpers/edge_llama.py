"""Lab 07's decode engine: a minimal Llama forward (:class:`EdgeLlama`) for
SmolLM2 with a KV cache, taking its weights from the transformers model,
where every linear layer calls a pluggable GEMV backend (:class:`Fp32Gemv`:
numpy BLAS; :class:`W4A8Gemv`: int4 weights, int8 activations, a C kernel);
RMSNorm, RoPE, grouped-query attention and the SiLU MLP are numpy. And the
torch reference of the same W4A8 arithmetic (:func:`w4a8_reference_model`),
which the engine's outputs are compared with."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .gemv_harness import BLOCK, bind_kernel


@functools.lru_cache(maxsize=None)
def engine_kernel(variant: str = "all") -> Callable:
    """The engine's default kernel: the optimized ``gemv_int4_<variant>`` of
    ``helpers/kernels/c/int4_gemv.c`` (:mod:`helpers.kernels.int4`)."""
    from .kernels.cjit import compile_file
    return bind_kernel(compile_file("int4_gemv.c"), variant)


# ---------------------------------------------------------------- GEMV backends

def quantize_activation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per block of 32 along the last dim of float32 ``x [T, K]``:
    ``(xq int8 [T, K_pad], xs float32 [T, K_pad/32])``, bit-identical to
    :func:`helpers.kernels.int4.quantize_activation_int8` (numpy: cheaper per call)."""
    t, k = x.shape
    pad = (-k) % BLOCK
    if pad:
        x = np.pad(x, ((0, 0), (0, pad)))
    blocks = x.reshape(t, -1, BLOCK)
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / np.float32(127.0)
    inv = np.divide(np.float32(1.0), scale, out=np.zeros_like(scale), where=scale != 0)
    xq = np.clip(np.rint(blocks * inv), -127, 127).astype(np.int8)
    return xq.reshape(t, -1), scale.reshape(t, -1)


class Fp32Gemv:
    """fp32 weights, ``y = x W^T`` with numpy (BLAS)."""

    def prepare(self, w) -> np.ndarray:
        return np.ascontiguousarray(w.detach().float().numpy())

    def __call__(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x @ w.T


@dataclass
class _W4Handle:
    n: int
    k: int           # unpadded input features
    k_padded: int
    codes: np.ndarray
    scales: np.ndarray
    ptrs: tuple[int, int] = field(init=False)

    def __post_init__(self):
        self.ptrs = (self.codes.ctypes.data, self.scales.ctypes.data)


class W4A8Gemv:
    """int4 weights (quantized once by :func:`helpers.kernels.int4.quantize_weight_int4`),
    int8 activations quantized per call, one C kernel call per row of ``x``.

    ``kernel`` is a bound ``gemv_int4_<variant>`` function (a student's, from
    :func:`compile_kernel`); the default is the helpers' ``all`` kernel.
    """

    def __init__(self, kernel: Callable | None = None, num_threads: int = 1):
        self.kernel = kernel if kernel is not None else engine_kernel("all")
        self.num_threads = num_threads

    def prepare(self, w) -> _W4Handle:
        from .kernels.int4 import quantize_weight_int4
        packed = quantize_weight_int4(w)
        return _W4Handle(packed.n, packed.k, packed.k_padded, packed.codes.numpy(), packed.scales.numpy())

    def __call__(self, x: np.ndarray, h: _W4Handle) -> np.ndarray:
        xq, xs = quantize_activation(x)
        y = np.empty((x.shape[0], h.n), dtype=np.float32)
        for t in range(x.shape[0]):
            self.kernel(h.ptrs[0], h.ptrs[1], xq[t].ctypes.data, xs[t].ctypes.data, y[t].ctypes.data,
                        h.n, h.k_padded, self.num_threads)
        return y


# ---------------------------------------------------------------- the engine

@dataclass
class _Layer:
    ln1: np.ndarray
    qkv: Any          # q, k, v stacked along the output dim: one GEMV
    o: Any
    ln2: np.ndarray
    gate_up: Any      # gate and up stacked: one GEMV
    down: Any


class KVCache:
    """Keys and values of every layer, preallocated ``[layers, kv_heads, max_len, head_dim]``."""

    def __init__(self, n_layers: int, n_kv: int, max_len: int, head_dim: int):
        self.k = np.zeros((n_layers, n_kv, max_len, head_dim), dtype=np.float32)
        self.v = np.zeros_like(self.k)
        self.length = 0
        self.max_len = max_len


class EdgeLlama:
    """A minimal Llama (SmolLM2) forward in numpy where every linear layer is
    ``gemv(x, gemv.prepare(weight))``; the KV cache holds ``max_len`` positions."""

    def __init__(self, model, gemv, *, max_len: int = 1024):
        import torch

        cfg = model.config
        for name in ("attention_bias", "mlp_bias"):
            if getattr(cfg, name, False):
                raise NotImplementedError(f"EdgeLlama supports Llama without biases ({name}=True).")
        self.gemv = gemv
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = float(cfg.rms_norm_eps)
        self.max_len = max_len
        inner = model.model
        f32 = lambda t: np.ascontiguousarray(t.detach().float().numpy())  # noqa: E731
        with torch.no_grad():
            self.embed = f32(inner.embed_tokens.weight)
            self.layers = []
            for layer in inner.layers:
                at, mlp = layer.self_attn, layer.mlp
                self.layers.append(_Layer(
                    ln1=f32(layer.input_layernorm.weight),
                    qkv=gemv.prepare(torch.cat([at.q_proj.weight, at.k_proj.weight, at.v_proj.weight])),
                    o=gemv.prepare(at.o_proj.weight),
                    ln2=f32(layer.post_attention_layernorm.weight),
                    gate_up=gemv.prepare(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
                    down=gemv.prepare(mlp.down_proj.weight)))
            self.norm = f32(inner.norm.weight)
            self.lm_head = gemv.prepare(model.lm_head.weight)
            self.cos, self.sin = self._rope_tables(model, max_len)

    @staticmethod
    def _rope_tables(model, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        # Take cos/sin from the model's own rotary embedding: same frequencies,
        # same fp32 rounding as transformers.
        import torch
        rot = model.model.rotary_emb
        pos = torch.arange(max_len).unsqueeze(0)
        cos, sin = rot(torch.zeros(1, dtype=torch.float32), pos)
        return cos[0].float().numpy(), sin[0].float().numpy()

    def new_cache(self) -> KVCache:
        return KVCache(len(self.layers), self.n_kv, self.max_len, self.head_dim)

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        var = np.mean(x * x, axis=-1, keepdims=True)
        return w * (x * (np.float32(1.0) / np.sqrt(var + np.float32(self.eps))))

    def _rope(self, x: np.ndarray, pos: slice) -> np.ndarray:
        # x [heads, T, d]; rotate_half as transformers: (-x2, x1)
        half = self.head_dim // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * self.cos[pos] + rot * self.sin[pos]

    def forward(self, token_ids: Sequence[int], cache: KVCache, *, all_logits: bool = False) -> np.ndarray:
        """Run ``T`` new tokens (a prompt, or one token when decoding) after the
        ``cache.length`` cached ones; returns the logits of the last token
        ``[vocab]`` (or of every new token ``[T, vocab]``)."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        t, start = len(ids), cache.length
        if start + t > cache.max_len:
            raise ValueError(f"the KV cache holds {cache.max_len} positions; {start} + {t} tokens do not fit "
                             "(make the engine with a larger max_len).")
        h, nq, nkv = self.head_dim, self.n_heads, self.n_kv
        pos = slice(start, start + t)
        group = nq // nkv
        # causal mask of the new queries over cached + new keys
        mask = np.triu(np.full((t, start + t), -np.inf, dtype=np.float32), k=start + 1)
        x = self.embed[ids]
        for i, layer in enumerate(self.layers):
            qkv = self.gemv(self._rms(x, layer.ln1), layer.qkv)
            q = qkv[:, :nq * h].reshape(t, nq, h).transpose(1, 0, 2)
            k = qkv[:, nq * h:(nq + nkv) * h].reshape(t, nkv, h).transpose(1, 0, 2)
            v = qkv[:, (nq + nkv) * h:].reshape(t, nkv, h).transpose(1, 0, 2)
            cache.k[i, :, pos] = self._rope(k, pos)
            cache.v[i, :, pos] = v
            q = self._rope(q, pos).reshape(nkv, group * t, h)     # query heads grouped by their kv head
            keys, values = cache.k[i, :, :start + t], cache.v[i, :, :start + t]
            scores = (q @ keys.transpose(0, 2, 1)) / np.float32(np.sqrt(h))
            scores = scores.reshape(nkv, group, t, start + t) + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            probs = (scores / scores.sum(-1, keepdims=True)).reshape(nkv, group * t, start + t)
            att = (probs @ values).reshape(nq, t, h).transpose(1, 0, 2).reshape(t, nq * h)
            x = x + self.gemv(att, layer.o)
            gu = self.gemv(self._rms(x, layer.ln2), layer.gate_up)
            gate, up = gu[:, :gu.shape[1] // 2], gu[:, gu.shape[1] // 2:]
            x = x + self.gemv(gate / (1 + np.exp(-gate)) * up, layer.down)
        cache.length = start + t
        x = self._rms(x if all_logits else x[-1:], self.norm)
        logits = self.gemv(x, self.lm_head)
        return logits if all_logits else logits[0]


# ---------------------------------------------------------------- torch reference

def _reference_linear_cls():
    import torch

    class W4A8ReferenceLinear(torch.nn.Module):
        """``nn.Linear`` doing the kernels' W4A8 arithmetic in torch: the int4
        weight of ``quantize_weight_int4`` dequantized once, the activation
        quantized per call by ``quantize_activation_int8`` (int8 per block of
        32) and dequantized, then an fp32 matmul: the quantized values of the
        kernels, only the rounding of the fp32 arithmetic differs."""

        def __init__(self, linear: torch.nn.Linear):
            super().__init__()
            from .kernels.int4 import dequantize_int4, quantize_weight_int4
            packed = quantize_weight_int4(linear.weight)
            self.n = packed.n
            w = torch.zeros(packed.n, packed.k_padded)
            w[:, :packed.k] = dequantize_int4(packed)
            self.register_buffer("weight", w)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            from .kernels.int4 import quantize_activation_int8
            lead = x.shape[:-1]
            xq, xs = quantize_activation_int8(x.reshape(-1, x.shape[-1]))
            xd = (xq.reshape(xq.shape[0], -1, BLOCK).float() * xs.unsqueeze(-1)).reshape(xq.shape[0], -1)
            return (xd @ self.weight.T).reshape(*lead, self.n)

    return W4A8ReferenceLinear


def w4a8_reference_model(model):
    """The transformers model with every linear layer (lm_head included)
    doing the W4A8 arithmetic of the kernels in torch. A new module tree that
    shares the other parameters with ``model`` (which is left unchanged)."""
    import copy
    import torch

    ref = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})
    cls = _reference_linear_cls()
    with torch.no_grad():
        for parent in list(ref.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(parent, name, cls(child))
    return ref.eval()
