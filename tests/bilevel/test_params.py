import pytest
import torch
from torch import nn

from bfdkern.bilevel.params import ParamLayout
from tests.bilevel.toy import make_model


def test_flatten_and_views_round_trip():
    model = make_model("cnn")
    layout = ParamLayout.from_model(model)
    flat = layout.flatten()
    assert flat.shape == (sum(p.numel() for p in model.parameters()),)
    assert flat.dtype == torch.float64
    for view, p in zip(layout.views(flat), model.parameters()):
        assert torch.equal(view, p.detach())
        assert view.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()  # a view, not a copy
    flat[0] = 123.0
    assert layout.views(flat)[0].reshape(-1)[0] == 123.0


def test_pair_views_are_stacked_views_of_the_pair_buffer():
    model = make_model("mlp")
    layout = ParamLayout.from_model(model)
    theta = layout.flatten()
    pair = torch.stack([theta + 1.0, theta - 1.0])
    views = layout.pair_views(pair)
    for name, p in model.named_parameters():
        assert views[name].shape == (2, *p.shape)
        assert torch.equal(views[name][0], p.detach() + 1.0)
        assert torch.equal(views[name][1], p.detach() - 1.0)
    pair[1, -1] = 7.0
    assert views[layout.names[-1]][1].reshape(-1)[-1] == 7.0
    with pytest.raises(ValueError, match=r"\[2, N="):
        layout.pair_views(theta)


def test_float32_master_for_half_models_and_casts_back():
    model = make_model("mlp").to(torch.bfloat16)
    layout = ParamLayout.from_model(model)
    assert layout.dtype == torch.bfloat16 and layout.master_dtype == torch.float32
    flat = layout.flatten()
    assert flat.dtype == torch.float32
    back = layout.views(flat, dtype=torch.bfloat16)
    assert all(torch.equal(b, p.detach()) for b, p in zip(back, model.parameters()))


def test_only_trainable_parameters_the_optimizer_updates():
    model = make_model("mlp")
    first, second = model.net[0], model.net[2]
    first.bias.requires_grad_(False)
    opt = torch.optim.SGD([first.weight, second.weight], lr=0.1)
    layout = ParamLayout.from_model(model, opt)
    assert layout.names == ("net.0.weight", "net.2.weight")
    assert layout.numel == first.weight.numel() + second.weight.numel()


def test_bad_layouts_are_named():
    model = make_model("mlp")
    stranger = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="not parameters of the model"):
        ParamLayout.from_model(model, torch.optim.SGD([*model.parameters(), stranger], lr=0.1))
    model.net[0].float()
    with pytest.raises(ValueError, match="mix dtypes"):
        ParamLayout.from_model(model)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        ParamLayout.from_model(model)


def test_make_contiguous_keeps_parameters_values_and_optimizer_and_gives_theta_without_copy():
    model = make_model("cnn")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # momentum buffers exist
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = [id(p) for p in model.parameters()]
    layout = ParamLayout.from_model(model, opt).make_contiguous()
    assert [id(p) for p in model.parameters()] == ids
    assert layout.aliased()
    theta = layout.theta()
    assert theta is layout.flat
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
    opt.step()  # the optimizer updates the parameters, hence theta, in place
    torch.testing.assert_close(theta, ParamLayout.from_model(model).flatten(), rtol=0, atol=0)
    assert not torch.equal(theta, ParamLayout.from_model(model).flatten(list(before.values())))
    # Storage moved away (as model.to(...) would): theta falls back to a copy.
    first = next(model.parameters())
    first.data = first.data.clone()
    assert not layout.aliased()
    copy = layout.theta()
    assert copy is not layout.flat
    torch.testing.assert_close(copy, ParamLayout.from_model(model).flatten(), rtol=0, atol=0)
