"""The trainable parameters as one flat buffer.

The bi-level step works on theta as a flat ``[N]`` vector (the perturbation op takes one), while
the model takes named, shaped tensors. :class:`ParamLayout` maps between the two without copies:
a flat buffer is viewed back as per-parameter tensors, and the ``[2, N]`` output of
:func:`bfdkern.ops.perturb_pair` as per-parameter ``[2, *shape]`` stacks (the two parameter sets
that the paired evaluation vmaps over).

The flat buffer is float32 (float64 for a float64 model): the master copy that the virtual step
and the perturbation are computed in, also when the model's parameters are half precision.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bfdkern.ops.reference import compute_dtype


@dataclass(frozen=True)
class ParamLayout:
    """Where each trainable parameter lives in the flat buffer.

    Attributes:
        names: parameter names as ``model.named_parameters()`` gives them.
        params: the parameter tensors themselves (the model's, not copies).
        shapes, offsets, numels: per parameter; parameter i is ``flat[offsets[i] : offsets[i] + numels[i]]``.
        numel: N, the flat length.
        dtype: the parameters' dtype (the compute dtype of the forward).
        master_dtype: the flat buffer's dtype (float32, or float64 for a float64 model).
        flat: after :meth:`make_contiguous`, the ``[N]`` buffer the parameters are views of.
    """

    names: tuple[str, ...]
    params: tuple[Tensor, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    numels: tuple[int, ...]
    numel: int
    dtype: torch.dtype
    master_dtype: torch.dtype
    flat: Tensor | None = None

    @classmethod
    def from_model(cls, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> ParamLayout:
        """The model's trainable parameters (``requires_grad``), in ``named_parameters()`` order;
        with ``optimizer``, only those the optimizer updates (the others are constants of the step)."""
        in_opt = None
        if optimizer is not None:
            in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
            model_ids = {id(p) for p in model.parameters()}
            foreign = in_opt - model_ids
            if foreign:
                raise ValueError(
                    f"the optimizer holds {len(foreign)} parameter tensor(s) that are not parameters of the model; "
                    "build the optimizer from model.parameters()"
                )
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and (in_opt is None or id(p) in in_opt)]
        if not named:
            raise ValueError("the model has no trainable parameter that the optimizer updates")
        dtypes = {p.dtype for _, p in named}
        if len(dtypes) > 1:
            raise ValueError(f"the trainable parameters mix dtypes {sorted(map(str, dtypes))}; use one dtype")
        devices = {p.device for _, p in named}
        if len(devices) > 1:
            raise ValueError(f"the trainable parameters are on several devices {sorted(map(str, devices))}")
        dtype = dtypes.pop()
        if not dtype.is_floating_point:
            raise ValueError(f"trainable parameters must be floating point, got {dtype}")
        offsets, o = [], 0
        for _, p in named:
            offsets.append(o)
            o += p.numel()
        return cls(
            names=tuple(n for n, _ in named),
            params=tuple(p for _, p in named),
            shapes=tuple(p.shape for _, p in named),
            offsets=tuple(offsets),
            numels=tuple(p.numel() for _, p in named),
            numel=o,
            dtype=dtype,
            master_dtype=compute_dtype(dtype),
        )

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    def make_contiguous(self) -> ParamLayout:
        """Move the parameters into one flat ``[N]`` buffer (each becomes a view of it, same values,
        same Parameter objects, so optimizers and their state are unaffected) and return the
        layout that knows it. theta is then available without a copy (:meth:`theta`). A no-op for
        half-precision parameters, whose master copy must be float32 anyway."""
        if self.dtype != self.master_dtype or self.aliased():
            return self
        flat = self.flatten()
        with torch.no_grad():
            for p, view in zip(self.params, self.views(flat)):
                p.data = view
        return dataclasses.replace(self, flat=flat)

    def aliased(self) -> bool:
        """The parameters are still views of :attr:`flat` (not so after e.g. ``model.to(...)``)."""
        if self.flat is None:
            return False
        base, size = self.flat.data_ptr(), self.flat.element_size()
        return all(
            p.dtype == self.flat.dtype and p.is_contiguous() and p.data_ptr() == base + o * size
            for p, o in zip(self.params, self.offsets)
        )

    def theta(self) -> Tensor:
        """[N] theta in the master dtype: the shared buffer itself when the parameters are views of
        it (no copy; it changes when the optimizer steps), else a fresh copy."""
        return self.flat if self.aliased() else self.flatten()

    def flatten(self, tensors: list[Tensor] | tuple[Tensor, ...] | None = None) -> Tensor:
        """[N] master-dtype copy of ``tensors`` (default: the parameters' current values), detached."""
        tensors = self.params if tensors is None else tensors
        with torch.no_grad():
            return torch.cat([t.detach().reshape(-1).to(self.master_dtype) for t in tensors])

    def views(self, flat: Tensor, dtype: torch.dtype | None = None) -> list[Tensor]:
        """Per-parameter tensors of a flat ``[N]`` buffer: views (no copy) when ``dtype`` is the
        buffer's; else cast copies (a float32 master buffer evaluated in a half-precision model)."""
        if flat.shape != (self.numel,):
            raise ValueError(f"flat parameter buffer must be [N={self.numel}], got {tuple(flat.shape)}")
        out = [flat[o : o + n].view(s) for o, n, s in zip(self.offsets, self.numels, self.shapes)]
        if dtype is not None and dtype != flat.dtype:
            out = [t.to(dtype) for t in out]
        return out

    def pair_views(self, pair: Tensor, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
        """name -> ``[2, *shape]`` of a ``[2, N]`` buffer (row 0 = theta+, row 1 = theta-): views, no
        copy, unless ``dtype`` asks for a cast. The stacked sets that ``vmap`` maps over."""
        if pair.shape != (2, self.numel):
            raise ValueError(f"paired parameter buffer must be [2, N={self.numel}], got {tuple(pair.shape)}")
        out = {
            name: pair[:, o : o + n].view(2, *s)
            for name, o, n, s in zip(self.names, self.offsets, self.numels, self.shapes)
        }
        if dtype is not None and dtype != pair.dtype:
            out = {k: t.to(dtype) for k, t in out.items()}
        return out

    def as_dict(self, tensors: list[Tensor] | tuple[Tensor, ...]) -> dict[str, Tensor]:
        """name -> tensor, for ``torch.func.functional_call``."""
        return dict(zip(self.names, tensors))
