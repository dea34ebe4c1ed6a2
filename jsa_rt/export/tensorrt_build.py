"""`jsa-rt build-engine`: ONNX -> TensorRT plan, for TensorRT 10.3 (JetPack 6) and 11.x.

The only module that touches the TensorRT builder API, and deliberately thin. Never run on the
machines jsa-rt is developed on (TensorRT cannot be installed there): the version branching is
tested against a stand-in (tests/fake_tensorrt.py), the real thing by tools/validate_trt.sh.

Precision is strongly typed in both versions: TensorRT 11 removed BuilderFlag.FP16 and weak
typing altogether, and on 10.x we ask for NetworkDefinitionCreationFlag.STRONGLY_TYPED. So an
fp16 engine comes from an fp16-typed ONNX (`export-onnx --fp16`, which keeps the fragile parts in
fp32), and after the build the engine inspector must confirm the layers really run in fp16:
a silently-fp32 engine is an error, not a warning.

Steps: cache lookup -> parse -> config (workspace, profile, timing cache, detailed profiling)
-> build -> inspect precision -> write plan -> validate against onnxruntime -> write sidecar.
The sidecar is written last: a cache entry without one is incomplete and gets rebuilt.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import EngineError
from ..shipped import DEFAULT_MODEL
from ..runtime import engine_cache as cache
from ..runtime.trt_facts import INSTALL_HINT, TrtFeatures, detect_features, io_specs

GRAPH_ORDER = ("full", "audio", "visual")


# ---- TensorRT and what this version can do --------------------------------------------------
def import_tensorrt():
    try:
        import tensorrt as trt
    except (ImportError, OSError):
        raise EngineError(INSTALL_HINT) from None
    if not hasattr(trt, "Builder"):
        raise EngineError("this TensorRT install has no builder (tensorrt-lean is runtime-only); "
                          + INSTALL_HINT)
    return trt


def network_flags(trt, feats: TrtFeatures, extra: int = 0) -> int:
    """10.x: ask for strong typing explicitly. 11.x: always strongly typed; the flag is a
    deprecated no-op there, so it is not passed."""
    flags = extra
    if feats.weak_typing:
        if not feats.strongly_typed_flag:
            raise EngineError(f"TensorRT {feats.version} has no strongly typed networks; "
                              f"jsa-rt needs TensorRT >= 10.0 (JetPack 6 ships 10.3)")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


# ---- engine inspection --------------------------------------------------------------------------
def _dtype_class(text: str) -> str:
    t = str(text).lower()
    for needle, name in (("bf16", "bf16"), ("fp16", "fp16"), ("half", "fp16"), ("fp8", "fp8"),
                         ("int8", "int8"), ("fp32", "fp32"), ("float", "fp32")):
        if needle in t:
            return name
    return "other"


def precision_report(engine_info_json: str) -> dict:
    """Per-layer output precision from the engine inspector's JSON. TensorRT 10.x writes
    'Format/Datatype' ("Row major linear FP16 format"), 11.x a separate 'DataType' ("Half")."""
    try:
        info = json.loads(engine_info_json)
    except ValueError:
        raise EngineError("the engine inspector returned no JSON; cannot verify precision") from None
    layers = info.get("Layers", [])
    if layers and not all(isinstance(layer, dict) for layer in layers):
        raise EngineError("the engine was built without detailed profiling verbosity; "
                          "its precision cannot be verified (rebuild with build-engine --force)")
    counts: dict[str, int] = {}
    for layer in layers:
        outs = layer.get("Outputs") or []
        kinds = {_dtype_class(o.get("DataType") or o.get("Format/Datatype")
                              or o.get("Format/DataType") or o.get("Format") or "") for o in outs}
        kind = "fp16" if "fp16" in kinds else "fp32" if "fp32" in kinds else (
            sorted(kinds)[0] if kinds else "other")
        counts[kind] = counts.get(kind, 0) + 1
    floating = counts.get("fp16", 0) + counts.get("fp32", 0)
    return {"layers": len(layers), "by_output_dtype": counts,
            "fp16_fraction": round(counts.get("fp16", 0) / floating, 4) if floating else 0.0}


def check_precision(report: dict, requested: str, min_fp16_fraction: float = 0.5) -> None:
    """Fail loudly when the engine is not what was asked for."""
    fp16 = report["by_output_dtype"].get("fp16", 0)
    if requested == "fp16" and (fp16 == 0 or report["fp16_fraction"] < min_fp16_fraction):
        raise EngineError(
            f"asked for fp16 but the engine runs {fp16} of {report['layers']} layers in fp16 "
            f"({report['fp16_fraction']:.0%}): the ONNX is probably fp32-typed; export it with "
            f"`jsa-rt export-onnx --fp16` and rebuild with --force")
    if requested == "fp32" and fp16:
        raise EngineError(f"asked for fp32 but {fp16} layers run in fp16; rebuild from the fp32 "
                          f"ONNX (without --fp16) and --force")


# ---- ONNX facts (no TensorRT needed) ----------------------------------------------------------
def onnx_facts(onnx_path: Path) -> dict:
    """Inputs (name, dims with None for dynamic), jsa-rt metadata, of an exported graph."""
    import onnx
    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    inputs = []
    for value in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in value.type.tensor_type.shape.dim]
        inputs.append({"name": value.name, "dims": dims})
    return {"inputs": inputs, "meta": meta}


def optimisation_profile(inputs: list, max_batch: int = 1, opt_batch: int = 1) -> dict:
    """min/opt/max per input: a dynamic leading (batch) dim runs 1..max_batch, tuned for opt_batch."""
    opt_batch = min(max(opt_batch, 1), max_batch)
    profile = {}
    for spec in inputs:
        dims = spec["dims"]
        if any(d is None for d in dims[1:]):
            raise EngineError(f"input {spec['name']} has a dynamic non-batch dimension {dims}; "
                              f"re-export with fixed sizes (jsa-rt export-onnx)")
        rest = [int(d) for d in dims[1:]]
        if dims and dims[0] is None:
            profile[spec["name"]] = {"min": [1] + rest, "opt": [opt_batch] + rest,
                                     "max": [max_batch] + rest}
        else:
            shape = [int(d) for d in dims]
            profile[spec["name"]] = {"min": shape, "opt": shape, "max": shape}
    return profile


# ---- the build ----------------------------------------------------------------------------------
@dataclass
class BuildResult:
    plan: Path
    sidecar: dict
    reused: bool


def make_logger(trt, verbose: bool = False):
    """TensorRT's own logger: warnings and errors, or everything with --verbose."""
    return trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)


