"""The authors' released checkpoints, read as bfdkern weights: BLADES (MZMMSEC/AIGFD_BLO), Zou25
(MZMMSEC/AIGFD_EXIF) and EXIF-as-language (hellomuffin/exif-as-language).

All three keep their image encoder as a torchvision ResNet-50 whose ``fc`` is ``Linear(2048, 768)``, under
``checkpoint['model']`` with the prefix ``model.visual.``; the feature is that fc's output (BLADES and EAL
L2-normalise it, Zou25 fits its GMM on it as it is). Their inputs are normalised with CLIP's mean/std.

* **BLADES** ``CLIP_EXIF_Net`` (OC.pth and training checkpoints): ``model.visual.*`` and CLIP's text tower
  (``model.transformer.*``, ``model.token_embedding.*``, ``model.positional_embedding``, ``model.ln_final.*``,
  ``model.text_projection``, ``model.logit_scale``) and ``model.text_fc.*`` (1024 -> 768). ``BC_MLP``
  (BC.pth) wraps it once more (``model.model.visual.*``, ...) and adds the binary MLP ``fc1`` (768 -> 1536)
  and ``fc2`` (1536 -> 2), on the L2-normalised feature, softmax column 1 = fake.
* **Zou25** ``EXIFNet_classfication_5heads_v2``: ``model.visual.*``, CLIP leftovers (``model.token_embedding``,
  ``model.positional_embedding``, ``model.ln_final``, ``model.logit_scale``) and five heads 768 -> 1
  ``fc_iso``, ``fc_av``, ``fc_et``, ``fc_fl``, ``fc_face``.
* **EAL** ``EXIFNet`` (``wrapper_75_new.pth``): ``model.visual.*``, a DistilBERT text tower
  (``model.transformer.*``), CLIP leftovers and ``sink_temp``; BLADES starts from its ``model.visual`` tower,
  loaded non-strictly (every other key is left out).

Everything that is not the image encoder (or the BC MLP) is left out, and the report says what, by group.
Keys may carry ``module.`` prefixes (DataParallel); half-precision tensors are converted to float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bfdkern.models.files import SavedFileError, torch_load

FORMATS = ("blades", "zou25", "eal")
VISUAL_PREFIXES = ("model.visual.", "model.model.visual.")
"""Where the image encoder sits: CLIP_EXIF_Net, EXIFNet and Zou25's net; BC_MLP (one level deeper)."""
ZOU25_HEADS = ("fc_iso", "fc_av", "fc_et", "fc_fl", "fc_face")
MLP_LAYERS = {"fc1": "0", "fc2": "2"}
"""BC_MLP's layers -> bfdkern's binary detector MLP (Linear, ReLU, Linear)."""

_GROUPS = (
    ("text_fc.", "text_fc (BLADES's text embedding 1024 -> 768)"),
    ("transformer.", "the text transformer (CLIP's, or EAL's DistilBERT)"),
    ("token_embedding.", "the CLIP text tower"),
    ("positional_embedding", "the CLIP text tower"),
    ("ln_final.", "the CLIP text tower"),
    ("text_projection", "the CLIP text tower"),
    ("logit_scale", "CLIP's logit scale"),
)


@dataclass
class AuthorsWeights:
    """The image encoder (and BC MLP) of an authors' checkpoint.

    Attributes:
        format: ``blades`` | ``zou25`` | ``eal``.
        backbone: torchvision ResNet-50 state dict without ``fc`` (float32).
        embed: ``{"weight": [D, 2048], "bias": [D]}``, the checkpoint's fc (the embedding).
        mlp: BC_MLP's layers as ``{"0.weight", "0.bias", "2.weight", "2.bias"}``, or None.
        left_out: group description -> number of entries not imported.
        notes: other things the import did (prefixes removed, dtypes converted).
    """

    format: str
    backbone: dict[str, torch.Tensor]
    embed: dict[str, torch.Tensor]
    mlp: dict[str, torch.Tensor] | None = None
    left_out: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def feature_dim(self) -> int:
        """D, the embedding size (768 for the released weights)."""
        return int(self.embed["weight"].shape[0])

    def report(self) -> list[str]:
        """Lines saying what was imported and what was left out (never silent)."""
        lines = [
            f"imported: the image encoder, torchvision ResNet-50 ({len(self.backbone)} entries) and its fc "
            f"2048 -> {self.feature_dim} as the embedding"
        ]
        if self.mlp is not None:
            lines.append("imported: the BC MLP (fc1 768 -> 1536, fc2 1536 -> 2)")
        for group, count in self.left_out.items():
            lines.append(f"left out: {group} ({count} {'entry' if count == 1 else 'entries'})")
        lines += self.notes
        return lines


def model_state(payload, path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], int]:
    """(state dict, number of keys that had ``module.`` prefixes): the state dict inside an authors' checkpoint
    (``checkpoint['model']``, else ``['state_dict']``, else the payload itself), leading ``module.`` prefixes
    removed. SavedFileError naming the file otherwise."""
    state = payload
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        raise SavedFileError(f"{path}: expected a checkpoint dict with a 'model' state dict")
    out, prefixed = {}, 0
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise SavedFileError(f"{path}: field model: expected parameter name -> tensor, got {key!r}")
        name = key
        while name.startswith("module."):
            name = name[len("module.") :]
        prefixed += name != key
        out[name] = value
    return out, prefixed


def visual_prefix(state: dict) -> str | None:
    """The prefix of the image encoder's keys, or None when there is none."""
    return next((p for p in VISUAL_PREFIXES if f"{p}conv1.weight" in state), None)


