"""Kernel tests. Without CUDA the Triton kernels run under the Triton
interpreter, which Triton selects when a kernel is defined, so the variable is
set here, before any test module imports helpers.kernels.triton. setdefault
keeps an explicit choice; on a CPU-only machine the interpreter is the only
way Triton runs at all, so other tests (and notebooks they start) that use
Triton need the same setting."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
