"""Fabricated authors' checkpoints: exactly the key names and shapes of the released files (BLADES CLIP_EXIF_Net
and BC_MLP from MZMMSEC/AIGFD_BLO model.py, Zou25 EXIFNet_classfication_5heads_v2 from MZMMSEC/AIGFD_EXIF
yfcc_face_model.py, EAL EXIFNet from hellomuffin/exif-as-language model_wrapper.py), with random values.

The image tower holds real random weights (torchvision's initialisation, BatchNorm statistics randomised), so
that features can be compared; the text towers, which bfdkern leaves out, are single random numbers expanded to
their full shapes (torch.save stores one element each, so the files stay small)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EMBED_DIM = 768


def visual_tower(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-50 with fc = Linear(2048, 768), as the authors build it, random weights."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Linear(2048, EMBED_DIM)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.num_batches_tracked.fill_(1000)
    return net.state_dict()


def _stub(shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn((), dtype=dtype).expand(*shape)


def clip_text_tower(
    layers: int = 12, width: int = 512, embed: int = 1024, dtype=torch.float32
) -> dict[str, torch.Tensor]:
    """CLIP RN50's text tower (CLIP/model.py: CLIP.transformer, token_embedding, positional_embedding, ln_final,
    text_projection, logit_scale), keys relative to the CLIP model."""

    def _stub(shape):
        return torch.randn((), dtype=dtype).expand(*shape)

    state = {
        "positional_embedding": _stub((77, width)),
        "text_projection": _stub((width, embed)),
        "logit_scale": torch.tensor(4.6052, dtype=dtype),
    }
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        state.update(
            {
                p + "attn.in_proj_weight": _stub((3 * width, width)),
                p + "attn.in_proj_bias": _stub((3 * width,)),
                p + "attn.out_proj.weight": _stub((width, width)),
                p + "attn.out_proj.bias": _stub((width,)),
                p + "ln_1.weight": _stub((width,)),
                p + "ln_1.bias": _stub((width,)),
                p + "mlp.c_fc.weight": _stub((4 * width, width)),
                p + "mlp.c_fc.bias": _stub((4 * width,)),
                p + "mlp.c_proj.weight": _stub((width, 4 * width)),
                p + "mlp.c_proj.bias": _stub((width,)),
                p + "ln_2.weight": _stub((width,)),
                p + "ln_2.bias": _stub((width,)),
            }
        )
    state.update(
        {
            "token_embedding.weight": _stub((49408, width)),
            "ln_final.weight": _stub((width,)),
            "ln_final.bias": _stub((width,)),
        }
    )
    return state


def distilbert(layers: int = 6, dim: int = 768) -> dict[str, torch.Tensor]:
    """transformers' DistilBertModel ("distilbert-base-uncased") state dict keys and shapes."""
    state = {
        "embeddings.word_embeddings.weight": _stub((30522, dim)),
        "embeddings.position_embeddings.weight": _stub((512, dim)),
        "embeddings.LayerNorm.weight": _stub((dim,)),
        "embeddings.LayerNorm.bias": _stub((dim,)),
    }
    for i in range(layers):
        p = f"transformer.layer.{i}."
        for lin in ("q_lin", "k_lin", "v_lin", "out_lin"):
            state[p + f"attention.{lin}.weight"] = _stub((dim, dim))
            state[p + f"attention.{lin}.bias"] = _stub((dim,))
        state.update(
            {
                p + "sa_layer_norm.weight": _stub((dim,)),
                p + "sa_layer_norm.bias": _stub((dim,)),
                p + "ffn.lin1.weight": _stub((4 * dim, dim)),
                p + "ffn.lin1.bias": _stub((4 * dim,)),
                p + "ffn.lin2.weight": _stub((dim, 4 * dim)),
                p + "ffn.lin2.bias": _stub((dim,)),
                p + "output_layer_norm.weight": _stub((dim,)),
                p + "output_layer_norm.bias": _stub((dim,)),
            }
        )
    return state


def _prefixed(prefix: str, state: dict) -> dict:
    return {prefix + k: v for k, v in state.items()}


