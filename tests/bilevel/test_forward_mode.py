"""The jvp mode through models with PyTorch's forward-mode traps: fused attention (a tiny 2-block ViT on
16x16 inputs, one block with F.scaled_dot_product_attention, one with nn.MultiheadAttention) and
train-mode BatchNorm (a CNN) give jvp = unroll to 1e-10 in float64; without the routing the ViT does hit
the trap; a module without a forward-mode rule is named in a clear error."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bfdkern.bilevel import ForwardModeError, hypergradient
from bfdkern.bilevel import passes as passes_module
from bfdkern.bilevel.forward_mode import explicit_batch_norm
from tests.bilevel.toy import SPEC, WEIGHTS, make_batch, make_model


class SdpaAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.qkv, self.out = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, fused_module: bool):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True) if fused_module else None
        self.sdpa = None if fused_module else SdpaAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + (self.mha(h, h, h, need_weights=False)[0] if self.mha is not None else self.sdpa(h))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """16x16 images, 4x4 patches (16 tokens + a class token), dim 16, 2 heads, 2 blocks."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.1)
        self.blocks = nn.Sequential(Block(dim, 2, fused_module=False), Block(dim, 2, fused_module=True))
        self.head = nn.Linear(dim, SPEC.num_columns)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos
        return self.head(self.blocks(tokens)[:, 0])


def _vit_problem(train: bool = True):
    torch.manual_seed(0)
    model = TinyViT().double().train(train)
    g = torch.Generator().manual_seed(1)
    batches = []
    for seed in (1, 2):
        _, y = make_batch("mlp", seed)
        batches.append((torch.randn(8, 3, 16, 16, generator=g, dtype=torch.float64), y))
    return model, torch.optim.SGD(model.parameters(), lr=0.3, weight_decay=0.01), *batches


def _rel(a, b) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_vit_jvp_equals_unroll(train):
    """Eval mode takes nn.MultiheadAttention's fused fast path unless it is switched off."""
    model, opt, btr, bval = _vit_problem(train)
    jvp = hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="jvp").value
    unroll = hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="unroll").value
    assert float(torch.linalg.vector_norm(unroll)) > 1e-6
    assert _rel(jvp, unroll) < 1e-10


def test_without_the_routing_the_vit_hits_the_fused_attention_trap(monkeypatch):
    monkeypatch.setattr(passes_module, "forward_mode_safe", contextlib.nullcontext)
    model, opt, btr, bval = _vit_problem()
    with pytest.raises(ForwardModeError, match=r"module 'blocks\.0\.sdpa' \(SdpaAttention\)"):
        hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="jvp")


@pytest.mark.parametrize("opt_kind", ["sgd", "adamw"])
def test_batchnorm_cnn_jvp_equals_unroll(opt_kind):
    model = make_model("cnn", dropout=0.3)  # train mode: batch statistics, and dropout masks replayed
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
        if opt_kind == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.3, weight_decay=0.05)
    )
    btr, bval = make_batch("cnn", 1, batch=12), make_batch("cnn", 2, batch=12)
    jvp = hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="jvp").value
    unroll = hypergradient(model, SPEC, btr, bval, WEIGHTS, opt, mode="unroll").value
    assert _rel(jvp, unroll) < 1e-10


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(6, 4), (6, 4, 5), (6, 4, 3, 5)])
def test_explicit_batch_norm_equals_the_native_one(training, shape):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    mean, var = torch.randn(4, generator=g, dtype=torch.float64), torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    w, b = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    want = F.batch_norm(x, mean.clone(), var.clone(), w, b, training=training, eps=1e-5)
    got = explicit_batch_norm(x, mean, var, w, b, training=training, eps=1e-5)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    # and its forward-mode derivative equals that of the native kernel (where it has one: eval mode)
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    _, jvp = torch.func.jvp(lambda z: explicit_batch_norm(z, mean, var, w, b, training=training), (x,), (t,))
    _, ref = torch.func.jvp(lambda z: F.batch_norm(z, mean.clone(), var.clone(), w, b, training=training), (x,), (t,))
    torch.testing.assert_close(jvp, ref, rtol=1e-12, atol=1e-12)


class _NoJvp(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x * 2

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g * 2


class _Doubler(nn.Module):
    def forward(self, x):
        return _NoJvp.apply(x)


def test_a_module_without_a_forward_mode_rule_is_named():
    model = make_model("mlp")
    model.net.insert(1, _Doubler())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ForwardModeError, match=r"mode='jvp': module 'net\.1' \(_Doubler\) computes something without"):
        hypergradient(model, SPEC, make_batch("mlp", 1), make_batch("mlp", 2), WEIGHTS, opt, mode="jvp")
    # fd needs no forward-mode rule (two plain forwards: the Function has no vmap rule either)
    fd = hypergradient(model, SPEC, make_batch("mlp", 1), make_batch("mlp", 2), WEIGHTS, opt, mode="fd", batched=False)
    assert torch.isfinite(fd.value).all()


def test_the_first_jvp_pass_shows_no_warning_about_pytorch_internals():
    """PyTorch loads its jvp decompositions through the deprecated torch.jit.script on the first
    forward-mode pass of a process, and warns about its own code: the jvp mode keeps that from users.
    A fresh process, since the decompositions load once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import torch\n"
        "from bfdkern.bilevel import hypergradient\n"
        "from tests.bilevel.toy import SPEC, WEIGHTS, make_batch, make_model\n"
        "model = make_model('mlp')\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "hg = hypergradient(model, SPEC, make_batch('mlp', 1), make_batch('mlp', 2), WEIGHTS, opt, mode='jvp')\n"
        "assert torch.isfinite(hg.value).all()\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Warning" not in out.stderr, out.stderr[-2000:]