def build_engine(onnx_path, *, precision: str = "fp16", plugins: str = "none",
                 workspace_gb: float = 2.0, timing_cache: str | Path | None = None,
                 force: bool = False, root: str | Path = cache.DEFAULT_ROOT,
                 model_name: str | None = None, max_batch: int = 1, opt_batch: int = 1, validate=None,
                 gpu: tuple[str, str] | None = None, trt=None, log=print,
                 verbose: bool = False) -> BuildResult:
    """Build (or reuse) the engine for one ONNX graph. `validate(plan_path, onnx_path) -> dict`
    compares the engine with onnxruntime; `gpu` = (name, compute capability) when known;
    `trt` = the TensorRT module (tests pass a stand-in). A graph with a dynamic batch axis gets
    the profile 1..max_batch, tuned for opt_batch; a cached engine is reused only with the same
    profile."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX file not found: {onnx_path}; make it with `jsa-rt export-onnx`")
    trt = trt or import_tensorrt()
    feats = detect_features(trt)
    facts = onnx_facts(onnx_path)
    meta = facts["meta"]
    graph = meta.get("jsa_rt.graph", "full")
    onnx_precision = meta.get("jsa_rt.precision")
    if onnx_precision and onnx_precision != precision:
        flag = " --fp16" if precision == "fp16" else ""
        raise EngineError(f"{onnx_path.name} is an {onnx_precision} graph but {precision} was asked: "
                          f"strongly typed engines take their precision from the ONNX; export it "
                          f"with `jsa-rt export-onnx{flag}`")
    onnx_plugins = meta.get("jsa_rt.plugins")
    if onnx_plugins and onnx_plugins != plugins:
        raise EngineError(f"{onnx_path.name} was exported with --plugins {onnx_plugins} but "
                          f"--plugins {plugins} was asked; export and build with the same setting")
    model_name = model_name or meta.get("jsa_rt.model_name") or onnx_path.name.split(".")[0]
    if gpu is None:
        from ..runtime.cuda_mem import gpu_identity
        gpu = gpu_identity()
    key = cache.EngineKey(cache.file_sha256(onnx_path), feats.version, gpu[0], gpu[1],
                          precision, plugins)
    paths = cache.EnginePaths(cache.engine_dir(root, model_name, graph, key))
    profile_spec = optimisation_profile(facts["inputs"], max_batch=max_batch, opt_batch=opt_batch)
    if not force:
        hit = cache.find_cached(root, model_name, graph, key)
        if hit is not None:
            sidecar = cache.read_sidecar(hit.sidecar)
            if sidecar.get("validation", {}).get("passed", False) and sidecar.get("profile") == profile_spec:
                log(f"[cache] reusing {hit.plan} (same ONNX, TensorRT {feats.version}, {gpu[0]}); "
                    f"--force rebuilds")
                return BuildResult(hit.plan, sidecar, reused=True)

    log(f"[1/6] TensorRT {feats.version} on {gpu[0]} (sm{gpu[1]}): parsing {onnx_path.name} "
        f"({graph} graph, {precision}, plugins {plugins})")
    logger = make_logger(trt, verbose)
    extra_flags = 0
    if plugins == "triton":
        from . import trt_plugins
        extra_flags = trt_plugins.prepare(trt, feats, log=log, gpu=gpu)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, feats, extra_flags))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0][:300] if errors else "no detail"
        raise EngineError(f"TensorRT could not parse {onnx_path.name} ({len(errors)} errors, first: "
                          f"{first}); re-export with `jsa-rt export-onnx` for this jsa-rt version")

    log(f"[2/6] configuring: workspace {workspace_gb:g} GB, detailed profiling, timing cache")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED   # the inspector needs it
    cache_path = Path(timing_cache) if timing_cache else paths.timing_cache
    cache_blob = cache_path.read_bytes() if cache_path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cache_blob), False) and cache_blob:
        # a cache from another TensorRT, GPU or config is rejected; the build just takes longer
        log(f"      timing cache {cache_path} does not fit this TensorRT/GPU: starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    profile = builder.create_optimization_profile()
    for name, shapes in profile_spec.items():
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)

    log("[3/6] building (minutes on a Jetson; the timing cache makes rebuilds fast) ...")
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineError("TensorRT failed to build the engine (see its log above); try a larger "
                          "--workspace or re-export the ONNX")
    plan_bytes = bytes(serialized)
    log(f"      built in {build_seconds:.1f} s, {len(plan_bytes) / 1e6:.1f} MB")

    log("[4/6] inspecting layer precisions")
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise EngineError("TensorRT could not load the engine it just built; rebuild with --force")
    inspector = engine.create_engine_inspector()
    report = precision_report(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    check_precision(report, precision)
    inputs, outputs = io_specs(trt, engine)
    del engine, inspector

    log(f"[5/6] writing {paths.plan}")
    cache.atomic_write_bytes(paths.plan, plan_bytes)
    timing_blob = bytes(config.get_timing_cache().serialize())
    for target in {cache_path, paths.timing_cache}:      # the per-key cache, and --timing-cache
        cache.atomic_write_bytes(target, timing_blob)

    log("[6/6] validating against onnxruntime on fixed inputs")
    validation = validate(paths.plan, onnx_path) if validate else {"skipped": True, "passed": True}
    sidecar = cache.make_sidecar(
        key=key, graph=graph, onnx_path=onnx_path, plan_bytes=plan_bytes,
        model_config=json.loads(meta.get("jsa_rt.config", "{}")), inputs=inputs, outputs=outputs,
        profile=profile_spec, build_seconds=build_seconds, precision_report=report,
        validation=validation, versions=_versions(feats))
    cache.atomic_write_json(paths.sidecar, sidecar)
    if not validation.get("passed", False):
        raise EngineError(f"engine {paths.plan} disagrees with onnxruntime (max errors "
                          f"{validation.get('max_abs_err')}, tolerance {validation.get('tolerance')}); "
                          f"kept for inspection, not reused; report it with the sidecar")
    return BuildResult(paths.plan, sidecar, reused=False)


def _versions(feats: TrtFeatures) -> dict:
    from .. import __version__
    versions = {"tensorrt": feats.version, "jsa_rt": __version__,
                "python": platform.python_version(), "machine": platform.machine()}
    try:
        import onnx
        versions["onnx"] = onnx.__version__
    except ImportError:
        pass
    return versions


# ---- CLI ------------------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "build-engine", help="build a TensorRT engine (fp16 with --fp16) from a checkpoint or ONNX",
        description="Export (if needed) and build TensorRT engines for the full, audio and visual "
                    "graphs, cached under engines/ by ONNX hash, TensorRT version, GPU, precision "
                    "and plugin mode. Needs TensorRT (JetPack on Jetson).")
    p.add_argument("--checkpoint", default=None, help=f"checkpoint .pt or shipped name (default {DEFAULT_MODEL})")
    p.add_argument("--onnx", default=None, help="build this ONNX (and its .audio/.visual siblings) instead")
    p.add_argument("--fp16", action="store_true", help="fp16 engine (strongly typed, from the fp16 ONNX)")
    p.add_argument("--plugins", choices=cache.PLUGIN_MODES, default="none",
                   help="triton: fused Triton kernels as TensorRT plugins (TensorRT >= 10.6)")
    p.add_argument("--workspace", type=float, default=2.0, metavar="GB", help="builder workspace (GB)")
    p.add_argument("--timing-cache", default=None, metavar="PATH", help="timing cache file to reuse")
    p.add_argument("--graphs", type=_graphs, default=list(GRAPH_ORDER), help="which graphs (full,audio,visual)")
    p.add_argument("--engines-dir", default=str(cache.DEFAULT_ROOT), help="engine cache root")
    p.add_argument("--no-validate", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching engine exists")
    p.add_argument("--verbose", action="store_true", help="TensorRT info-level log")
    return p


def _graphs(text: str) -> list[str]:
    from .onnx_export import parse_graphs
    return parse_graphs(text)


def run(args) -> int:
    precision = "fp16" if args.fp16 else "fp32"
    trt = import_tensorrt()                     # fail fast, before any export work
    graphs = args.graphs
    if args.onnx:
        from .onnx_export import sibling_paths
        onnx_files = sibling_paths(Path(args.onnx), graphs)
    else:
        from .onnx_export import export_for_engine
        onnx_files = export_for_engine(args.checkpoint, precision, args.plugins, graphs,
                                       root=Path(args.engines_dir))
    from .engine_check import validate_against_onnxruntime
    validate = None if args.no_validate else validate_against_onnxruntime
    results = []
    for graph, path in onnx_files.items():
        print(f"== {graph} graph: {path}")
        results.append(build_engine(path, precision=precision, plugins=args.plugins,
                                    workspace_gb=args.workspace, timing_cache=args.timing_cache,
                                    force=args.force, root=args.engines_dir, validate=validate,
                                    trt=trt, verbose=args.verbose))
    main = results[0]
    size_mb = main.plan.stat().st_size / 1e6
    share = main.sidecar["precision"]["fp16_fraction"]
    print(f"engine: {main.plan} ({size_mb:.1f} MB, {precision}, {share:.0%} of layers fp16, "
          f"{len(results)} graph(s){', reused' if main.reused else ''}) -> next: "
          f"jsa-rt live --backend tensorrt --model {main.plan}", file=sys.stdout)
    return 0
