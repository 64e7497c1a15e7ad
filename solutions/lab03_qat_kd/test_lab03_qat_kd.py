"""Lab 03's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab03_qat_kd`` or ``-m lab03_qat_kd``)."""
import pytest

from autograder.labtest import lab_tests

# The set-up cell with tiny data and one short epoch: every training cell runs in a second.
PREAMBLE = """
import copy
import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from helpers import figures
from helpers.compression import digits_accuracy, weight_layers
from helpers.data import digits_loaders
from helpers.models import VGGDigits, load_baseline
from helpers.train import seed_everything, train


class plots:
    @staticmethod
    def plot_xy(*args, **kwargs):
        return None


SEED = 0
seed_everything(SEED)
TRAIN_LIMIT, QAT_EPOCHS, BITS = 64, 1, [8, 4, 3, 2]
loaders = digits_loaders(size=16, train_limit=TRAIN_LIMIT, seed=SEED)
LABELLED_IMAGES, KD_EPOCHS = 16, 1
STUDENT_CFG = (8, "M", 16, "M", 16, "M")
labelled_loader = digits_loaders(size=16, train_limit=LABELLED_IMAGES, batch_size=16, seed=SEED)["train"]
transfer_loader = digits_loaders(size=16, train_limit=32, batch_size=16, seed=SEED)["train"]
ALONE_EPOCHS = 2
teacher = load_baseline()
fp32_acc = digits_accuracy(teacher)
"""
LAB = "lab03_qat_kd"
pytestmark = pytest.mark.lab03_qat_kd

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    "fake quantize: torch.round alone (no STE)": (
        "task_1_1_fake_quantize_code", "return x * inside + (x_q - x * inside).detach()", "return x_q",
        "task_1_1_fake_quantize"),
    "fake quantize: the STE passes the gradient where clamped": (
        "task_1_1_fake_quantize_code", "return x * inside + (x_q - x * inside).detach()",
        "return x + (x_q - x).detach()", "task_1_1_fake_quantize"),
    "fake quantize: unsigned range": (
        "task_1_1_fake_quantize_code", "qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1",
        "qmin, qmax = 0, 2 ** bits - 1", "task_1_1_fake_quantize"),
    "fake quantize: zero point not subtracted back": (
        "task_1_1_fake_quantize_code", "(q.clamp(qmin, qmax) - zero_point) * scale", "q.clamp(qmin, qmax) * scale",
        "task_1_1_fake_quantize"),
    "fake quantize: the output detached": (
        "task_1_1_fake_quantize_code", "return x * inside + (x_q - x * inside).detach()", "return x_q.detach()",
        "task_1_1_fake_quantize"),
    # The obvious helpers call answers nothing: the Triton kernel is forward only (no gradient).
    "fake quantize: the helpers' Triton kernel instead of your own": (
        "task_1_1_fake_quantize_code", "return x * inside + (x_q - x * inside).detach()",
        "from helpers.kernels.triton.fake_quant import quantize_dequantize\n"
        "    return quantize_dequantize(x, scale, zero_point, bits, signed=True)[0]", "task_1_1_fake_quantize"),
    "prepare_qat: one scale per tensor": (
        "task_1_2_prepare_qat_code", "w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).clamp(min=1e-8)",
        "w.detach().abs().max().clamp(min=1e-8).expand(w.shape[0])", "task_1_2_prepare_qat"),
    "prepare_qat: works on the input model": (
        "task_1_2_prepare_qat_code", "    model = copy.deepcopy(model)\n", "", "task_1_2_prepare_qat"),
    "prepare_qat: 2**bits - 1 as qmax": (
        "task_1_2_prepare_qat_code", "qmax = 2 ** (self.bits - 1) - 1", "qmax = 2 ** self.bits - 1",
        "task_1_2_prepare_qat"),
    "prepare_qat: no floor for a zero channel": (
        "task_1_2_prepare_qat_code", ".amax(dim=1).clamp(min=1e-8)", ".amax(dim=1)", "task_1_2_prepare_qat"),
    "prepare_qat: convolutions only": (
        "task_1_2_prepare_qat_code", "for layer in weight_layers(model).values():",
        "for layer in [m for m in model.modules() if isinstance(m, nn.Conv2d)]:", "task_1_2_prepare_qat"),
    "ptq vs qat: PTQ measured on the trained model": (
        "task_1_3_ptq_vs_qat_code", "qat_models[bits], qat_acc[bits] = model, digits_accuracy(model)",
        "qat_models[bits], qat_acc[bits] = model, digits_accuracy(model)\n    ptq_acc[bits] = qat_acc[bits]",
        "task_1_3_ptq_vs_qat"),
    "ptq vs qat: every model trained at 8 bits": (
        "task_1_3_ptq_vs_qat_code", "    model = prepare_qat(teacher, bits)\n",
        "    model = prepare_qat(teacher, 8)\n", "task_1_3_ptq_vs_qat"),
    "ptq vs qat: not trained": (
        "task_1_3_ptq_vs_qat_code", '    train(model, loaders["train"], epochs=QAT_EPOCHS, lr=5e-4, device="cpu")\n',
        "", "task_1_3_ptq_vs_qat"),
    "distillation: KL arguments swapped": (
        "task_2_1_distillation_loss_code",
        "F.kl_div(F.log_softmax(student_logits / T, dim=1), F.softmax(teacher_logits.detach() / T, dim=1),",
        "F.kl_div(F.log_softmax(teacher_logits.detach() / T, dim=1), F.softmax(student_logits / T, dim=1),",
        "task_2_1_distillation_loss"),
    "distillation: no T**2": (
        "task_2_1_distillation_loss_code", "alpha * T * T * soft", "alpha * soft", "task_2_1_distillation_loss"),
    "distillation: KL averaged over classes too": (
        "task_2_1_distillation_loss_code", 'reduction="batchmean"', 'reduction="mean"', "task_2_1_distillation_loss"),
    "distillation: teacher not detached": (
        "task_2_1_distillation_loss_code", "teacher_logits.detach() / T", "teacher_logits / T",
        "task_2_1_distillation_loss"),
    "distillation: teacher not softened": (
        "task_2_1_distillation_loss_code", "F.softmax(teacher_logits.detach() / T, dim=1)",
        "F.softmax(teacher_logits.detach(), dim=1)", "task_2_1_distillation_loss"),
    "distillation: default T = 1": (
        "task_2_1_distillation_loss_code", "T: float = 4.0", "T: float = 1.0", "task_2_1_distillation_loss"),
    "students: kd_loss_fn uses the labels (alpha left at 0.9)": (
        "task_2_2_train_students_code", "teacher_logits, targets, alpha=1.0)", "teacher_logits, targets)",
        "task_2_2_train_students"),
    "students: kd_loss_fn at T = 1": (
        "task_2_2_train_students_code", "teacher_logits, targets, alpha=1.0)",
        "teacher_logits, targets, T=1.0, alpha=1.0)", "task_2_2_train_students"),
    "students: the distilled student not trained": (
        "task_2_2_train_students_code",
        'train(student_kd, transfer_loader, epochs=KD_EPOCHS, lr=3e-3, loss_fn=kd_loss_fn, device="cpu")', "pass",
        "task_2_2_train_students"),
    "qat + kd: the fp32 student fine-tuned": (
        "task_3_1_qat_kd_code", "student_qat_kd = prepare_qat(student_kd, 2)",
        "student_qat_kd = copy.deepcopy(student_kd)", "task_3_1_qat_kd"),
    "qat + kd: not trained": (
        "task_3_1_qat_kd_code",
        'train(student_qat_kd, transfer_loader, epochs=KD_EPOCHS, lr=1e-3, loss_fn=kd_loss_fn, device="cpu")', "pass",
        "task_3_1_qat_kd"),
    "qat + kd: QAT at 4 bits": (
        "task_3_1_qat_kd_code", "student_qat_kd = prepare_qat(student_kd, 2)",
        "student_qat_kd = prepare_qat(student_kd, 4)", "task_3_1_qat_kd"),
    "qat + kd: the step's loss uses the labels": (
        "task_2_2_train_students_code", "teacher_logits, targets, alpha=1.0)", "teacher_logits, targets, alpha=0.5)",
        "task_3_1_qat_kd"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "fake quantize as an autograd.Function": (
        "task_1_1_fake_quantize_code", "    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1\n",
        "    class _FQ(torch.autograd.Function):\n"
        "        @staticmethod\n"
        "        def forward(ctx, x, scale):\n"
        "            lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1\n"
        "            q = torch.round(x / scale) + zero_point\n"
        "            ctx.save_for_backward((q >= lo) & (q <= hi))\n"
        "            return scale * (torch.clamp(q, lo, hi) - zero_point)\n"
        "\n"
        "        @staticmethod\n"
        "        def backward(ctx, grad):\n"
        "            (mask,) = ctx.saved_tensors\n"
        "            return grad * mask, None\n"
        "\n"
        "    return _FQ.apply(x, torch.as_tensor(scale, dtype=x.dtype))\n"
        "    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1\n",
        "task_1_1_fake_quantize"),
    "fake quantize with torch.where": (
        "task_1_1_fake_quantize_code", "    return x * inside + (x_q - x * inside).detach()",
        "    x_ste = torch.where(inside.bool(), x, x.detach())\n    return x_ste + (x_q - x_ste).detach()",
        "task_1_1_fake_quantize"),
    "WeightFakeQuant with torch.amax over the other dims": (
        "task_1_2_prepare_qat_code",
        "        max_abs = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).clamp(min=1e-8)\n"
        "        scale = (max_abs / qmax).view(-1, *[1] * (w.dim() - 1))\n",
        "        dims = tuple(range(1, w.dim()))\n"
        "        scale = torch.amax(torch.abs(w.detach()), dim=dims, keepdim=True).clamp(min=1e-8) / qmax\n",
        "task_1_2_prepare_qat"),
    "prepare_qat over model.modules()": (
        "task_1_2_prepare_qat_code", "    for layer in weight_layers(model).values():",
        "    for layer in [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]:",
        "task_1_2_prepare_qat"),
    "ptq measured on the model before training it": (
        "task_1_3_ptq_vs_qat_code",
        "    ptq_acc[bits] = digits_accuracy(prepare_qat(teacher, bits))\n    model = prepare_qat(teacher, bits)\n",
        "    model = prepare_qat(teacher, bits)\n    ptq_acc[bits] = digits_accuracy(model)\n",
        "task_1_3_ptq_vs_qat"),
    "distillation with a hand-written KL and nll_loss": (
        "task_2_1_distillation_loss_code",
        "    soft = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.softmax(teacher_logits.detach() / T, dim=1),\n"
        '                    reduction="batchmean")\n'
        "    hard = F.cross_entropy(student_logits, labels)\n",
        "    with torch.no_grad():\n"
        "        log_p_t = torch.log_softmax(teacher_logits / T, dim=-1)\n"
        "    soft = (log_p_t.exp() * (log_p_t - torch.log_softmax(student_logits / T, dim=-1))).sum(-1).mean()\n"
        "    hard = F.nll_loss(torch.log_softmax(student_logits, dim=-1), labels)\n",
        "task_2_1_distillation_loss"),
    "kd_loss_fn with detach and keyword arguments": (
        "task_2_2_train_students_code",
        "    with torch.no_grad():\n        teacher_logits = teacher(inputs)\n"
        "    return distillation_loss(outputs, teacher_logits, targets, alpha=1.0)\n",
        "    return distillation_loss(student_logits=outputs, teacher_logits=teacher(inputs).detach(),\n"
        "                             labels=targets, T=4.0, alpha=1.0)\n",
        "task_2_2_train_students"),
    "qat + kd trained first, from a deep copy": (
        "task_3_1_qat_kd_code",
        'student_qat = prepare_qat(student_kd, 2)\ntrain(student_qat, labelled_loader, epochs=ALONE_EPOCHS, lr=1e-3, '
        'device="cpu")\nstudent_qat_kd = prepare_qat(student_kd, 2)\n'
        'train(student_qat_kd, transfer_loader, epochs=KD_EPOCHS, lr=1e-3, loss_fn=kd_loss_fn, device="cpu")\n',
        'student_qat_kd = prepare_qat(copy.deepcopy(student_kd), 2)\n'
        'train(student_qat_kd, transfer_loader, epochs=KD_EPOCHS, lr=1e-3, loss_fn=kd_loss_fn, device="cpu")\n'
        'student_qat = prepare_qat(student_kd, 2)\n'
        'train(student_qat, labelled_loader, epochs=ALONE_EPOCHS, lr=1e-3, device="cpu")\n',
        "task_3_1_qat_kd"),
}


# The solution cells each task's check needs (the training cells are the slow part): a mistake in a
# task runs only these, so the tests of Part 1 do not train the students of Part 2.
NEEDS = {
    "task_1_1_fake_quantize": ["task_1_1_fake_quantize_code"],
    "task_1_2_prepare_qat": ["task_1_1_fake_quantize_code", "task_1_2_prepare_qat_code"],
    "task_1_3_ptq_vs_qat": ["task_1_1_fake_quantize_code", "task_1_2_prepare_qat_code", "task_1_3_ptq_vs_qat_code"],
    "task_2_1_distillation_loss": ["task_2_1_distillation_loss_code"],
    "task_2_2_train_students": ["task_2_1_distillation_loss_code", "task_2_2_train_students_code"],
    "task_3_1_qat_kd": ["task_1_1_fake_quantize_code", "task_1_2_prepare_qat_code", "task_2_1_distillation_loss_code",
                        "task_2_2_train_students_code", "task_3_1_qat_kd_code"],
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES, needs=NEEDS))
