"""Machinery for the LLM labs (06 AWQ, 08 QLoRA): token streams, perplexity
over a token budget, calibration captures, the layer groups of a Llama block,
greedy generation, decode speed, model-size accounting and metric recording.

None of this is a graded technique: the labs' students write quantization,
the scale search, folding, NF4 and LoRA themselves; this module feeds them
data and measures the result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "token_ids",
    "sample_windows",
    "perplexity",
    "capture_block_inputs",
    "input_abs_mean",
    "block_output",
    "LayerGroup",
    "block_linears",
    "llama_layer_groups",
    "capture_group_inputs",
    "tie_channels",
    "tiny_llama",
    "generate",
    "linear_weight_params",
    "quantized_size_mib",
]


# ---------------------------------------------------------------- text as tokens

def token_ids(tokenizer, split: str, max_tokens: int | None = None) -> torch.Tensor:
    """Shakespeare ``split`` (calibration / eval / train, by play) as a 1-D
    LongTensor of token ids. With ``max_tokens`` it takes an equal share from
    the middle of each play, so every play counts and no play is judged on its
    title page and cast list alone."""
    from helpers.data import shakespeare_split, shakespeare_text

    plays = [tokenizer(shakespeare_text(p), return_tensors="pt").input_ids[0]
             for p in shakespeare_split(split)]
    if max_tokens is None:
        return torch.cat(plays)
    share = math.ceil(max_tokens / len(plays))
    parts = []
    for ids in plays:
        start = max(0, (len(ids) - share) // 2)
        parts.append(ids[start:start + share])
    return torch.cat(parts)[:max_tokens]


def sample_windows(ids: torch.Tensor, n: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``n`` random windows of ``seq_len`` tokens from the 1-D stream ``ids``:
    a LongTensor ``[n, seq_len]`` (calibration samples, training batches)."""
    if ids.numel() <= seq_len:
        raise ValueError(f"the token stream has {ids.numel()} tokens, fewer than seq_len={seq_len}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n,), generator=gen)
    return torch.stack([ids[s:s + seq_len] for s in starts.tolist()])


@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor, *, seq_len: int = 512,
               max_tokens: int | None = None, progress: bool = True, desc: str = "perplexity") -> float:
    """exp(mean next-token loss) of ``model`` on the 1-D stream ``ids``, cut
    into non-overlapping windows of ``seq_len`` tokens (the first token of a
    window is context only), over at most ``max_tokens`` tokens."""
    from tqdm.auto import tqdm

    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D token stream, got shape {tuple(ids.shape)}")
    if max_tokens is not None:
        ids = ids[:max_tokens]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    starts = [s for s in range(0, ids.numel(), seq_len) if ids.numel() - s >= 2]
    for s in tqdm(starts, desc=desc, disable=not progress, leave=False):
        window = ids[s:s + seq_len].unsqueeze(0).to(device)
        logits = model(window).logits[0, :-1].float()
        nll += nn.functional.cross_entropy(logits, window[0, 1:], reduction="sum").item()
        count += window.shape[1] - 1
    model.train(was_training)
    return math.exp(nll / count)


# ---------------------------------------------------------------- calibration captures

class _Stop(Exception):
    pass


