"""Lab 15's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

Each check re-runs the notebook's visible test and adds hidden cases. The
references below are written from the papers' formulas (DDPM, Ho et al. 2020,
with the posterior variance; DDIM, Song et al. 2021) and from dense torch
convolutions for SIGE (the ``sige`` package needs CUDA-era builds and is not a
dependency: the dense reference is exact up to float rounding). The sampling
loop gets ``helpers.diffusion.StepProbe`` as its step, a fixed function of its
inputs that ignores the noise, so the expected result never depends on the
student's random stream. The engine gets ``ConvStack`` models built in the
kernel from weights made here, and caches some of which differ from the
original activations far from the edit (a reused cache must stay reused).
"""
import math

import torch
import torch.nn.functional as F

from autograder.trusted import ModuleSpec, task
from helpers import diffusion
from helpers.checks import check, check_close, check_equal, check_shape

AB = diffusion.ALPHA_BAR


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _tensor(value, what, task_id):
    check(isinstance(value, torch.Tensor), f"{what} is a {type(value).__name__}, expected a torch tensor.",
          task=task_id)
    return value


# ---------------------------------------------------------------- references

def ref_ddpm(x_t, eps, ab_t, ab_prev, noise):
    beta = 1 - ab_t / ab_prev
    mean = (x_t.double() - beta / math.sqrt(1 - ab_t) * eps.double()) / math.sqrt(1 - beta)
    return (mean + math.sqrt(beta * (1 - ab_prev) / (1 - ab_t)) * noise.double()).float()


def ref_ddim(x_t, eps, ab_t, ab_prev, noise=None, eta=0.0):
    x0 = (x_t.double() - math.sqrt(1 - ab_t) * eps.double()) / math.sqrt(ab_t)
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
    out = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma ** 2, 0.0)) * eps.double()
    if sigma > 0:
        out = out + sigma * noise.double()
    return out.float()