def _training_checkpoint(model_state: dict) -> dict:
    """What SSL_training.py / train_fidelityCLS.py / EAL's train.py save."""
    return {
        "epoch": 19,
        "model": model_state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "weight_decay": 0.001}]},
        "lr_sched": {"T_max": 20, "eta_min": 0, "base_lrs": [1e-5], "last_epoch": 20, "_step_count": 21},
    }


def blades_state(visual: dict) -> dict:
    """CLIP_EXIF_Net.state_dict(): self.model = the CLIP RN50 model, its visual a torchvision ResNet-50 with fc
    2048 -> 768, plus text_fc = Linear(1024, 768)."""
    text = clip_text_tower()
    state = {k: v for k, v in text.items() if not k.startswith(("transformer.", "token_embedding", "ln_final"))}
    state.update(_prefixed("visual.", visual))
    state.update({k: v for k, v in text.items() if k not in state})
    state.update({"text_fc.weight": _stub((EMBED_DIM, 1024)), "text_fc.bias": _stub((EMBED_DIM,))})
    return _prefixed("model.", state)


def blades_checkpoint(visual: dict) -> dict:
    """OC.pth / a BLADES training checkpoint."""
    return _training_checkpoint(blades_state(visual))


def bc_checkpoint(visual: dict, seed: int = 5) -> tuple[dict, dict]:
    """BC.pth: BC_MLP.state_dict() (self.model = CLIP_EXIF_Net, fc1 768 -> 1536, fc2 1536 -> 2); also returns the
    MLP's tensors."""
    g = torch.Generator().manual_seed(seed)
    mlp = {
        "fc1.weight": torch.randn(2 * EMBED_DIM, EMBED_DIM, generator=g) * 0.05,
        "fc1.bias": torch.randn(2 * EMBED_DIM, generator=g) * 0.05,
        "fc2.weight": torch.randn(2, 2 * EMBED_DIM, generator=g) * 0.05,
        "fc2.bias": torch.randn(2, generator=g) * 0.05,
    }
    return {"model": {**_prefixed("model.", blades_state(visual)), **mlp}}, mlp


def zou25_checkpoint(visual: dict) -> dict:
    """EXIFNet_classfication_5heads_v2.state_dict(): CLIP without transformer and text_projection, visual
    replaced, five heads 768 -> 1."""
    text = clip_text_tower()
    kept = {
        k: v
        for k, v in text.items()
        if k in ("positional_embedding", "logit_scale", "ln_final.weight", "ln_final.bias")
    }
    kept["token_embedding.weight"] = text["token_embedding.weight"]
    state = _prefixed("model.", {**kept, **_prefixed("visual.", visual)})
    for head in ("fc_face", "fc_iso", "fc_av", "fc_et", "fc_fl"):
        state[f"{head}.weight"] = torch.randn(1, EMBED_DIM) * 0.05
        state[f"{head}.bias"] = torch.zeros(1)
    return _training_checkpoint(state)


def eal_checkpoint(visual: dict) -> dict:
    """wrapper_75_new.pth: EXIFNet.state_dict() (CLIP RN50 leftovers in half precision, as convert_weights left
    them on a GPU; visual a ResNet-50 with fc 2048 -> 768; DistilBERT as the text transformer; sink_temp)."""
    text = clip_text_tower(dtype=torch.float16)
    leftovers = {k: v for k, v in text.items() if not k.startswith("transformer.")}
    state = {**leftovers, **_prefixed("visual.", visual), **_prefixed("transformer.", distilbert())}
    return _training_checkpoint({**_prefixed("model.", state), "sink_temp": torch.tensor(2.6593)})


def reference_features(visual: dict, x: torch.Tensor) -> torch.Tensor:
    """The authors' feature, written from torchvision: resnet50 with fc = Linear(2048, 768) holding ``visual``, on
    CLIP-normalised images, L2-normalised (model.encode_image then features / features.norm)."""
    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Linear(2048, EMBED_DIM)
    net.load_state_dict(visual)
    net.eval()
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        f = net((x - mean) / std)
    return f / f.norm(dim=1, keepdim=True)
