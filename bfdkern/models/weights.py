"""Where an encoder's weights start: an *init* string.

* ``random``: random initialisation (ImageNet statistics);
* ``imagenet`` (or ``imagenet:IMAGENET1K_V2`` ...): torchvision's ImageNet weights for the backbone, through its
  weights API: ``imagenet`` is ``IMAGENET1K_V1`` for both ResNets, what the authors' ``resnet50(pretrained=True)``
  loads. The file is downloaded once into ``$TORCH_HOME/hub/checkpoints`` and read from there afterwards
  (offline too); offline without it, one error says which file to place where. The embedding and heads
  start random;
* a file: a torchvision ResNet state dict (backbone only, ImageNet statistics); a bfdkern encoder file or
  exported folder (backbone, embedding, statistics, and the heads when the tasks are the same); or an authors'
  checkpoint, BLADES, Zou25 or EAL (backbone and embedding, CLIP's statistics; see
  :mod:`bfdkern.models.authors`).

Every start reports what it loaded and what it left out (:attr:`BladesModel.init_report`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from bfdkern.models.authors import AuthorsWeights, read_authors_checkpoint, visual_prefix
from bfdkern.models.choices import IMAGENET_WEIGHTS, RANDOM, check_init, is_file_init
from bfdkern.models.encoder import (
    CHECKPOINT_NAME,
    BladesModel,
    load_fitting,
    load_model,
    model_from_checkpoint,
    read_checkpoint,
)
from bfdkern.models.files import SavedFileError, torch_load
from bfdkern.models.normalization import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from bfdkern.models.pretrained import WEIGHTS_FILE
from bfdkern.tasks import TaskSpec

AUTHORS_INPUT_SIZE = 224


def build_model(
    spec: TaskSpec | None,
    backbone: str = "resnet50",
    feature_dim: int = 768,
    init: str = RANDOM,
    *,
    input_size: int | None = None,
) -> BladesModel:
    """A :class:`BladesModel` started from ``init`` (see the module docstring); ``model.init_report`` says what was
    loaded and what was left out. Raises ValueError / FileNotFoundError naming the file or the missing download."""
    check_init(init, backbone)
    model = BladesModel(spec, backbone=backbone, feature_dim=feature_dim, input_size=input_size)
    if init == RANDOM:
        report = "random initialisation (ImageNet statistics)"
    elif not is_file_init(init):
        name = init.partition(":")[2] or IMAGENET_WEIGHTS[backbone][0]
        state, path = imagenet_state_dict(backbone, name)
        load_fitting(model.backbone, _without_fc(state), path, f"the {backbone} backbone")
        report = f"ImageNet weights {name} from {path}; the embedding and heads start random"
    else:
        report = load_init_file(model, init)
    model.init_report = report
    return model


def _without_fc(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def ensure_available(init: str, backbone: str) -> None:
    """Make sure ``init`` can start ``backbone`` before a run writes anything: a file exists; ImageNet weights
    are in the torch hub cache (downloaded now when absent). Raises what :func:`build_model` would."""
    check_init(init, backbone)
    if init == RANDOM:
        return
    if is_file_init(init):
        if not Path(init).exists():
            raise FileNotFoundError(f"{init}: no such weights file (--init)")
        return
    name = init.partition(":")[2] or IMAGENET_WEIGHTS[backbone][0]
    _imagenet_file(backbone, name)


# --- ImageNet through torchvision's weights API ------------------------------------------------------------
def _imagenet_file(arch: str, name: str) -> Path:
    """The cached file of torchvision's ``arch`` weights ``name``, downloaded first when absent."""
    import torchvision  # lazy: heavy (torchvision, ~1.4 s), only to find ImageNet weights

    url = torchvision.models.get_model_weights(arch)[name].url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        _download(url, path, f"ImageNet weights {arch} {name}")
    return path