@torch.no_grad()
def ref_sample(model, x_T, labels, timesteps, alpha_bar):
    x = x_T
    for i, t in enumerate(timesteps):
        ab_t = float(alpha_bar[t])
        ab_prev = float(alpha_bar[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        x = diffusion.probe_step(x, model(x, torch.full((len(x),), t), labels), ab_t, ab_prev)
    return x


def ref_mask(mask, k, s, p):
    h, w = mask.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = torch.zeros(ho, wo, dtype=torch.bool)
    for y in range(ho):
        for x in range(wo):
            y0, x0 = y * s - p, x * s - p
            out[y, x] = bool(mask[max(y0, 0):max(y0 + k, 0), max(x0, 0):max(x0 + k, 0)].any())
    return out


def ref_blocks(mask, block):
    h, w = mask.shape
    return [[by, bx] for by in range(h // block) for bx in range(w // block)
            if mask[by * block:(by + 1) * block, bx * block:(bx + 1) * block].any()]


def ref_gather(x, blocks, block, k, s, p):
    size = (block - 1) * s + k
    xp = F.pad(x, (p, p + size, p, p + size))
    if not blocks:
        return x.new_zeros(0, x.shape[1], size, size)
    return torch.stack([xp[0, :, by * block * s:by * block * s + size, bx * block * s:bx * block * s + size]
                        for by, bx in blocks])


def ref_scatter(cache, out, blocks, block):
    cache = cache.clone()
    for (by, bx), o in zip(blocks, out):
        cache[0, :, by * block:(by + 1) * block, bx * block:(bx + 1) * block] = o
    return cache


@torch.no_grad()
def ref_sige(stack, cache, x_new, mask, block):
    cache = [c.clone() for c in cache]
    cache[0] = x_new.clone()
    macs = 0
    for i, (conv, act) in enumerate(zip(stack.convs, stack.acts)):
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        mask = ref_mask(mask, k, s, p)
        blocks = ref_blocks(mask, block)
        if blocks:
            out = act(F.conv2d(ref_gather(cache[i], blocks, block, k, s, p), conv.weight, conv.bias, stride=s))
            cache[i + 1] = ref_scatter(cache[i + 1], out, blocks, block)
        macs += len(blocks) * block * block * conv.out_channels * conv.in_channels * k * k
    return cache, macs


# ---------------------------------------------------------------- Part 1

STEP_CASES = [(500, 499), (999, 998), (1, 0), (800, 300), (999, 0), (250, 125), (50, 10)]


@task("task_1_1_ddpm_step")
def ddpm_step(student):
    f = student.function("ddpm_step")
    for i, (t, tp) in enumerate(STEP_CASES + [(0, None), (300, None)]):
        g = _gen(10 + i)
        x, eps, z = (torch.randn(3, 1, 8, 8, generator=g) for _ in range(3))
        ab_t, ab_p = float(AB[t]), (float(AB[tp]) if tp is not None else 1.0)
        got = _tensor(f(x, eps, ab_t, ab_p, z), "ddpm_step(...)", "1.1")
        check_shape(got, x.shape, name="ddpm_step(...)", task="1.1")
        check_close(got, ref_ddpm(x, eps, ab_t, ab_p, z), rtol=1e-4, atol=1e-4,
                    name=f"ddpm_step from t={t} to {tp if tp is not None else 'x0 (alpha_bar_prev = 1)'}", task="1.1",
                    hint="beta = 1 - alpha_bar_t / alpha_bar_prev; sigma^2 = beta (1 - alpha_bar_prev) / (1 - alpha_bar_t)")
    # another schedule: the step must use only the two alpha_bar values it is given
    for ab_t, ab_p in [(0.3, 0.6), (0.05, 0.9), (0.7, 0.71)]:
        x, eps, z = (torch.randn(2, 1, 4, 4, generator=_gen(int(ab_t * 100))) for _ in range(3))
        check_close(_tensor(f(x, eps, ab_t, ab_p, z), "ddpm_step(...)", "1.1"), ref_ddpm(x, eps, ab_t, ab_p, z),
                    rtol=1e-4, atol=1e-4, name=f"ddpm_step with alpha_bar_t={ab_t}, alpha_bar_prev={ab_p}",
                    task="1.1", hint="use only the two alpha_bar values given, not the global schedule")


@task("task_1_2_ddim_step")
def ddim_step(student):
    f = student.function("ddim_step")
    for i, (t, tp) in enumerate(STEP_CASES + [(0, None), (700, None)]):
        g = _gen(30 + i)
        x, eps, z = (torch.randn(2, 1, 8, 8, generator=g) for _ in range(3))
        ab_t, ab_p = float(AB[t]), (float(AB[tp]) if tp is not None else 1.0)
        what = f"ddim_step from t={t} to {tp if tp is not None else 'x0'}"
        got = _tensor(f(x, eps, ab_t, ab_p), what, "1.2")
        check_close(got, ref_ddim(x, eps, ab_t, ab_p), rtol=1e-4, atol=1e-4, name=f"{what} (eta=0)", task="1.2",
                    hint="x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t); x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps")
        for eta in (1.0, 0.5):
            got = _tensor(f(x, eps, ab_t, ab_p, z, eta=eta), what, "1.2")
            check_close(got, ref_ddim(x, eps, ab_t, ab_p, z, eta), rtol=1e-4, atol=1e-4,
                        name=f"{what} (eta={eta})", task="1.2",
                        hint="sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev), "
                             "and the direction term is sqrt(1 - ab_prev - sigma^2) eps")
    x, eps, z = (torch.randn(2, 1, 4, 4, generator=_gen(99)) for _ in range(3))
    check_close(_tensor(f(x, eps, 0.2, 0.55, z, eta=1.0), "ddim_step", "1.2"), ref_ddpm(x, eps, 0.2, 0.55, z),
                rtol=1e-4, atol=1e-4, name="ddim_step with eta=1 vs the DDPM step", task="1.2")


def _unet_spec(seed):
    torch.manual_seed(seed)
    model = diffusion.TinyUNet(base=8, emb_dim=16).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)         # larger weights: eps depends visibly on t and the labels
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return model, ModuleSpec("helpers.diffusion.TinyUNet", {"base": 8, "emb_dim": 16}, state)


@task("task_1_3_sample")
def sample(student):
    f = student.function("sample")
    model, spec = _unet_spec(7)
    probe = ModuleSpec("helpers.diffusion.StepProbe")
    cosine = torch.cos((torch.arange(1000, dtype=torch.float64) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    cosine = (cosine / cosine[0] * 0.9999).clamp(1e-4, 0.9999)
    cases = [  # (timesteps, batch, alpha_bar, seed)
        ([999, 500, 0], 2, AB, 0),
        ([999], 3, AB, 1),
        (diffusion.spaced_timesteps(10), 4, AB, 2),
        ([700, 650, 300, 10], 2, AB, 3),
        ([500, 250], 3, AB, 4),
        ([999, 600, 200, 0], 2, cosine, 5),
        (list(range(20, -1, -1)), 2, cosine, 6),
    ]
    for ts, n, ab, seed in cases:
        g = _gen(100 + seed)
        x_T = torch.randn(n, 1, 8, 8, generator=g)
        labels = torch.randint(0, 10, (n,), generator=g)
        got = _tensor(f(spec, x_T, labels, ts, probe, ab, None), "sample(...)", "1.3")
        check_shape(got, x_T.shape, name="sample(...)", task="1.3")
        what = f"sample over timesteps {ts if len(ts) <= 5 else f'{ts[:3]} ... {ts[-1:]}'}" + \
               (" (another schedule)" if ab is not AB else "")
        check_close(got, ref_sample(model, x_T, labels, ts, ab), rtol=1e-4, atol=1e-4, name=what, task="1.3",
                    hint="call model(x, t, labels) at each t in order, with alpha_bar[t] and the next "
                         "timestep's alpha_bar (1.0 after the last), using the alpha_bar argument")


# ---------------------------------------------------------------- Part 2

MASK_CASES = [  # (h, w, k, s, p, density)
    (8, 8, 3, 1, 1, 0.05), (8, 8, 3, 2, 1, 0.05), (12, 16, 3, 1, 1, 0.1), (16, 16, 5, 1, 2, 0.03),
    (16, 12, 3, 2, 1, 0.1), (9, 9, 3, 2, 1, 0.1), (10, 10, 1, 1, 0, 0.2), (11, 13, 3, 1, 0, 0.05),
    (16, 16, 5, 2, 2, 0.02), (8, 8, 3, 1, 1, 0.0), (7, 7, 2, 2, 0, 0.2), (16, 16, 3, 2, 1, 1.0),
]


@task("task_2_1_downsample_mask")
def downsample_mask(student):
    f = student.function("downsample_mask")
    m = torch.zeros(8, 8, dtype=torch.bool)
    m[3, 4] = True
    for i, (h, w, k, s, p, d) in enumerate([(8, 8, 3, 1, 1, None), (8, 8, 3, 2, 1, None)] + MASK_CASES):
        if d is not None:
            m = torch.rand(h, w, generator=_gen(200 + i)) < d
            if d == 0.05 and not m.any():
                m[h // 2, w // 3] = True
            if i % 3 == 0:      # pixels on the borders too
                m[0, w - 1] = m[h - 1, 0] = True
        got = _tensor(f(m, k, s, p), "downsample_mask(...)", "2.1")
        exp = ref_mask(m, k, s, p)
        check_shape(got, exp.shape, name=f"downsample_mask of a {tuple(m.shape)} mask, k={k}, stride={s}, "
                                          f"padding={p}", task="2.1",
                    hint="H_out = (H + 2 padding - k) // stride + 1")
        check_equal(got.bool(), exp, name=f"downsample_mask of a {tuple(m.shape)} mask, k={k}, stride={s}, "
                                          f"padding={p}", task="2.1",
                    hint="output (y, x) changes when input rows s*y-p .. s*y-p+k-1 (same for columns) hold a change")


@task("task_2_2_active_blocks")
def active_blocks(student):
    f = student.function("active_blocks")
    m = torch.zeros(8, 12, dtype=torch.bool)
    m[0, 5] = m[7, 11] = True
    cases = [(m, 4)]
    for i, (h, w, b, d) in enumerate([(16, 16, 4, 0.02), (16, 32, 8, 0.01), (12, 12, 3, 0.05), (8, 8, 8, 0.02),
                                      (16, 16, 2, 0.1), (8, 8, 4, 0.0), (32, 16, 4, 1.0), (6, 10, 2, 0.08)]):
        cases.append((torch.rand(h, w, generator=_gen(300 + i)) < d, b))
    for m, b in cases:
        got = _tensor(f(m, b), "active_blocks(...)", "2.2")
        exp = ref_blocks(m, b)
        check_shape(got, (len(exp), 2), name=f"active_blocks of a {tuple(m.shape)} mask, block {b}", task="2.2")
        check_equal(got.long().tolist(), exp, name=f"active_blocks of a {tuple(m.shape)} mask, block {b}",
                    task="2.2", hint="(row, col) tile indices of tiles with a True, row-major")


GATHER_CASES = [  # (c, h, w, block, k, s, p)
    (1, 8, 8, 4, 3, 1, 1), (3, 16, 16, 4, 3, 1, 1), (2, 16, 16, 4, 3, 2, 1), (2, 16, 24, 8, 3, 1, 1),
    (4, 16, 16, 2, 5, 1, 2), (2, 32, 32, 4, 3, 2, 1), (3, 12, 12, 3, 1, 1, 0), (2, 16, 16, 4, 5, 2, 2),
    (1, 8, 8, 4, 3, 1, 0),
]


@task("task_2_3_gather")
def gather(student):
    f = student.function("gather", args_back=True)
    for i, (c, h, w, b, k, s, p) in enumerate(GATHER_CASES):
        g = _gen(400 + i)
        x = torch.randn(1, c, h, w, generator=g)
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        nby, nbx = ho // b, wo // b
        allb = [[by, bx] for by in range(nby) for bx in range(nbx)]
        pick = torch.randperm(len(allb), generator=g)[:max(1, len(allb) // 2)].sort().values.tolist()
        blocks = [allb[j] for j in pick]
        if i % 2 == 0:
            blocks = sorted(set(map(tuple, blocks)) | {(0, 0), (nby - 1, nbx - 1)})
            blocks = [list(t) for t in blocks]
        got, (x_after, *_) = f(x, torch.tensor(blocks), b, k, s, p)
        got = _tensor(got, "gather(...)", "2.3")
        size = (b - 1) * s + k
        what = f"gather of {len(blocks)} blocks of {b}x{b}, k={k}, stride={s}, padding={p}, input {h}x{w}"
        check_shape(got, (len(blocks), c, size, size), name=what, task="2.3",
                    hint="P = (block - 1) * stride + kernel_size: the footprint plus the halo")
        check_close(got, ref_gather(x, blocks, b, k, s, p), rtol=0, atol=1e-6, name=what, task="2.3",
                    hint="block (by, bx) starts at input row by*block*stride - padding; zeros outside the image")
        check_close(x_after, x, rtol=0, atol=0, name="the input after gather", task="2.3")
        w_ = torch.randn(2, c, k, k, generator=g)
        dense = F.conv2d(x, w_, stride=s, padding=p)
        conv = F.conv2d(got.float(), w_, stride=s)
        for j, (by, bx) in enumerate(blocks):
            check_close(conv[j], dense[0, :, by * b:(by + 1) * b, bx * b:(bx + 1) * b], rtol=1e-4, atol=1e-4,
                        name=f"conv of the gathered patch of block ({by}, {bx}) vs the full conv ({what})",
                        task="2.3")


@task("task_2_4_scatter")
def scatter(student):
    f = student.function("scatter_", args_back=True)
    for i, (c, h, w, b, n) in enumerate([(2, 4, 6, 2, 2), (3, 16, 16, 4, 5), (1, 8, 8, 8, 1), (4, 12, 8, 4, 6),
                                         (2, 8, 8, 2, 0), (2, 16, 32, 8, 8)]):
        g = _gen(500 + i)
        cache = torch.randn(1, c, h, w, generator=g)
        allb = [[by, bx] for by in range(h // b) for bx in range(w // b)]
        pick = torch.randperm(len(allb), generator=g)[:n].sort().values.tolist()
        blocks = [allb[j] for j in pick]
        out = torch.randn(len(blocks), c, b, b, generator=g)
        exp = ref_scatter(cache, out, blocks, b)
        got, (cache_after, *_) = f(cache, out, torch.tensor(blocks, dtype=torch.long).reshape(-1, 2), b)
        what = f"scatter_ of {len(blocks)} blocks of {b}x{b} into a {h}x{w} cache"
        check_close(_tensor(cache_after, "the cache", "2.4"), exp, rtol=0, atol=0, name=f"the cache after {what}",
                    task="2.4", hint="write into the cache tensor itself (in place), not into a copy")
        check_close(_tensor(got, "scatter_(...)", "2.4"), exp, rtol=0, atol=0, name=f"what {what} returns",
                    task="2.4")


SIGE_CASES = [  # (spec, size, block, mask box (y0, y1, x0, x1) or density, corrupt)
    ([(2, 4, 3, 1), (4, 4, 3, 2), (4, 3, 1, 1)], 32, 4, (5, 9, 20, 23), False),
    ([(1, 4, 3, 1), (4, 4, 3, 1), (4, 4, 3, 1)], 32, 4, (14, 18, 14, 18), False),    # dilation grows
    ([(3, 4, 3, 1), (4, 6, 3, 2), (6, 6, 3, 1), (6, 4, 3, 2)], 32, 2, (0, 3, 28, 32), False),   # corner edit
    ([(2, 4, 5, 1), (4, 4, 3, 1)], 24, 8, (10, 12, 3, 6), False),
    ([(2, 3, 3, 1), (3, 3, 3, 1)], 16, 4, (0, 0, 0, 0), False),                      # empty edit
    ([(1, 4, 3, 1), (4, 4, 3, 1), (4, 2, 3, 1)], 32, 4, (3, 6, 3, 6), True),         # reuse the cache
    ([(2, 4, 3, 1), (4, 4, 3, 2), (4, 4, 3, 1)], 32, 4, 0.01, True),
]


@task("task_2_5_sige_engine")
def sige_engine(student):
    f = student.function("sige_run", args_back=True)
    for i, (spec, size, b, box, corrupt) in enumerate(SIGE_CASES):
        torch.manual_seed(600 + i)
        stack = diffusion.ConvStack(spec).eval()
        state = {k: v.clone() for k, v in stack.state_dict().items()}
        g = _gen(600 + i)
        x = torch.randn(1, spec[0][0], size, size, generator=g)
        if isinstance(box, tuple):
            mask = torch.zeros(size, size, dtype=torch.bool)
            mask[box[0]:box[1], box[2]:box[3]] = True
        else:
            mask = torch.rand(size, size, generator=g) < box
        x_new = torch.where(mask, torch.randn(x.shape, generator=g), x)
        cache = stack.activations(x)
        if corrupt:     # cached values far from the edit that are not the original's: SIGE reuses them
            for c in cache[1:]:
                c[..., -c.shape[-2] // 4:, :] += 1.0
        exp_cache, exp_macs = ref_sige(stack, cache, x_new, mask, b)
        res, (_, cache_after, *_) = f(ModuleSpec("helpers.diffusion.ConvStack", {"spec": [list(s) for s in spec]},
                                                 state), [c.clone() for c in cache], x_new, mask, b)
        what = f"sige_run case {i + 1} (layers {spec}, {size}x{size}, block {b}" + \
               (", a cache that differs from the original far from the edit)" if corrupt else ")")
        check(type(res) in (tuple, list) and len(res) == 2, f"{what} returned a {type(res).__name__}, "
              "expected (output, macs).", task="2.5")
        out, macs = res
        out = _tensor(out, what, "2.5")
        check_close(out, exp_cache[-1], rtol=1e-4, atol=1e-4, name=f"the output of {what}", task="2.5",
                    hint="dilate the mask at every layer, gather with the halo from the UPDATED cache, "
                         "and reuse (never recompute) what lies outside the active blocks")
        if not corrupt:
            with torch.no_grad():
                check_close(out, stack(x_new), rtol=1e-4, atol=1e-4, name=f"{what} vs full recomputation",
                            task="2.5")
        check(type(cache_after) is list and len(cache_after) == len(cache),
              f"{what}: the cache is no longer a list of {len(cache)} tensors", task="2.5")
        for j, (c_got, c_exp) in enumerate(zip(cache_after, exp_cache)):
            check_close(_tensor(c_got, f"cache[{j}]", "2.5"), c_exp, rtol=1e-4, atol=1e-4,
                        name=f"cache[{j}] after {what}", task="2.5",
                        hint="update the cached activations in place: cache[0] <- x_new, then every layer's blocks")
        check(isinstance(macs, int) and not isinstance(macs, bool),
              f"{what}: macs is a {type(macs).__name__}, expected an int.", task="2.5")
        check_equal(macs, exp_macs, name=f"the MACs of {what}", task="2.5",
                    hint="per layer: active blocks * block^2 * C_out * C_in * k^2 (outputs computed, not the halo)")
