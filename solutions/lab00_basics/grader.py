"""Lab 00's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

Each check re-runs the notebook's visible test on the grader's side and adds
the hidden cases. Reference values come from torch and ``helpers.profile``
computed here, never from the student's kernel.
"""
import math

import torch
from torch import nn

from autograder.trusted import ModuleSpec, task
from helpers import models, profile
from helpers.checks import check, check_equal, check_close, check_in_range


def _cnn():
    torch.manual_seed(0)
    return models.DigitsCNN(channels=(8, 16)), torch.zeros(1, 1, 16, 16)


@task("task_1_1_output_size")
def output_size(student):
    f = student.function("conv2d_output_size")
    check_equal(f(16, 3, padding=1), 16, name="conv2d_output_size(16, 3, padding=1)", task="1.1")
    check_equal(f(16, 2, stride=2), 8, name="conv2d_output_size(16, 2, stride=2) (a 2x2 max-pool)", task="1.1")
    for h, k, s, p, d in [(7, 3, 2, 0, 1), (32, 5, 3, 2, 1), (15, 3, 1, 2, 2), (224, 7, 2, 3, 1), (9, 4, 2, 1, 3)]:
        want = nn.functional.conv2d(torch.zeros(1, 1, h, 1), torch.zeros(1, 1, k, 1), stride=(s, 1),
                                    padding=(p, 0), dilation=(d, 1)).shape[2]
        got = f(h, k, stride=s, padding=p, dilation=d)
        check(type(got) is int, f"conv2d_output_size returned a {type(got).__name__}, expected an int "
              "(use integer floor division //)", task="1.1")
        check_equal(got, want, name=f"conv2d_output_size({h}, {k}, stride={s}, padding={p}, dilation={d})",
                    task="1.1", hint="floor division after subtracting the dilated kernel extent")


@task("task_1_2_param_count")
def param_count(student):
    conv, linear = student.function("conv2d_params"), student.function("linear_params")
    model, _ = _cnn()
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Conv2d):
            mine = conv(layer.in_channels, layer.out_channels, layer.kernel_size[0], groups=layer.groups,
                        bias=layer.bias is not None)
        elif isinstance(layer, nn.Linear):
            mine = linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        else:
            continue
        check_equal(mine, sum(p.numel() for p in layer.parameters()), name=f"parameters of {name}", task="1.2")
    check_equal(conv(32, 32, 3, groups=32, bias=True), 32 * 9 + 32, name="a depthwise 3x3 conv (groups=32)",
                task="1.2", hint="with groups, each filter sees only c_in / groups input channels")
    check_equal(conv(64, 128, 1, bias=False), 64 * 128, name="a 1x1 conv without bias", task="1.2")
    check_equal(conv(100_000, 200_000, 7, groups=4), 200_000 * 25_000 * 49 + 200_000,
                name="a huge grouped conv", task="1.2", hint="count from the shapes, do not build the layer")
    check_equal(linear(1_000_000, 3_000_000, bias=False), 3 * 10**12, name="a huge linear layer", task="1.2")
    check_equal(linear(7, 5), 40, name="linear_params(7, 5)", task="1.2")


@task("task_1_3_mac_count")
def mac_count(student):
    conv, linear = student.function("conv2d_macs"), student.function("linear_macs")
    model, example = _cnn()
    profiled = {r.name: r for r in profile.profile_layers(model, example)}
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Conv2d):
            h_out, w_out = profiled[name].output_shape[2:]
            mine = conv(layer.in_channels, layer.out_channels, layer.kernel_size[0], h_out, w_out, groups=layer.groups)
        elif isinstance(layer, nn.Linear):
            mine = linear(layer.in_features, layer.out_features)
        else:
            continue
        check_equal(mine, profiled[name].macs, name=f"MACs of {name}", task="1.3")
    check_equal(conv(32, 32, 3, 56, 56, groups=32), 32 * 56 * 56 * 9, name="MACs of a depthwise conv", task="1.3",
                hint="each output sees c_in / groups input channels")
    check_equal(conv(3, 64, 7, 112, 56), 64 * 112 * 56 * 3 * 49, name="MACs with h_out != w_out", task="1.3")
    check_equal(conv(10_000, 10_000, 3, 1_000, 1_000), 10**8 * 10**6 * 9, name="MACs of a huge conv", task="1.3")
    check_equal(linear(4096, 11008), 4096 * 11008, name="linear_macs(4096, 11008)", task="1.3")