@torch.no_grad()
def capture_block_inputs(model: nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The hidden states entering the first decoder block for ``input_ids``
    ``[B, T]``, and the keyword arguments (rotary position embeddings, mask,
    ...) the model passes to every block. Run block ``i`` on its input with
    ``block(hidden, **kwargs)`` to get the input of block ``i + 1``."""
    block = model.model.layers[0]
    captured = {}

    def hook(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        captured["kwargs"] = {k: v for k, v in kwargs.items()
                              if k not in ("hidden_states", "past_key_values", "past_key_value")}
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    kwargs = captured["kwargs"]
    kwargs["use_cache"] = False
    return captured["hidden"], kwargs


@torch.no_grad()
def input_abs_mean(model: nn.Module, input_ids: torch.Tensor, modules: dict[str, nn.Module],
                   batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Mean absolute value of each input channel of each module in
    ``modules`` (name -> module) over the tokens of ``input_ids`` ``[B, T]``:
    the activation statistics that calibration collects."""
    sums = {name: 0.0 for name in modules}
    counts = dict.fromkeys(modules, 0)
    handles = []
    for name, module in modules.items():
        def hook(mod, args, name=name):
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            sums[name] = sums[name] + x.abs().sum(0)
            counts[name] += x.shape[0]
        handles.append(module.register_forward_pre_hook(hook))
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            model(input_ids[start:start + batch_size], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {name: sums[name] / counts[name] for name in modules}


def block_output(block: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """Output hidden states of a decoder block (older transformers return a tuple)."""
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


@dataclass
class LayerGroup:
    """Linear layers of a Llama block that read the same input.

    ``prev`` produces that input (an RMSNorm or a Linear): a per-input-channel
    scale ``s`` of the linears can be folded into it. ``prev_channel[j]`` is
    the output channel of ``prev`` that feeds input channel ``j`` of the
    linears (the identity, except for ``o_proj`` under grouped-query
    attention where one ``v_proj`` channel feeds several heads). ``inspect``
    is the module whose output the scale search compares; after
    :func:`capture_group_inputs`, ``x`` holds the linears' calibration input
    and ``run(x)`` evaluates ``inspect`` on it.
    """
    name: str
    prev: nn.Module
    linears: list
    inspect: nn.Module
    prev_channel: torch.Tensor
    x: torch.Tensor | None = None
    inspect_kwargs: dict = field(default_factory=dict)

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inspect(x, **self.inspect_kwargs)
        return out[0] if isinstance(out, tuple) else out


def llama_layer_groups(block: nn.Module) -> list[LayerGroup]:
    """The four groups of a Llama decoder block, in execution order:
    ``qkv`` (after input_layernorm), ``o`` (after v_proj), ``gate_up`` (after
    post_attention_layernorm) and ``down`` (after up_proj)."""
    attn, mlp = block.self_attn, block.mlp
    hidden = attn.q_proj.in_features
    head_dim = attn.head_dim
    n_rep = attn.o_proj.in_features // attn.v_proj.out_features  # query heads per kv head
    o_in = torch.arange(attn.o_proj.in_features)
    # o_proj input channel h*head_dim + d reads v channel (h // n_rep)*head_dim + d
    o_prev = (o_in // head_dim // n_rep) * head_dim + o_in % head_dim
    return [
        LayerGroup("qkv", block.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], attn,
                   torch.arange(hidden)),
        LayerGroup("o", attn.v_proj, [attn.o_proj], attn.o_proj, o_prev),
        LayerGroup("gate_up", block.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], mlp,
                   torch.arange(hidden)),
        LayerGroup("down", mlp.up_proj, [mlp.down_proj], mlp.down_proj,
                   torch.arange(mlp.down_proj.in_features)),
    ]


@torch.no_grad()
def capture_group_inputs(block: nn.Module, groups: list[LayerGroup], hidden: torch.Tensor,
                         kwargs: dict) -> torch.Tensor:
    """Run ``block`` on ``hidden`` once, storing in each group its linears'
    input ``x`` and the keyword arguments of its ``inspect`` module. Returns
    the block's output (the next block's input)."""
    handles = []
    for g in groups:
        def grab(module, args, kw, g=g):
            if module is g.linears[0]:
                g.x = args[0]
            if module is g.inspect:
                g.inspect_kwargs = {k: v for k, v in kw.items() if k != "hidden_states"}
        handles.append(g.linears[0].register_forward_pre_hook(grab, with_kwargs=True))
        if g.inspect is not g.linears[0]:
            handles.append(g.inspect.register_forward_pre_hook(grab, with_kwargs=True))
    try:
        out = block_output(block, hidden, kwargs)
    finally:
        for h in handles:
            h.remove()
    return out


def tie_channels(values: torch.Tensor, prev_channel: torch.Tensor) -> torch.Tensor:
    """Average ``values`` (one per input channel) over the input channels fed
    by the same ``prev`` output channel, so a scale built from them can be
    folded into ``prev``. The identity when ``prev_channel`` is a permutation."""
    n_prev = int(prev_channel.max()) + 1
    sums = torch.zeros(n_prev, dtype=values.dtype).index_add_(0, prev_channel, values)
    counts = torch.zeros(n_prev, dtype=values.dtype).index_add_(0, prev_channel, torch.ones_like(values))
    return (sums / counts)[prev_channel]


def tiny_llama(seed: int = 0, hidden: int = 192, intermediate: int = 320, layers: int = 2,
               heads: int = 6, kv_heads: int = 2, vocab: int = 96) -> nn.Module:
    """A small randomly initialised ``LlamaForCausalLM`` with SmolLM2's
    structure (grouped-query attention with 3 query heads per kv head, a
    hidden size that is not a multiple of 128) for fast tests. The norm
    weights are random too, so a scale folded into the wrong place shows."""
    from transformers import LlamaConfig, LlamaForCausalLM

    gen = torch.Generator().manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, max_position_embeddings=512,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # RMSNorm weights
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
    return model


# ---------------------------------------------------------------- generation and speed

@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int = 40) -> str:
    """Greedy continuation of ``prompt`` (deterministic, so before/after
    comparisons differ only because the model did)."""
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


# ---------------------------------------------------------------- size accounting

def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """name -> ``nn.Linear`` for every linear layer inside the decoder blocks
    (what the labs quantize; embeddings, norms and the tied head are not)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and ".layers." in f".{name}"}


def linear_weight_params(model: nn.Module) -> int:
    """Weights of :func:`block_linears` (embeddings, norms and the tied head
    are not counted)."""
    return sum(m.weight.numel() for m in block_linears(model).values())


def quantized_size_mib(model: nn.Module, w_bits: float | None, group_size: int = 128,
                       scale_bits: int = 16, zero_bits: int | None = 16,
                       fp32_params: int = 0) -> float:
    """Storage of ``model`` in MiB when the decoder linears are quantized to
    ``w_bits`` with one scale (and zero point, unless ``zero_bits`` is None)
    per ``group_size`` weights; everything else in fp16, plus ``fp32_params``
    weights kept at full precision (e.g. salient channels). ``w_bits=None``
    is the fp32 model."""
    total = sum(p.numel() for p in model.parameters())
    if w_bits is None:
        return total * 32 / 8 / 2**20
    quant = linear_weight_params(model)
    per_group = scale_bits + (zero_bits or 0)
    bits = quant * (w_bits + per_group / group_size) + (total - quant) * 16 + fp32_params * 32
    return bits / 8 / 2**20
