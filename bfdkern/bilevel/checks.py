"""Conditions a training step finds on the device, reported on the host later.

A step that asked the host "is the loss finite?" would wait for the device every step (and could not be
captured in a CUDA graph). Instead each step records its conditions as device flags; :class:`DeferredChecks`
keeps, per condition, the first step at which it held and how many steps it held, on the device, and
:meth:`DeferredChecks.read` brings them to the host in one transfer (the trainer reads every
``check_every`` steps and at ``state_dict``). Errors name the first step where they occurred.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import torch
from torch import Tensor

NEVER = torch.iinfo(torch.int64).max
"""``first`` of a condition that has not held (a large value, so the minimum over ranks is the first)."""


@dataclass
class _Group:
    """One set of conditions recorded together (device tensors of fixed address, updated in place)."""

    key: tuple
    first: Tensor  # int64 [n]: first step where the condition held (NEVER: not yet)
    count: Tensor  # int64 [n]: steps where it held since the last read
    value: Tensor  # float64 [n]: the condition's value at its first step (e.g. a fraction)


@dataclass(frozen=True)
class Condition:
    """What a condition means: its message (``{items}`` is filled with every item that shares it at a
    step, ``{percent}`` with its value as a percentage), what it is about, and what it does when it held:
    ``error`` (an exception class: stop the run) or a warning (``once``: only the first time)."""

    template: str
    item: str = ""
    error: type[Exception] | None = None
    once: bool = False


@dataclass(frozen=True)
class Finding:
    """A condition that held: first at ``step``, in ``count`` steps since the last read."""

    condition: Condition
    message: str
    step: int
    count: int


class StepConditions:
    """The conditions of one step, gathered as it runs and recorded at its end in one update."""

    def __init__(self):
        self.conditions: list[Condition] = []
        self.flags: list[Tensor] = []
        self.values: list[Tensor] = []

    def add(self, conditions, flags: Tensor, values: Tensor | None = None) -> None:
        """``flags`` [n] bool (device), one per condition; ``values`` [n] (default 0)."""
        self.conditions += list(conditions)
        self.flags.append(flags.reshape(-1))
        self.values.append(
            torch.zeros(flags.numel(), dtype=torch.float64, device=flags.device)
            if values is None
            else values.reshape(-1).to(torch.float64)
        )


class DeferredChecks:
    """Per-condition first step and count on the device; see the module doc."""

    def __init__(self):
        self._groups: dict[tuple, _Group] = {}

    def record(self, step: Tensor, conditions: StepConditions) -> None:
        """Note the conditions that held at ``step`` (0-dim int64 on the device). No host sync; the first
        call with a given set of conditions allocates its buffers."""
        if not conditions.conditions:
            return
        key = tuple(conditions.conditions)
        flags = torch.cat(conditions.flags)
        group = self._groups.get(key)
        if group is None:
            n = len(key)
            group = self._groups[key] = _Group(
                key,
                torch.full((n,), NEVER, dtype=torch.int64, device=flags.device),
                torch.zeros(n, dtype=torch.int64, device=flags.device),
                torch.zeros(n, dtype=torch.float64, device=flags.device),
            )
        newly = flags & (group.first == NEVER)
        group.first.copy_(torch.where(newly, step, group.first))
        group.count.add_(flags)
        group.value.copy_(torch.where(newly, torch.cat(conditions.values), group.value))

    def read(self, sync=None) -> list[Finding]:
        """The conditions that held since the last read, errors first, then by first step (one host sync;
        with ``sync``, a :class:`~bfdkern.bilevel.distributed.DistributedSync`, over all ranks); resets them."""
        groups = list(self._groups.values())
        if not groups:
            return []
        first = torch.cat([g.first for g in groups])
        count = torch.cat([g.count for g in groups])
        if sync is not None:
            sync.reduce_(first, "min", "the step checks")
            sync.reduce_(count, "max", "the step checks")
        values = torch.cat([g.value for g in groups])
        n = first.numel()
        # One transfer: the float64 values travel as their int64 bit patterns.
        host = torch.cat([first, count, values.view(torch.int64)]).tolist()
        first_l, count_l = host[:n], host[n : 2 * n]
        value_l = struct.unpack(f"{n}d", struct.pack(f"{n}q", *host[2 * n :]))
        merged: dict[tuple, list] = {}
        conditions = [c for g in groups for c in g.key]
        for c, step, n, value in zip(conditions, first_l, count_l, value_l):
            if step != NEVER:
                entry = merged.setdefault((c.template, c.error, c.once, step), [[], 0, value])
                entry[0].append(c.item)
                entry[1] = max(entry[1], n)
        for g in groups:
            g.first.fill_(NEVER)
            g.count.zero_()
        found = []
        for (template, error, once, step), (items, n, value) in merged.items():
            message = template.replace("{items}", _join(items)).replace("{percent}", f"{100 * value:.0f}%")
            found.append(Finding(Condition(template, "", error, once), message, step, n))
        return sorted(found, key=lambda f: (f.condition.error is None, f.step))


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"
