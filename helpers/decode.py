"""Greedy decoding and its speed (lab 07 and ``benchmarks/llm.py``): the
same greedy tokens from an :class:`~helpers.edge_llama.EdgeLlama` or a
transformers model, several models decoded step by step in turn under the
same load (:func:`compare_decode`), tokens/s of SmolLM2 with this engine
(:func:`measure_decode`) and with llama.cpp (:func:`measure_llama_cpp`)."""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, Sequence

import numpy as np

from .edge_llama import EdgeLlama, Fp32Gemv, W4A8Gemv


class _Decoder:
    """Greedy decoding one token at a time, with an :class:`EdgeLlama` or a
    transformers model (each with its own KV cache)."""

    def __init__(self, model, prompt_ids: Sequence[int]):
        self.model = model
        if isinstance(model, EdgeLlama):
            self.cache = model.new_cache()
            self.last = int(np.argmax(model.forward(prompt_ids, self.cache)))
        else:
            import torch
            with torch.no_grad():
                out = model(input_ids=torch.tensor([list(prompt_ids)]), use_cache=True)
            self.cache, self.last = out.cache, int(out.logits[0, -1].argmax())

    def step(self) -> int:
        if isinstance(self.model, EdgeLlama):
            self.last = int(np.argmax(self.model.forward([self.last], self.cache)))
        else:
            import torch
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([[self.last]]), cache=self.cache, use_cache=True)
            self.cache, self.last = out.cache, int(out.logits[0, -1].argmax())
        return self.last


def greedy(model, prompt_ids: Sequence[int], n_new: int, *, eos_id: int | None = None) -> list[int]:
    """The first ``n_new`` greedy tokens after the prompt (fewer if ``eos_id``
    comes), from an :class:`EdgeLlama` or a transformers model."""
    dec = _Decoder(model, prompt_ids)
    out = [dec.last]
    while len(out) < n_new and out[-1] != eos_id:
        out.append(dec.step())
    return out


def compare_decode(models: dict[str, Any], prompt_ids: Sequence[int], n_tokens: int, *,
                   num_threads: int | None = None, progress: bool = False) -> dict[str, dict]:
    """Decode ``n_tokens`` greedy tokens with every model, one step of each in
    turn, so all see the same machine load; returns per name ``{"tokens",
    "tokens_per_s", "ms_per_token"}`` from the median step time (a step
    slowed down by another process does not count). Prefill is not timed;
    end-of-sequence does not stop decoding. ``num_threads`` caps the BLAS
    and OpenMP thread pools (numpy, torch) meanwhile, so the fp32 models get
    the threads the int4 kernel gets."""
    from contextlib import nullcontext
    from threadpoolctl import threadpool_limits
    with threadpool_limits(num_threads) if num_threads else nullcontext():
        return _compare_decode(models, prompt_ids, n_tokens, progress)


def _compare_decode(models, prompt_ids, n_tokens, progress):
    decoders = {name: _Decoder(m, prompt_ids) for name, m in models.items()}
    tokens = {name: [d.last] for name, d in decoders.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    steps = range(n_tokens - 1)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="decode " + " / ".join(models), leave=False)
    for _ in steps:
        for name, dec in decoders.items():
            t0 = time.perf_counter()
            tokens[name].append(dec.step())
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name in models:
        ms = 1e3 * float(np.median(times[name])) if times[name] else float("nan")
        out[name] = {"tokens": tokens[name], "ms_per_token": ms, "tokens_per_s": 1e3 / ms}
    return out


def chat_prompt_ids(tokenizer, message: str) -> list[int]:
    """Token ids of a one-turn chat with the model's chat template."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- tokens/s

DEFAULT_PROMPT = "What is the capital of France? Answer in one sentence."


@functools.lru_cache(maxsize=1)
def _smollm2():
    from .data import load_smollm2
    return load_smollm2()


def measure_decode(n_tokens: int = 32, variant: str = "w4", *, prompt: str = DEFAULT_PROMPT,
                   num_threads: int = 1, kernel: Callable | None = None) -> dict:
    """Greedy-decode ``n_tokens`` with SmolLM2; returns ``{"variant",
    "tokens_per_s", "ms_per_token", "tokens"}`` (median decode step, prompt
    prefilled first and not timed).

    ``variant``: ``"fp32"`` (this engine, numpy BLAS), ``"w4"`` (this engine,
    int4 C kernel ``kernel``, default the helpers' ``all``, run with
    ``num_threads``), ``"transformers"`` (the fp32 transformers model).
    Every variant runs with ``num_threads`` threads.
    """
    if n_tokens < 2:
        raise ValueError("n_tokens must be >= 2 (the first token comes from the prefill).")
    model, tokenizer = _smollm2()
    ids = chat_prompt_ids(tokenizer, prompt)
    if variant == "transformers":
        runner = model
    elif variant in ("fp32", "w4"):
        gemv = Fp32Gemv() if variant == "fp32" else W4A8Gemv(kernel, num_threads=num_threads)
        runner = EdgeLlama(model, gemv, max_len=len(ids) + n_tokens)
    else:
        raise ValueError(f"variant must be 'fp32', 'w4' or 'transformers', got {variant!r}")
    return {"variant": variant, **compare_decode({variant: runner}, ids, n_tokens, num_threads=num_threads)[variant]}


def measure_llama_cpp(n_tokens: int = 32, *, prompt: str = DEFAULT_PROMPT, n_threads: int = 2) -> dict:
    """llama.cpp's decode tokens/s on the same GGUF file, through
    llama-cpp-python: ``{"tokens_per_s", ...}``, or ``{"skipped": reason}``
    where it is not importable."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        return {"skipped": f"llama-cpp-python is not importable ({exc}); `pip install llama-cpp-python` "
                           "(it builds llama.cpp from source) to compare"}
    from .data import smollm2_gguf_path
    llm = Llama(model_path=str(smollm2_gguf_path()), n_threads=n_threads, n_ctx=512, verbose=False)
    ids = llm.tokenize(prompt.encode(), add_bos=True)
    llm.eval(ids)                                     # prefill, not timed
    t0 = time.perf_counter()
    for _ in range(n_tokens):
        token = llm.sample(temp=0.0)
        llm.eval([token])
    seconds = time.perf_counter() - t0
    return {"tokens_per_s": n_tokens / seconds, "ms_per_token": 1e3 * seconds / n_tokens,
            "n_threads": n_threads}


def target_note(value: float, target: float, what: str, hint: str | None = None) -> bool:
    """Print how a measured speed compares with the lab's target. Speed is
    shown, never asserted, in the notebook: a busy machine must not fail a
    correct kernel (grading compares with the reference kernel in one run)."""
    if value >= target:
        print(f"  {what}: {value:.2f}x, target >= {target:g}x met")
        return True
    print(f"  {what}: {value:.2f}x, below the target of {target:g}x on this machine"
          + (f" (hint: {hint})" if hint else "") + "; a busy machine also slows kernels down")
    return False
