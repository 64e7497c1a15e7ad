"""Lab 14's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

Each check re-runs the notebook's visible test and adds hidden cases: other
shapes, several clips in a batch, odd channel counts (``fold = C // fold_div``,
including ``fold = 0``), ``fold_div`` 8, 4 and 2, one-frame clips. Inputs are
built here with fixed seeds; expected values come from the references below
(the TSM paper's ``ops/temporal_shift.py`` semantics), from torch's own
``FlopCounterMode`` (MACs = FLOPs / 2) for the counter, and from a causal
offline forward computed here for online TSM. Models reach the kernel as
``ModuleSpec("helpers.video....", kwargs, state)`` built from the state made here.
"""
import torch
from torch.utils.flop_counter import FlopCounterMode

from autograder.trusted import ModuleSpec, ModuleState, Ref, StudentError, task
from helpers import video
from helpers.checks import check, check_close, check_equal, check_shape


# ---------------------------------------------------------------- references

def ref_shift(x, n_segment, fold_div=8, causal=False):
    """The TSM paper's shift (``ops/temporal_shift.py``), and its causal variant."""
    nt, c, h, w = x.shape
    x = x.reshape(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    if causal:
        out[:, 1:, :fold] = x[:, :-1, :fold]
        out[:, :, fold:] = x[:, :, fold:]
    else:
        out[:, :-1, :fold] = x[:, 1:, :fold]
        out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
        out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.reshape(nt, c, h, w)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _tensor(value, what, task_id):
    check(isinstance(value, torch.Tensor), f"{what} is a {type(value).__name__}, expected a torch tensor.",
          task=task_id)
    return value.float()


def _pair(value, what, task_id):
    check(type(value) in (tuple, list) and len(value) == 2,
          f"{what} returned a {type(value).__name__}"
          f"{f' of {len(value)} values' if type(value) in (tuple, list) else ''}, expected a pair.", task=task_id)
    return value


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _randomize(model, seed):
    """Random weights and batch-norm statistics, so that every layer matters."""
    g = _gen(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(0.5 + torch.rand(t.shape, generator=g))
                elif name.endswith("weight") and t.dim() == 1:
                    t.copy_(0.5 + torch.rand(t.shape, generator=g))
                else:
                    t.copy_(0.3 * torch.randn(t.shape, generator=g))
    return model.eval()


# ---------------------------------------------------------------- Part 1

@task("task_1_1_consensus")
def consensus(student):
    f = student.function("tsn_consensus")
    logits = torch.arange(12.0).view(6, 2)
    got = _tensor(f(logits, 3), "tsn_consensus(...)", "1.1")
    check_shape(got, (2, 2), name="tsn_consensus of 2 clips x 3 frames", task="1.1")
    check_close(got, torch.tensor([[2.0, 3.0], [8.0, 9.0]]), name="tsn_consensus(arange(12).view(6, 2), 3)",
                task="1.1", hint="frames of one clip are consecutive rows")
    for n, t, k, seed in [(3, 8, 4, 0), (1, 5, 7, 1), (4, 1, 3, 2), (2, 16, 10, 3), (5, 2, 1, 4)]:
        x = torch.randn(n * t, k, generator=_gen(seed))
        got = _tensor(f(x, t), "tsn_consensus(...)", "1.1")
        check_shape(got, (n, k), name=f"tsn_consensus of {n} clips x {t} frames, {k} classes", task="1.1")
        check_close(got, x.view(n, t, k).mean(1), rtol=1e-5, atol=1e-6,
                    name=f"tsn_consensus of {n} clips x {t} frames", task="1.1",
                    hint="reshape to [N, T, K] (clip-major) and average over the frames")


# ---------------------------------------------------------------- Part 2

SHIFT_CASES = [  # (clips, frames, channels, h, w, fold_div)
    (2, 8, 16, 3, 3, 8),
    (1, 8, 12, 2, 2, 8),    # fold = 1 (12 / 8 = 1.5 rounds up)
    (3, 4, 9, 2, 3, 4),     # odd channels, fold = 2 (9 / 4 = 2.25 rounds up with ceil)
    (1, 6, 7, 1, 1, 8),     # fold = 0: nothing moves
    (2, 1, 8, 2, 2, 4),     # one frame: the shifted channels are all zeros
    (1, 5, 10, 4, 4, 2),    # fold_div = 2: every channel is shifted
    (2, 3, 3, 1, 1, 2),     # fold = 1 of 3 channels
    (4, 2, 8, 1, 2, 4),
]


@task("task_2_1_temporal_shift")
def temporal_shift(student):
    f = student.function("temporal_shift", args_back=True)
    x = 10 * torch.arange(4.0).view(4, 1, 1, 1) + torch.arange(8.0).view(1, 8, 1, 1)
    for causal in (False, True):
        got, (after, *_) = f(x, 4, fold_div=4, causal=causal)
        got = _tensor(got, "temporal_shift(...)", "2.1")
        check_shape(got, x.shape, name="temporal_shift of 4 frames x 8 channels", task="2.1")
        check_equal(got, ref_shift(x, 4, 4, causal), name=f"temporal_shift of the visible clip (causal={causal})",
                    task="2.1", hint="shift, do not roll: the frame at the end gets zeros"
                    + ("; causal: frame t sees t-1" if causal else "; channels [0, fold) come from frame t+1"))
        check_equal(after, x, name="the input after temporal_shift", task="2.1", hint="return a new tensor")
    got = f(torch.ones(2, 12, 1, 1), 2)[0]
    check_equal(_tensor(got, "temporal_shift(...)", "2.1"), ref_shift(torch.ones(2, 12, 1, 1), 2),
                name="temporal_shift(ones(2, 12, 1, 1), 2) (default fold_div = 8)", task="2.1")
    for i, (n, t, c, h, w, fd) in enumerate(SHIFT_CASES):
        x = torch.randn(n * t, c, h, w, generator=_gen(100 + i))
        for causal in (False, True):
            got, (after, *_) = f(x, t, fold_div=fd, causal=causal)
            got = _tensor(got, "temporal_shift(...)", "2.1")
            what = f"temporal_shift of {n} clip(s) x {t} frames, {c} channels, fold_div={fd}, causal={causal}"
            check_shape(got, x.shape, name=what, task="2.1")
            check_equal(got, ref_shift(x, t, fd, causal), name=what, task="2.1",
                        hint=f"fold = C // fold_div = {c // fd}; frames of one clip are consecutive rows "
                             "(reshape to [N, T, C, H, W]); zeros at the first/last frame")
            check_equal(after, x, name=f"the input after {what}", task="2.1", hint="return a new tensor")


BLOCK_CASES = [  # (clips, frames, channels, h, w, fold_div, causal)
    (2, 3, 4, 2, 2, 4, False),
    (2, 4, 8, 3, 3, 4, False),
    (1, 8, 16, 2, 2, 8, True),
    (3, 3, 6, 2, 1, 2, False),
    (1, 5, 12, 2, 2, 8, False),
]


@task("task_2_2_residual_shift")
def residual_shift(student):
    for i, (n, t, c, h, w, fd, causal) in enumerate(BLOCK_CASES):
        layers = [("conv2d", c, c, 3, 1, 1, 1, True), ("relu",), ("conv2d", c, c, 1, 1, 0, 1, False)]
        torch.manual_seed(200 + i)
        net = video.layer_stack(layers)
        x = torch.randn(n * t, c, h, w, generator=_gen(300 + i))
        got = student.call("helpers.video.apply_block", Ref("ResidualShift"),
                           ModuleSpec("helpers.video.layer_stack", {"layers": layers}, _state(net)),
                           t, fd, causal, x)
        got = _tensor(got, "ResidualShift(...)(x)", "2.2")
        what = f"ResidualShift on {n} clip(s) x {t} frames, {c} channels, fold_div={fd}, causal={causal}"
        check_shape(got, x.shape, name=what, task="2.2")
        with torch.no_grad():
            want = x + net(ref_shift(x, t, fd, causal))
        check_close(got, want, rtol=1e-4, atol=1e-5, name=what, task="2.2",
                    hint="x + net(temporal_shift(x, n_segment, fold_div, causal)): shift only the branch's input, "
                         "with the block's own fold_div and causal flag")


ONLINE_CASES = [  # (clips, frames, channels, h, w, fold_div)
    (1, 5, 16, 3, 3, 8),
    (3, 4, 9, 2, 2, 4),     # fold = 2
    (2, 3, 7, 2, 3, 8),     # fold = 0
    (2, 6, 10, 1, 1, 2),    # fold = 5
    (1, 8, 12, 2, 2, 8),    # fold = 1
]


@task("task_2_3_online_shift")
def online_shift(student):
    f = student.function("online_shift", args_back=True)
    for i, (n, t, c, h, w, fd) in enumerate(ONLINE_CASES):
        clip = torch.randn(n, t, c, h, w, generator=_gen(400 + i))
        want = ref_shift(clip.reshape(n * t, c, h, w), t, fd, causal=True).reshape(n, t, c, h, w)
        fold = c // fd
        cache = None
        for step in range(t):
            frame = clip[:, step].contiguous()
            res, (after, *_) = f(frame, cache, fold_div=fd)
            out, new_cache = _pair(res, "online_shift", "2.3")
            what = f"frame {step} of {n} clip(s) x {t} frames, {c} channels, fold_div={fd}"
            out = _tensor(out, f"the shifted features ({what})", "2.3")
            new_cache = _tensor(new_cache, f"the cache ({what})", "2.3")
            check_shape(out, frame.shape, name=f"the shifted features, {what}", task="2.3")
            check_shape(new_cache, (n, fold, h, w), name=f"the cache, {what}", task="2.3",
                        hint=f"the cache holds channels [0, fold) with fold = C // fold_div = {fold}")
            check_close(out, want[:, step], rtol=0, atol=1e-6, name=f"the shifted features, {what}", task="2.3",
                        hint="channels [0, fold) come from the previous frame's cache (zeros at the first frame); "
                             "use the cache before replacing it")
            check_close(new_cache, frame[:, :fold], rtol=0, atol=1e-6, name=f"the cache, {what}", task="2.3",
                        hint="the new cache is this frame's own channels [0, fold)")
            check_equal(after, frame, name=f"the input after online_shift ({what})", task="2.3",
                        hint="do not modify x in place")
            cache = new_cache
    # A cache given by the caller is what goes into channels [0, fold).
    x = torch.randn(2, 8, 2, 2, generator=_gen(499))
    given = torch.randn(2, 2, 2, 2, generator=_gen(500))
    out, _ = _pair(f(x, given, fold_div=4)[0], "online_shift", "2.3")
    check_close(_tensor(out, "the shifted features", "2.3"), torch.cat([given, x[:, 2:]], 1), rtol=0, atol=1e-6,
                name="online_shift(x, cache, fold_div=4) with a given cache", task="2.3")


# ---------------------------------------------------------------- Part 3

def _oracle(model, example):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


COUNTER_STACKS = [  # (layers, example shape)
    ([("conv3d", 2, 4, 3, 1, 1, 1, True), ("flatten",), ("linear", 4 * 3 * 5 * 5, 3, True)], (1, 2, 3, 5, 5)),
    ([("conv3d", 4, 8, [1, 3, 3], [1, 2, 2], [0, 1, 1], 2, True), ("relu",),
      ("conv3d", 8, 6, [3, 1, 1], 1, [1, 0, 0], 1, False), ("bn3d", 6)], (2, 4, 5, 9, 9)),
    ([("conv2d", 6, 12, 3, 2, 1, 3, False), ("bn2d", 12), ("relu",), ("conv2d", 12, 12, 3, 1, 1, 12, True),
      ("conv2d", 12, 5, 1, 1, 0, 1, True)], (3, 6, 11, 7)),
    ([("linear", 5, 7, True), ("relu",), ("linear", 7, 2, False)], (3, 4, 5)),
    ([("conv3d", 3, 6, [3, 5, 5], [2, 1, 1], [1, 2, 2], 3, True), ("identity",)], (1, 3, 4, 6, 6)),
]


@task("task_3_1_count_macs")
def count_macs(student):
    f = student.function("count_macs_params")

    def same(spec, model, example, what):
        got = _pair(f(spec, example), "count_macs_params", "3.1")
        for value, name in zip(got, ("MACs", "parameters")):
            check(type(value) is int, f"count_macs_params returned {name} as a {type(value).__name__}, "
                  "expected an int.", task="3.1")
        macs, params = _oracle(model, example)
        check_equal(got[0], macs, name=f"MACs of {what}", task="3.1",
                    hint="per output element: (c_in / groups) x the product of ALL kernel dimensions "
                         "(3 for a Conv3d); a Linear layer: in_features per output element, leading dims included")
        check_equal(got[1], params, name=f"parameters of {what}", task="3.1",
                    hint="every parameter of the model, biases and batch norm included")

    for i, (layers, shape) in enumerate(COUNTER_STACKS):
        torch.manual_seed(i)
        model = video.layer_stack(layers)
        same(ModuleSpec("helpers.video.layer_stack", {"layers": layers}, _state(model)), model,
             torch.randn(*shape, generator=_gen(600 + i)), f"a model of {', '.join(l[0] for l in layers)} "
             f"on an input {shape}")
    clip = torch.rand(1, 8, 1, 20, 20, generator=_gen(700))
    for kwargs in ({"channels": [8, 16, 16], "n_segment": 8}, {"channels": [5, 7, 6], "n_segment": 8}):
        model = video.video_net(**kwargs)
        same(ModuleSpec("helpers.video.video_net", kwargs), model, clip, f"a VideoNet (TSN) {kwargs}")
        model3d = video.Conv3DNet(**kwargs).eval()
        same(ModuleSpec("helpers.video.Conv3DNet", kwargs), model3d, clip, f"a Conv3DNet {kwargs}")


# ---------------------------------------------------------------- Part 4

def causal_reference(model, clips, fold_div):
    """Per-frame logits [N, T, K] of the offline causal TSM with the weights of ``model``."""
    n, t = clips.shape[:2]
    with torch.no_grad():
        x = model.stem(clips.flatten(0, 1))
        for block, trans in zip(model.blocks, model.transitions):
            x = trans(x + block.net(ref_shift(x, t, fold_div, causal=True)))
        return model.head(x).view(n, t, -1)


def cache_budget(model, frame, fold_div):
    """Values an online cache needs: ``fold`` channels of one frame at each block's input."""
    total = 0
    with torch.no_grad():
        x = model.stem(frame)
        for block, trans in zip(model.blocks, model.transitions):
            n, c, h, w = x.shape
            total += n * (c // fold_div) * h * w
            x = trans(x + block.net(x))
    return total


def _numel(value):
    if isinstance(value, torch.Tensor):
        return value.numel()
    if type(value) in (list, tuple):
        return sum(_numel(v) for v in value)
    if type(value) is dict:
        return sum(_numel(v) for v in value.values())
    return 0


def _check_stream(student, spec, model, clips, fold_div, what):
    step = student.function("online_step")
    want = causal_reference(model, clips, fold_div)
    budget = cache_budget(model, clips[:, 0], fold_div)
    caches = None
    for t in range(clips.shape[1]):
        logits, caches = _pair(step(spec, clips[:, t].contiguous(), caches, fold_div=fold_div), "online_step", "4.1")
        logits = _tensor(logits, f"the logits at frame {t}", "4.1")
        check_shape(logits, want[:, t].shape, name=f"the logits at frame {t} ({what})", task="4.1")
        check_close(logits, want[:, t], rtol=1e-4, atol=1e-4,
                    name=f"online logits at frame {t} vs the offline causal model ({what})", task="4.1",
                    hint="one cache per block, carried from frame to frame; x + block.net(shifted x), "
                         "then the block's transition")
        held = _numel(caches)
        check(held <= budget, f"after frame {t} ({what}) the caches hold {held} values, but online TSM needs only "
              f"{budget} (fold = C // fold_div channels of the last frame at each block).", task="4.1",
              hint="do not buffer past frames and recompute: cache the shifted channels of one frame per block")


@task("task_4_1_online_tsm")
def online_tsm(student):
    # The notebook's own causal model and first test clip (the visible test), recomputed here; when the
    # notebook has no trained causal model (its training cell needs Tasks 2.1-2.2), the hidden cases decide.
    try:
        state = student.value("causal_model")
    except StudentError:
        state = None
    if isinstance(state, ModuleState):
        model = video.video_net()
        model.load_state_dict(state.state)
        clip = student.value("test_clips")[:1].float()
        _check_stream(student, Ref("causal_model"), model, clip, 8, "the notebook's causal model, test clip 0")
    cases = [  # (VideoNet kwargs, clips, size, fold_div)
        ({"channels": [8, 16, 16], "n_segment": 8, "n_classes": 4}, 2, 20, 8),
        ({"channels": [7, 9, 12], "n_segment": 5, "n_classes": 3}, 1, 16, 4),
        ({"channels": [12, 6, 10], "n_segment": 6, "n_classes": 5}, 3, 12, 2),
        ({"channels": [16, 16, 8], "n_segment": 4, "n_classes": 4}, 2, 24, 8),
    ]
    for i, (kwargs, n, size, fd) in enumerate(cases):
        model = _randomize(video.video_net(**kwargs), 800 + i)
        clips = torch.rand(n, kwargs["n_segment"], 1, size, size, generator=_gen(900 + i))
        _check_stream(student, ModuleSpec("helpers.video.video_net", kwargs, _state(model)), model, clips, fd,
                      f"{n} clip(s) of {kwargs['n_segment']} frames {size}x{size}, channels {kwargs['channels']}, "
                      f"fold_div={fd}")