@task("task_2_1_model_size")
def model_size(student):
    f = student.function("model_size_kib")
    model, _ = _cnn()
    check_close(f(profile.count_params(model), 32), profile.model_size_bytes(model, 32) / 1024,
                name="32-bit size", task="2.1")
    check_close(f(1024, 8), 1.0, name="model_size_kib(1024, 8)", task="2.1", hint="8 bits are one byte")
    check_close(f(3000, 4), 3000 * 4 / 8 / 1024, name="model_size_kib(3000, 4)", task="2.1")
    check_close(f(7, 3), 7 * 3 / 8 / 1024, name="model_size_kib(7, 3)", task="2.1",
                hint="do not round to whole bytes or KiB")
    check_close(f(135_000_000, 16), 135e6 * 2 / 1024, name="a 135M-parameter model at 16 bits", task="2.1")


@task("task_2_2_peak_memory")
def peak_memory(student):
    f = student.function("peak_activation_bytes")
    model, example = _cnn()
    rows = profile.profile_layers(model, example)
    chain = [tuple(example.shape)] + [tuple(r.output_shape) for r in rows if r.kind not in ("ReLU",)]
    check_equal(f(chain), profile.peak_activation_bytes(model, example), name="peak activation bytes of the CNN",
                task="2.2")
    check_equal(f([(1, 4), (1, 2)], bits=8), 6, name="peak_activation_bytes([(1, 4), (1, 2)], bits=8)", task="2.2")
    check_equal(f([(1, 3, 8, 8), (1, 16, 8, 8), (1, 2, 4, 4), (1, 64, 4, 4)]), (16 * 64 + 3 * 64) * 4,
                name="a chain whose peak is not at the largest single tensor's neighbour", task="2.2",
                hint="the peak is the largest sum of two consecutive activations")
    check_equal(f([(2, 5), (2, 9), (2, 1)], bits=4), (10 + 18) * 4 // 8, name="4-bit activations", task="2.2")
    check_equal(f([(1, 1), (1, 100), (1, 100), (1, 1)], bits=8), 200, name="two large neighbours", task="2.2")
    sizes = [math.prod(s) for s in chain]
    check_equal(f(list(reversed(chain)), bits=16), max(a + b for a, b in zip(sizes, sizes[1:])) * 2,
                name="the CNN's chain reversed, at 16 bits", task="2.2")


@task("task_3_1_latency")
def latency(student):
    timer = student.function("measure_latency", args_back=True)
    got, (probe, *_) = timer(ModuleSpec("helpers.probes.SleepProbe", {"schedule": [0.01]}), warmup=2, repeats=5)
    check(probe["calls"] == 7, f"fn was called {probe['calls']} times, expected warmup + repeats = 7", task="3.1")
    check_in_range(got, 0.009, 0.05, name="measured latency of a 10 ms sleep", task="3.1")
    # The first (warm-up) call is slow and one timed call is an outlier: the median ignores it, the mean does not.
    schedule = [0.4, 0.002, 0.002, 0.002, 0.4, 0.002]  # the mean of the 7 timed calls is about 0.06 s
    got, (probe, *_) = timer(ModuleSpec("helpers.probes.SleepProbe", {"schedule": schedule}), warmup=1, repeats=7)
    check_in_range(got, 0.0015, 0.03, name="latency with a slow warm-up call and one outlier", task="3.1",
                   hint="skip the warm-up calls when timing and return the median, not the mean")
    check(probe["calls"] == 8, f"fn was called {probe['calls']} times, expected 8", task="3.1")


@task("task_3_2_pareto")
def pareto(student):
    f = student.function("pareto_front")

    def same(got, want, name):
        check(type(got) is list, f"pareto_front returned a {type(got).__name__}, expected a list", task="3.2")
        check_equal([tuple(p) for p in got], want, name=name, task="3.2",
                    hint="a model is dominated by one at least as cheap and as accurate, strictly better in one")

    same(f([(1, 50.0), (2, 40.0), (3, 90.0)]), [(1, 50.0), (3, 90.0)], "pareto_front([(1, 50), (2, 40), (3, 90)])")
    same(f([(5, 10.0), (1, 10.0), (3, 30.0), (4, 20.0), (9, 99.0), (2, 5.0)]),
         [(1, 10.0), (3, 30.0), (9, 99.0)], "pareto_front of six models")
    same(f([(2, 70.0), (2, 80.0)]), [(2, 80.0)], "equal cost, different accuracy")
    same(f([(3, 60.0)]), [(3, 60.0)], "a single model")
    same(f([]), [], "no models")