def imagenet_state_dict(arch: str, name: str) -> tuple[dict, Path]:
    """(state dict, file) of torchvision's ``arch`` weights ``name`` (e.g. ``IMAGENET1K_V1``): read from the torch
    hub cache (``$TORCH_HOME/hub/checkpoints``), downloaded there first when absent (never re-downloaded). Read
    with ``weights_only=True``. Raises FileNotFoundError saying which file to place where when it is absent and
    cannot be downloaded."""
    path = _imagenet_file(arch, name)
    state = torch_load(path, "cpu", f"{arch} {name} weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SavedFileError(f"{path}: not a state dict of tensors (expected torchvision {arch} {name} weights)")
    return state, path


def _download(url: str, path: Path, what: str) -> None:
    """Download ``url`` to ``path`` (its sha256 checked against the prefix in the file name, as torch.hub does)."""
    match = re.search(r"-([a-f0-9]+)\.", path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=True)
    except (OSError, RuntimeError, ValueError) as exc:  # no network (URLError is an OSError), a bad download
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FileNotFoundError(
            f"{what} are not in the torch hub cache and could not be downloaded ({type(exc).__name__}: {reason}): "
            f"place {path.name} (from {url}) at {path} (the folder is $TORCH_HOME/hub/checkpoints), or start "
            f"from random weights with --init random"
        ) from None


# --- files -----------------------------------------------------------------------------------------------------
def load_init_file(model: BladesModel, init: str | os.PathLike) -> str:
    """Load the weights file ``init`` into ``model`` (what it holds decides what is loaded; see the module
    docstring); returns the report line. Raises FileNotFoundError / SavedFileError naming the file."""
    path = Path(init)
    if path.is_dir():
        if (path / CHECKPOINT_NAME).is_file() or (path / WEIGHTS_FILE).is_file():
            return _from_encoder(model, load_model(path), path)
        raise FileNotFoundError(f"{path}: a folder without {CHECKPOINT_NAME} or {WEIGHTS_FILE} (--init)")
    payload = torch_load(path, "cpu", "weights file", mmap=True)
    if isinstance(payload, dict) and str(payload.get("format", "")).startswith("bfdkern.model/"):
        return _from_encoder(model, model_from_checkpoint(read_checkpoint(path)), path)  # validated first
    if isinstance(payload, dict) and str(payload.get("format", "")).startswith("bfdkern."):
        raise SavedFileError(f"{path}: a {payload['format']} file, not weights (give RUN/{CHECKPOINT_NAME})")
    inner = payload.get("model", payload.get("state_dict", payload)) if isinstance(payload, dict) else payload
    state = _plain_state(inner)
    if state is not None and visual_prefix(state):
        return _from_authors(model, read_authors_checkpoint(path), path)
    if state is not None:
        load_fitting(model.backbone, _without_fc(state), path, f"the {model.backbone_name} backbone")
        model.set_statistics(IMAGENET_MEAN, IMAGENET_STD)
        return (
            f"the {model.backbone_name} backbone from the torchvision state dict {path} (its fc left out); the "
            "embedding and heads start random"
        )
    raise SavedFileError(
        f"{path}: not a weights file bfdkern knows (a torchvision state dict, a bfdkern encoder, or a BLADES, "
        "Zou25 or EAL checkpoint)"
    )


def _plain_state(inner) -> dict | None:
    """A state dict (name -> tensor, ``module.`` prefixes removed), or None when ``inner`` is not one."""
    if not isinstance(inner, dict) or not inner:
        return None
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in inner.items()):
        return None
    return {k.removeprefix("module."): v for k, v in inner.items()}


def _check_shapes_match(model: BladesModel, source, path: Path) -> None:
    if source.backbone_name != model.backbone_name or source.feature_dim != model.feature_dim:
        raise SavedFileError(
            f"{path}: its encoder is {source.backbone_name} with a {source.feature_dim}-d embedding, the model to "
            f"start is {model.backbone_name} with {model.feature_dim}-d (set --backbone / --feature-dim to match)"
        )


def _from_encoder(model: BladesModel, source: BladesModel, path: Path) -> str:
    _check_shapes_match(model, source, path)
    model.backbone.load_state_dict(source.backbone.state_dict())
    model.embed.load_state_dict(source.embed.state_dict())
    model.set_statistics(*source.statistics)
    same_tasks = model.heads is not None and source.heads is not None and source.spec == model.spec
    if same_tasks:
        model.heads.load_state_dict(source.heads.state_dict())
    heads = "and the task heads" if same_tasks else "(the heads start random: the tasks differ)"
    return f"the backbone, embedding {heads} of the bfdkern encoder {path}, with its input statistics"


def _from_authors(model: BladesModel, weights: AuthorsWeights, path: Path) -> str:
    if model.backbone_name != "resnet50" or model.feature_dim != weights.feature_dim:
        raise SavedFileError(
            f"{path}: its encoder is resnet50 with a {weights.feature_dim}-d embedding, the model to start is "
            f"{model.backbone_name} with {model.feature_dim}-d (use --backbone resnet50 --feature-dim "
            f"{weights.feature_dim})"
        )
    load_fitting(model.backbone, weights.backbone, path, "the resnet50 backbone")
    model.embed.load_state_dict(weights.embed)
    model.set_statistics(CLIP_MEAN, CLIP_STD)
    left = "; ".join(weights.report()[1:])
    return f"the {weights.format} image encoder of {path} (CLIP statistics); the heads start random; {left}"


def import_authors_encoder(path: str | os.PathLike, fmt: str | None = None, *, mlp: bool = False):
    """(model, weights) for an authors' checkpoint: a :class:`BladesModel` without heads holding its image
    encoder, with CLIP's statistics and 224-pixel inputs, and the :class:`AuthorsWeights` (report, BC MLP)."""
    path = Path(path)
    weights = read_authors_checkpoint(path, fmt, mlp=mlp)
    model = BladesModel(
        None,
        backbone="resnet50",
        feature_dim=weights.feature_dim,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        input_size=AUTHORS_INPUT_SIZE,
    )
    load_fitting(model.backbone, weights.backbone, path, "the resnet50 backbone")
    model.embed.load_state_dict(weights.embed)
    return model.eval(), weights
