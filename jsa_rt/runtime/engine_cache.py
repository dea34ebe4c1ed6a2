"""The TensorRT engine cache: keys, layout under `engines/`, JSON sidecars, atomic writes.

A TensorRT plan only runs on the TensorRT version and GPU model it was built for, so an
engine is addressed by everything that makes it what it is:

    key = sha256 of the ONNX file, TensorRT version, GPU name, compute capability,
          precision ("fp16" | "fp32"), plugin mode ("none" | "triton")

Layout (engines/README.md):

    engines/<model>/<gpu-slug>-sm<cc>/trt<version>/<graph>.<precision>.<plugins>.<onnx-sha12>/
        model.plan       plain TensorRT plan: trtexec --loadEngine and polygraphy load it as is
        model.json       sidecar: key, versions, I/O specs, profile, build time, validation
        timing.cache     TensorRT timing cache for this key (rebuilds take seconds, not minutes)

The plan is never prefixed with a header; everything jsa-rt needs to know sits in the sidecar,
including the model config, so the runtime reads it without torch. No TensorRT import here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import EngineError
from ..paths import ENGINES_DIR, file_sha256, slug

SIDECAR_FORMAT = "jsa-rt-engine/1"
PLAN_NAME, SIDECAR_NAME, TIMING_CACHE_NAME = "model.plan", "model.json", "timing.cache"
PRECISIONS = ("fp16", "fp32")
PLUGIN_MODES = ("none", "triton")
DEFAULT_ROOT = ENGINES_DIR


# ---- atomic files -------------------------------------------------------------------------------
def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """tmp file in the same folder + fsync + os.replace: a crash never leaves half a file."""
    from ..atomic import write_bytes
    return write_bytes(path, data)


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


# ---- the key ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str          # "8.7"
    precision: str                   # "fp16" | "fp32"
    plugins: str = "none"            # "none" | "triton"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.plugins not in PLUGIN_MODES:
            raise ValueError(f"plugins must be one of {PLUGIN_MODES}, got {self.plugins!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EngineKey":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def digest(self) -> str:
        """Stable short id of the whole key."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def mismatches(self, other: "EngineKey") -> list[str]:
        """Fields that differ, as 'field: ours != theirs' (for one-line errors)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]} != {b[k]}" for k in a if a[k] != b[k]]


def engine_dir(root: str | Path, model_name: str, graph: str, key: EngineKey) -> Path:
    platform = f"{slug(key.gpu_name)}-sm{key.compute_capability.replace('.', '')}"
    leaf = f"{graph}.{key.precision}.{key.plugins}.{key.onnx_sha256[:12]}"
    return Path(root) / slug(model_name) / platform / f"trt{key.tensorrt_version}" / leaf


@dataclass(frozen=True)
class EnginePaths:
    folder: Path

    @property
    def plan(self) -> Path:
        return self.folder / PLAN_NAME

    @property
    def sidecar(self) -> Path:
        return self.folder / SIDECAR_NAME

    @property
    def timing_cache(self) -> Path:
        return self.folder / TIMING_CACHE_NAME


def sidecar_for(plan: str | Path) -> Path:
    """The sidecar of a plan file: `model.json` in a cache folder, else `<plan>.json`."""
    plan = Path(plan)
    if plan.name == PLAN_NAME:
        return plan.with_name(SIDECAR_NAME)
    return plan.with_name(plan.name + ".json")


# ---- sidecars -----------------------------------------------------------------------------------
def make_sidecar(*, key: EngineKey, graph: str, onnx_path: str | Path, plan_bytes: bytes,
                 model_config: dict, inputs: list, outputs: list, profile: dict,
                 build_seconds: float, precision_report: dict, validation: dict,
                 versions: dict, plan_name: str = PLAN_NAME) -> dict:
    return {
        "format": SIDECAR_FORMAT,
        "key": key.to_dict(),
        "key_digest": key.digest(),
        "graph": graph,
        "onnx": str(onnx_path),
        "plan": plan_name,
        "plan_sha256": hashlib.sha256(plan_bytes).hexdigest(),
        "plan_bytes": len(plan_bytes),
        "model_config": model_config,
        "inputs": inputs,
        "outputs": outputs,
        "profile": profile,
        "build_seconds": round(float(build_seconds), 3),
        "precision": precision_report,
        "validation": validation,
        "versions": versions,
    }


def read_sidecar(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"engine sidecar missing: {path}; rebuild with `jsa-rt build-engine`")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"engine sidecar {path} is unreadable ({type(exc).__name__}); "
                          f"rebuild with `jsa-rt build-engine --force`") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise EngineError(f"{path} is not a jsa-rt engine sidecar (format {SIDECAR_FORMAT}); "
                          f"rebuild with `jsa-rt build-engine --force`")
    return data


def verify_plan(plan: str | Path, sidecar: dict | None = None) -> dict:
    """Check a plan against its sidecar (exists, size and sha256 match). -> the sidecar.
    Catches truncated copies and plans overwritten by another build."""
    plan = Path(plan)
    if not plan.is_file():
        raise EngineError(f"engine not found: {plan}; build it with `jsa-rt build-engine --fp16`")
    sidecar = read_sidecar(sidecar_for(plan)) if sidecar is None else sidecar
    size = plan.stat().st_size
    if size != sidecar.get("plan_bytes") or file_sha256(plan) != sidecar.get("plan_sha256"):
        raise EngineError(f"engine {plan} is corrupt (size/sha256 differ from its sidecar); "
                          f"rebuild with `jsa-rt build-engine --force`")
    return sidecar


def check_compatible(sidecar: dict, tensorrt_version: str, gpu_name: str,
                     compute_capability: str) -> None:
    """An engine runs only on the TensorRT version and GPU it was built for: say which differs."""
    key = sidecar["key"]
    wrong = []
    if key["tensorrt_version"] != tensorrt_version:
        wrong.append(f"TensorRT {key['tensorrt_version']} (this machine: {tensorrt_version})")
    if key["gpu_name"] != gpu_name or key["compute_capability"] != compute_capability:
        wrong.append(f"GPU {key['gpu_name']} sm{key['compute_capability']} "
                     f"(this machine: {gpu_name} sm{compute_capability})")
    if wrong:
        raise EngineError("engine was built for " + " and ".join(wrong)
                          + "; rebuild it here with `jsa-rt build-engine`")


def find_cached(root: str | Path, model_name: str, graph: str, key: EngineKey) -> EnginePaths | None:
    """The cache entry for `key` if a complete, intact one exists; None otherwise."""
    paths = EnginePaths(engine_dir(root, model_name, graph, key))
    if not (paths.plan.is_file() and paths.sidecar.is_file()):
        return None
    try:
        sidecar = verify_plan(paths.plan)
    except EngineError:
        return None
    return paths if sidecar.get("key_digest") == key.digest() else None


def list_engines(root: str | Path = DEFAULT_ROOT) -> list[Path]:
    """Every plan under `root` that has a sidecar, newest first."""
    plans = [p for p in Path(root).rglob(PLAN_NAME) if (p.parent / SIDECAR_NAME).is_file()]
    return sorted(plans, key=lambda p: p.stat().st_mtime, reverse=True)
