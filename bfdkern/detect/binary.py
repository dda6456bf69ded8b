"""The binary detector: a two-layer perceptron on frozen features, trained on reals and a few fakes.

``D -> 1536 -> ReLU -> 2`` (D = 768 for the paper's encoder), cross-entropy, AdamW. A stratified
validation split is held out and training stops when the validation loss has not improved for
``patience`` epochs; the best epoch's weights are kept. The validation curve (per epoch: training loss,
validation loss, validation AUC and balanced accuracy) is kept in the report. Classes are weighted inversely to their
counts, so a few hundred fakes against thousands of reals still train a balanced classifier. The
report says how many reals and fakes were used for training and for validation.

Convention (the paper's): the score is P(fake) and the positive class is **fake**; an image is
called fake when P(fake) > 0.5.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bfdkern.detect.oneclass import l2_normalise

LAYER_NAMES = ("0.weight", "0.bias", "2.weight", "2.bias")


def make_mlp(in_dim: int, hidden: int) -> nn.Sequential:
    """Linear(in_dim, hidden) -> ReLU -> Linear(hidden, 2); logits [B, 2] (column 1 = fake)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): ``fraction`` of each class to validation, at least one per class."""
    train, val = [], []
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(max(1, int(round(len(idx) * fraction))), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.concatenate(train), np.concatenate(val)


class BinaryDetector:
    """Two-layer perceptron on L2-normalised features; score = P(fake).

    Args:
        hidden: hidden width (1536 in the paper).
        lr, weight_decay: AdamW settings.
        batch_size: minibatch size.
        max_epochs, patience: early stopping on the validation loss.
        val_fraction: fraction of each class held out for validation.
        seed: split, initialisation and shuffling.
        device: where to train (None: CUDA when available).
    """

    kind = "binary"
    positive_class = "fake"
    score_name = "P(fake)"
    threshold = 0.5

    def __init__(
        self,
        hidden: int = 1536,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        batch_size: int = 128,
        max_epochs: int = 200,
        patience: int = 10,
        val_fraction: float = 0.2,
        seed: int = 0,
    ):
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.params = {
            "hidden": int(hidden),
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "batch_size": int(batch_size),
            "max_epochs": int(max_epochs),
            "patience": int(patience),
            "val_fraction": float(val_fraction),
            "seed": int(seed),
        }
        self.mlp: nn.Sequential | None = None
        self.report: dict = {}

    @property
    def feature_dim(self) -> int:
        """D, the feature size the detector was fitted on."""
        self._check_fitted()
        return int(self.mlp[0].in_features)

    def _check_fitted(self) -> None:
        if self.mlp is None:
            raise RuntimeError("the binary detector is not fitted")

    # --- fitting -----------------------------------------------------------------------------
    def fit(
        self, real_features, fake_features, device: str | torch.device | None = None, progress: bool = False
    ) -> BinaryDetector:
        """Train on real [Nr, D] and fake [Nf, D] features (each class needs >= 2 samples)."""
        real = l2_normalise(real_features, "real features")
        fake = l2_normalise(fake_features, "fake features")
        if real.shape[1] != fake.shape[1]:
            raise ValueError(f"real features are {real.shape[1]}-d but fake features are {fake.shape[1]}-d")
        for name, arr in (("real", real), ("fake", fake)):
            if arr.shape[0] < 2:
                raise ValueError(
                    f"{name} features: need at least 2 samples (one to train, one to validate), got {arr.shape[0]}"
                )
        p = self.params
        dev = (
            torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        rng = np.random.default_rng(p["seed"])
        x = np.concatenate([real, fake]).astype(np.float32)
        y = np.r_[np.zeros(len(real), np.int64), np.ones(len(fake), np.int64)]
        tr, va = stratified_split(y, p["val_fraction"], rng)
        xt, yt = torch.from_numpy(x[tr]).to(dev), torch.from_numpy(y[tr]).to(dev)
        xv, yv = torch.from_numpy(x[va]).to(dev), torch.from_numpy(y[va]).to(dev)
        counts = torch.bincount(yt, minlength=2).double()
        class_weight = (counts.sum() / (2.0 * counts)).float()  # balanced: each class weighs half
        torch.manual_seed(p["seed"])
        gen = torch.Generator().manual_seed(p["seed"])
        mlp = make_mlp(x.shape[1], p["hidden"]).to(dev)
        opt = torch.optim.AdamW(mlp.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])

        def validate(epoch: int, train_loss: float | None) -> dict:
            # lazy: heavy (detect.metrics loads scikit-learn, ~0.9 s), only fitting; scoring needs none
            from bfdkern.detect.metrics import roc_auc

            mlp.eval()
            with torch.no_grad():
                logits = mlp(xv)
                loss = float(F.cross_entropy(logits, yv, weight=class_weight))
            p_fake = torch.softmax(logits.double(), 1)[:, 1].cpu().numpy()
            y_val = yv.cpu().numpy()
            called = p_fake > self.threshold
            balanced = 0.5 * (np.mean(~called[y_val == 0]) + np.mean(called[y_val == 1]))
            return {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": loss,
                "val_auc": roc_auc(y_val, p_fake),
                "val_balanced_acc": float(balanced),
            }

        history = [validate(0, None)]
        best, best_state, best_epoch, stale, epoch = history[0]["val_loss"], copy.deepcopy(mlp.state_dict()), 0, 0, 0
        for epoch in tqdm(range(1, p["max_epochs"] + 1), desc="fit-binary", disable=not progress, leave=False):
            mlp.train()
            order = torch.randperm(len(xt), generator=gen).to(dev)
            total, seen = 0.0, 0
            for s in range(0, len(order), p["batch_size"]):
                batch = order[s : s + p["batch_size"]]
                loss = F.cross_entropy(mlp(xt[batch]), yt[batch], weight=class_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, seen = total + float(loss.detach()) * len(batch), seen + len(batch)
            history.append(validate(epoch, total / seen))
            current = history[-1]["val_loss"]
            if current < best - 1e-6:
                best, best_state, best_epoch, stale = current, copy.deepcopy(mlp.state_dict()), epoch, 0
            else:
                stale += 1
                if stale >= p["patience"]:
                    break
        mlp.load_state_dict(best_state)
        self.mlp = mlp.cpu().eval()
        self.report = {
            "n_real_train": int((y[tr] == 0).sum()),
            "n_fake_train": int((y[tr] == 1).sum()),
            "n_real_val": int((y[va] == 0).sum()),
            "n_fake_val": int((y[va] == 1).sum()),
            "epochs": int(epoch),
            "best_epoch": int(best_epoch),
            "best_val_loss": float(best),
            "stopped_early": bool(epoch < p["max_epochs"]),
            "val_loss_history": [h["val_loss"] for h in history[1:]],
            "history": history,
            "feature_dim": int(x.shape[1]),
        }
        return self

    # --- scoring -----------------------------------------------------------------------------
    def score(self, features) -> np.ndarray:
        """[N, D] features -> [N] P(fake) in [0, 1] (float64)."""
        self._check_fitted()
        x = l2_normalise(features)
        if x.shape[1] != self.feature_dim:
            raise ValueError(f"features have dimension {x.shape[1]}, the detector was fitted on {self.feature_dim}")
        with torch.no_grad():
            logits = self.mlp(torch.from_numpy(x.astype(np.float32)))
            return torch.softmax(logits.double(), dim=1)[:, 1].numpy()

    def predict(self, features) -> np.ndarray:
        """[N, D] -> [N] int: 1 = fake (P(fake) > 0.5), 0 = real."""
        return self.decide(self.score(features))

    def decide(self, scores) -> np.ndarray:
        """P(fake) [N] -> [N] int: 1 = fake (P(fake) > 0.5), 0 = real."""
        return (np.asarray(scores) > self.threshold).astype(np.int64)

    # --- files -------------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able metadata, arrays) for :func:`bfdkern.detect.serialization.save_detector`."""
        self._check_fitted()
        arrays = {f"mlp.{k}": v.detach().cpu().numpy() for k, v in self.mlp.state_dict().items()}
        return {"params": self.params, "threshold": self.threshold, "report": self.report}, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> BinaryDetector:
        """Inverse of :meth:`state`."""
        det = cls(**meta["params"])
        w1 = arrays["mlp.0.weight"]
        mlp = make_mlp(int(w1.shape[1]), int(w1.shape[0]))
        mlp.load_state_dict({k: torch.from_numpy(np.array(arrays[f"mlp.{k}"])) for k in LAYER_NAMES})
        det.mlp = mlp.eval()
        det.report = dict(meta.get("report", {}))
        return det
