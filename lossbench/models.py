"""Models built from config. Each has `features(x)` and a linear `head`, so later hooks
(distillation heads, feature-separability terms) can reach the penultimate layer."""
from __future__ import annotations

import difflib

import torch
from torch import nn
import torch.nn.functional as F


class Classifier(nn.Module):
    """`body` → features → linear `head`; with `aux_head`, a second linear head on the same features
    (Dual-Head KD) that trains with the model but never predicts."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(feature_dim, num_classes)
        self.aux_head = None

    def add_aux_head(self) -> "Classifier":
        self.aux_head = nn.Linear(self.head.in_features, self.head.out_features)
        return self

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


NORMS = {"none": None, "batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}


def mlp(input_shape, num_classes, *, hidden=(256, 256), norm="none"):
    """ReLU MLP; `norm` after each hidden Linear makes that Linear's weight scale-invariant (the
    setting AdamP/SGDP are about)."""
    if norm not in NORMS:
        raise ValueError(f"mlp: norm {norm!r} not in {sorted(NORMS)}")
    layers, width = [nn.Flatten()], int(torch.tensor(input_shape).prod())
    for h in hidden:
        layers += [nn.Linear(width, h, bias=NORMS[norm] is None)]
        layers += [NORMS[norm](h)] if NORMS[norm] is not None else []
        layers += [nn.ReLU()]
        width = h
    return Classifier(nn.Sequential(*layers), width, num_classes)


def cnn1d(input_shape, num_classes, *, channels=32):
    """Small 1-D CNN for MNIST-1D (three strided convolutions, global pooling)."""
    c = channels
    body = nn.Sequential(
        nn.Unflatten(1, (1, input_shape[-1])),
        nn.Conv1d(1, c, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv1d(c, c, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(c, c, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(),
    )
    return Classifier(body, c, num_classes)


class _BasicBlock(nn.Module):
    """ResNet basic block with the parameter-free "option A" shortcut of He et al. (2016) for
    CIFAR (zero-padded, strided identity), as in the LDAM-DRW code's ResNet-32."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.pad:
            shortcut = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


def resnet_cifar(input_shape, num_classes, *, depth=32, widths=(16, 32, 64)):
    """CIFAR ResNet-(6n+2); depth 32 gives 3 stages x 5 blocks, about 0.46 M parameters."""
    if (depth - 2) % 6:
        raise ValueError(f"resnet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    layers = [nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    cin = widths[0]
    for stage, w in enumerate(widths):
        for b in range(n):
            layers.append(_BasicBlock(cin, w, 2 if (b == 0 and stage > 0) else 1))
            cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = Classifier(nn.Sequential(*layers), cin, num_classes)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
    return model


MODELS = {"mlp": mlp, "cnn1d": cnn1d, "resnet32": resnet_cifar}


def build_model(cfg: dict, input_shape, num_classes: int, aux_head: bool = False) -> Classifier:
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=2)
        raise KeyError(f"unknown model {name!r}{' (did you mean ' + ', '.join(close) + '?)' if close else ''}; valid: {sorted(MODELS)}")
    if "hidden" in cfg:
        cfg["hidden"] = tuple(cfg["hidden"])
    model = MODELS[name](tuple(input_shape), num_classes, **cfg)
    return model.add_aux_head() if aux_head else model
