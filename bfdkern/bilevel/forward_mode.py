"""Forward-mode AD through a user's model (the ``jvp`` mode), with PyTorch's known traps handled.

* The fused scaled-dot-product attention kernels (flash, memory-efficient, cuDNN, and the CPU flash
  kernel) have no forward-mode rule (pytorch/pytorch#98164, #117629): attention is routed to the math
  kernel (``torch.nn.attention.sdpa_kernel``), and ``nn.MultiheadAttention``'s fused fast path is off.
  They have no double backward either, so the ``unroll`` mode's inner forward takes the same route.
* BatchNorm in training mode under functorch transforms has known failures (#85533) and a report of
  silently wrong second-order values (#196699): ``F.batch_norm`` is written out with explicit batch
  statistics (mean and biased variance over the batch), whose forward-mode derivative is plain arithmetic.
  The running statistics are not updated (the jvp evaluates the forward at theta; it does not train).
* Anything else without a forward-mode rule (a custom ``autograd.Function`` without ``jvp``, an op PyTorch
  has no formula for) raises :class:`ForwardModeError` naming the module that ran it, instead of a deep
  traceback.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode


class ForwardModeError(RuntimeError):
    """A model (or loss) computes something that has no forward-mode derivative."""


def explicit_batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """``F.batch_norm`` (same arguments) as plain arithmetic: with ``training`` (or no running statistics)
    the batch's mean and biased variance over every dimension but the channels (dim 1); else the running
    statistics. The running statistics are not updated."""
    shape = [1, -1] + [1] * (input.dim() - 2)
    if training or running_mean is None or running_var is None:
        dims = [d for d in range(input.dim()) if d != 1]
        mean = input.mean(dim=dims, keepdim=True)
        var = input.var(dim=dims, unbiased=False, keepdim=True)
    else:
        mean, var = running_mean.view(shape), running_var.view(shape)
    out = (input - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    return out


class _ExplicitBatchNorm(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.batch_norm:
            return explicit_batch_norm(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def math_attention():
    """Attention through composite ops only (the SDPA math kernel, no ``nn.MultiheadAttention`` fast path):
    the fused kernels have neither a forward-mode rule nor a double backward (the ``unroll`` mode)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@contextlib.contextmanager
def forward_mode_safe():
    """Run a forward under ``torch.func.jvp`` around the traps of the module doc."""
    _load_jvp_decompositions()
    with math_attention(), _ExplicitBatchNorm():
        yield


def _load_jvp_decompositions() -> None:
    """Load PyTorch's jvp decompositions (as its first forward-mode pass would) without the FutureWarning it
    raises on loading them through ``torch.jit.script``: about PyTorch's own code, nothing a user of the jvp
    mode can act on. Once per process: a filter around every pass would reset every warning's
    shown-once record (``catch_warnings``), and it is not thread-safe."""
    if "torch._decomp.decompositions_for_jvp" in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        import torch._decomp.decompositions_for_jvp  # noqa: F401  # lazy: loads TorchScript, jvp mode only


_MARKERS = ("forward AD", "forward mode AD", "forward-mode", "jvp", "functorch transforms")


def lacks_forward_rule(exc: BaseException) -> bool:
    """The error is PyTorch saying some op or autograd.Function has no forward-mode derivative."""
    return isinstance(exc, (RuntimeError, NotImplementedError)) and any(m in str(exc) for m in _MARKERS)


def failing_module(model: nn.Module, run) -> str | None:
    """Re-run ``run()`` (which raises) with hooks on every submodule of ``model``; the qualified name and
    type of the innermost module running when it raised (None: it raised outside the model)."""
    stack: list[str] = []
    failed: list[str] = []
    handles = []

    def enter(label):
        return lambda module, args: stack.append(label)  # a pre-hook returning None leaves the args

    def leave(module, args, output):
        stack.pop()  # returns None: the output stays the module's

    for name, module in model.named_modules():
        label = f"module {name!r} ({type(module).__name__})" if name else f"the model ({type(module).__name__})"
        handles.append(module.register_forward_pre_hook(enter(label)))
        handles.append(module.register_forward_hook(leave))
    try:
        run()
    except Exception:
        failed = stack[-1:]
    finally:
        for h in handles:
            h.remove()
    return failed[0] if failed else None


def explain(exc: BaseException, where: str | None) -> ForwardModeError:
    """The :class:`ForwardModeError` for ``exc`` raised in ``where`` (see :func:`failing_module`)."""
    place = where or "the objective's forward_mode_losses (after the model's forward)"
    reason = str(exc).strip().splitlines()[0]
    return ForwardModeError(
        f"mode='jvp': {place} computes something without a forward-mode derivative ({reason}). Use mode='fd' or "
        "mode='unroll', or give it a forward-mode rule (a torch.autograd.Function with setup_context and jvp)"
    )