def guess_format(state: dict) -> str | None:
    """``zou25`` (its five heads), ``blades`` (text_fc or the BC MLP), ``eal`` (sink_temp / DistilBERT), or None
    (an image tower without a telling key)."""
    if any(f"{h}.weight" in state for h in ZOU25_HEADS):
        return "zou25"
    if "fc1.weight" in state or any(k.endswith("text_fc.weight") for k in state):
        return "blades"
    if "sink_temp" in state or any(".transformer.transformer.layer." in k for k in state):
        return "eal"
    return None


def _group(key: str, root: str) -> str:
    if key.split(".")[0] in ZOU25_HEADS:
        return "Zou25's task heads fc_iso, fc_av, fc_et, fc_fl, fc_face (the detectors use the embedding)"
    if key == "sink_temp":
        return "EAL's temperature sink_temp"
    if key.split(".")[0] in MLP_LAYERS:
        return "the BC MLP fc1, fc2 (give --detector to write it as a binary detector)"
    rest = key[len(root) :] if key.startswith(root) else None
    if rest is not None:
        for prefix, group in _GROUPS:
            if rest.startswith(prefix):
                return group
    return f"unrecognised entries, e.g. {key}"


def read_authors_checkpoint(path: str | os.PathLike, fmt: str | None = None, *, mlp: bool = False) -> AuthorsWeights:
    """Read an authors' checkpoint file (``weights_only=True``: nothing in it runs) as :class:`AuthorsWeights`.

    Args:
        fmt: the expected format (``blades``, ``zou25``, ``eal``); a file that tells another is refused. None:
            the file's.
        mlp: import BC_MLP's fc1/fc2 as well (an error when the file has none).

    Raises SavedFileError (one line naming the file) for a file without the image encoder, with a format other
    than ``fmt``, or whose encoder is not a ResNet-50 with fc 2048 -> D."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}, expected one of {list(FORMATS)}")
    state, prefixed = model_state(torch_load(path, "cpu", "checkpoint", mmap=True), path)
    prefix = visual_prefix(state)
    if prefix is None:
        raise SavedFileError(
            f"{path}: no image encoder (no 'model.visual.conv1.weight' in checkpoint['model']): not a BLADES, "
            "Zou25 or EAL checkpoint"
        )
    guessed = guess_format(state)
    if fmt is not None and guessed is not None and guessed != fmt:
        raise SavedFileError(f"{path}: this is a {guessed} checkpoint, not {fmt}; use --format {guessed}")
    result = AuthorsWeights(fmt or guessed or "blades", {}, {})
    if prefixed:
        result.notes.append(f"removed 'module.' prefixes from {prefixed} keys (a DataParallel checkpoint)")
    root = prefix[: -len("visual.")]
    converted = set()
    for key, value in state.items():
        if key.startswith(prefix):
            name = key[len(prefix) :]
            if value.is_floating_point() and value.dtype != torch.float32:
                converted.add(str(value.dtype).removeprefix("torch."))
                value = value.float()
            if name.startswith("fc."):
                result.embed[name[3:]] = value.clone()
            else:
                result.backbone[name] = value.clone()
        elif mlp and key.split(".")[0] in MLP_LAYERS:
            layer, _, param = key.partition(".")
            result.mlp = result.mlp or {}
            result.mlp[f"{MLP_LAYERS[layer]}.{param}"] = value.float().clone()
        else:
            group = _group(key, root)
            result.left_out[group] = result.left_out.get(group, 0) + 1
    if converted:
        result.notes.append(f"converted the image encoder from {', '.join(sorted(converted))} to float32")
    missing_bn = [k for k in _resnet50_keys() if k not in result.backbone and k.endswith("num_batches_tracked")]
    for key in missing_bn:  # older torch did not save these counters; they do not affect a forward pass
        result.backbone[key] = torch.tensor(0)
    if missing_bn:
        result.notes.append(f"{len(missing_bn)} BatchNorm counters num_batches_tracked absent: set to 0")
    _check_encoder(result, path, prefix)
    if mlp:
        _check_mlp(result, path, result.feature_dim)
    return result


def _resnet50_keys() -> list[str]:
    import torchvision  # lazy: heavy (torchvision, ~1.4 s), only when a network is built

    return [k for k in torchvision.models.resnet50(weights=None).state_dict() if not k.startswith("fc.")]


def _check_encoder(weights: AuthorsWeights, path: Path, prefix: str) -> None:
    w, b = weights.embed.get("weight"), weights.embed.get("bias")
    if w is None or b is None or w.dim() != 2 or w.shape[1] != 2048 or tuple(b.shape) != (w.shape[0],):
        found = {k: tuple(v.shape) for k, v in weights.embed.items()}
        raise SavedFileError(f"{path}: field model.{prefix}fc: expected Linear(2048, D) weight and bias, got {found}")


def _check_mlp(weights: AuthorsWeights, path: Path, dim: int) -> None:
    m = weights.mlp or {}
    shapes = {k: tuple(v.shape) for k, v in m.items()}
    ok = (
        set(m) == {"0.weight", "0.bias", "2.weight", "2.bias"}
        and m["0.weight"].dim() == 2
        and m["0.weight"].shape[1] == dim
        and tuple(m["0.bias"].shape) == (m["0.weight"].shape[0],)
        and tuple(m["2.weight"].shape) == (2, m["0.weight"].shape[0])
        and tuple(m["2.bias"].shape) == (2,)
    )
    if not ok:
        raise SavedFileError(
            f"{path}: no BC MLP (fc1 {dim} -> H, fc2 H -> 2) in checkpoint['model'] (found {shapes or 'none'}); "
            "only BC.pth (BC_MLP) has one"
        )
