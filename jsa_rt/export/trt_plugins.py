"""Opt-in `--plugins triton`: the fused slot-attention step (jsa_rt.kernels) inside the TensorRT
engine, as a TensorRT Python plugin ("quickly deployable plugin", `tensorrt.plugin`).

Export side (torch, no TensorRT): the slot attention's read-out step becomes one ONNX node
`jsa_rt::slot_attention_step` (q, k, v -> updates, attn) carrying `plugin_namespace="jsa_rt"` (and
`aot=1`), which is how TensorRT's ONNX parser maps a node to a registered Python plugin. The node
is declared with an explicit onnx.defs.OpSchema: the exporter and the checker need it.

Build/run side (TensorRT): `prepare()` registers the plugin before parsing.
  TensorRT >= 10.9: ahead-of-time: the Triton kernel compiled to PTX (kernels/aot.py), baked
                    into the plan; no Python at run time. Float constants (scale, eps) become
                    constexpr; the only runtime scalar is the token count (int32), in the kernel's
                    order inputs, scalars, outputs. PTX ISA 8.5 on TensorRT 10 (JetPack 6 driver).
  10.6 - 10.8:      just-in-time: TensorRT calls back into Python (torch + triton) per launch,
                    so the engine only runs inside a Python process that imported this module.
  10.3 - 10.5:      no tensorrt.plugin: refused with a one-line error (JetPack 6 ships 10.3; the
                    pure-ONNX engine, --plugins none, is the default for that reason).
Never verified here (no TensorRT): tools/validate_trt.sh is the check.

No `from __future__ import annotations` in this module: `tensorrt.plugin` reads the decorated
functions' type hints as classes when the decorators run (strings fail its checks).
"""
import types
from typing import Tuple, Union

from ..errors import EngineError

NAMESPACE = "jsa_rt"
OP = "slot_attention_step"
PLUGIN_ID = f"{NAMESPACE}::{OP}"
TRITON_VERSION_NOTE = "AOT PTX depends on the Triton version: rebuild engines after upgrading triton"


# ---- export side ----------------------------------------------------------------------------
def onnx_schema():
    """The explicit OpSchema of the plugin node (registered once per process)."""
    import onnx
    from onnx.defs import OpSchema
    try:
        return onnx.defs.get_schema(OP, 1, NAMESPACE)
    except Exception:
        pass
    schema = OpSchema(
        OP, NAMESPACE, 1,
        doc="Fused slot-attention step: softmax over slots (fp32) + eps, renormalised over "
            "tokens; updates = attn @ v. A TensorRT plugin from jsa-rt.",
        inputs=[OpSchema.FormalParameter("q", "T"), OpSchema.FormalParameter("k", "T"),
                OpSchema.FormalParameter("v", "T")],
        outputs=[OpSchema.FormalParameter("updates", "T"), OpSchema.FormalParameter("attn", "F")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "q/k/v/updates"),
                          ("F", ["tensor(float)"], "attention, always fp32")],
        attributes=[OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "logit scale"),
                    OpSchema.Attribute("eps", OpSchema.AttrType.FLOAT, "attention eps"),
                    OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "for TensorRT"),
                    OpSchema.Attribute("aot", OpSchema.AttrType.INT, "1: use the AOT implementation")])
    onnx.defs.register_schema(schema)
    return schema


_TORCH_OP = None


def _torch_op():
    """torch.ops.jsa_rt.slot_attention_step: the kernel in eager, an opaque node under export."""
    global _TORCH_OP
    if _TORCH_OP is None:
        import torch

        # explicit schema: no need for custom_op to infer one from hints
        @torch.library.custom_op(f"{NAMESPACE}::{OP}", mutates_args=(), schema=(
            "(Tensor q, Tensor k, Tensor v, float scale, float eps) -> (Tensor, Tensor)"))
        def slot_attention_step(q, k, v, scale, eps):
            from .. import kernels
            updates, attn = kernels.slot_attention_step(q, k, v, scale, eps)
            return updates.clone(), attn.clone()

        @slot_attention_step.register_fake
        def _(q, k, v, scale, eps):
            return torch.empty_like(q), q.new_empty((q.shape[0], q.shape[1], k.shape[1]),
                                                    dtype=torch.float32)
        _TORCH_OP = torch.ops.jsa_rt.slot_attention_step.default
    return _TORCH_OP


def translation_table() -> dict:
    """For torch.onnx.export(..., custom_translation_table=...): the plugin node."""
    import onnxscript
    onnx_schema()
    custom = onnxscript.values.Opset(NAMESPACE, 1)

    def slot_attention_step(q, k, v, scale: float, eps: float):
        return custom.slot_attention_step(q, k, v, scale=scale, eps=eps,
                                          plugin_namespace=NAMESPACE, aot=1, _num_outputs=2)
    return {_torch_op(): slot_attention_step}


def use_plugin_ops(model):
    """Route every SlotAttention.attend of `model` (in place) through the plugin op."""
    op = _torch_op()

    def attend(self, q, k, v, triton=False):      # `triton` is the model's own kernel switch: unused here
        updates, attn = op(q, k, v, float(self.scale), float(self.eps))
        return attn, updates
    slots = getattr(model, "slots", None)
    if slots is None:
        raise EngineError("--plugins triton applies to JSA models (slot attention); this model has none")
    for module in (slots.image, slots.audio):
        module.attend = types.MethodType(attend, module)
    return model


# ---- TensorRT side --------------------------------------------------------------------------
def prepare(trt, feats, log=print, gpu: tuple[str, str] | None = None) -> int:
    """Register the plugin for this TensorRT; returns extra network-creation flags."""
    if not feats.python_plugins:
        raise EngineError(f"--plugins triton needs TensorRT >= 10.6 (tensorrt.plugin); this is "
                          f"{feats.version} (JetPack 6 ships 10.3): use --plugins none, the default")
    from .tensorrt_build import plugin_module
    trtp = plugin_module(trt)
    cc = int(gpu[1].replace(".", "")) if gpu else 87
    ptx_version = 85 if feats.version_tuple[0] < 11 else None
    register(trt, trtp, aot=feats.aot_plugins, cc=cc, ptx_version=ptx_version)
    flags = 0
    if feats.aot_plugins and hasattr(trt.NetworkDefinitionCreationFlag, "PREFER_AOT_PYTHON_PLUGINS"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS)
    mode = f"AOT PTX for sm_{cc}" if feats.aot_plugins else "JIT (needs Python, torch and triton at run time)"
    log(f"      plugin {PLUGIN_ID}: {mode}; {TRITON_VERSION_NOTE}")
    return flags


def register_for_runtime(trt) -> None:
    """Running an engine with the plugin: JIT plugins need the Python definitions registered in
    this process; AOT ones carry their kernel (registering is still harmless)."""
    from .tensorrt_build import detect_features, plugin_module
    feats = detect_features(trt)
    if feats.python_plugins:
        register(trt, plugin_module(trt), aot=False)


_MARK = "_jsa_rt_registered"


def register(trt, trtp, aot: bool, cc: int = 87, ptx_version: int | None = None) -> None:
    # tensorrt.plugin refuses a second definition of an id; the AOT registration carries the
    # JIT impl too, so whichever comes first serves both building and running. The mark lives
    # on the plugin module itself (an id() could be reused by another module later).
    if getattr(trtp, _MARK, False):
        return
    setattr(trtp, _MARK, True)

    # The hints below are part of tensorrt.plugin's API: it derives the plugin's schema from them
    @trtp.register(PLUGIN_ID)
    def desc(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, scale: float,
             eps: float) -> Tuple[trtp.TensorDesc, trtp.TensorDesc]:
        updates = q.like()
        attn = trtp.from_shape_expr((q.shape_expr[0], q.shape_expr[1], k.shape_expr[1]),
                                    dtype=trt.float32)
        return updates, attn

    @trtp.autotune(PLUGIN_ID)
    def autotune(q, k, v, outputs):
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16, FP32")]

    @trtp.impl(PLUGIN_ID)
    def impl(q, k, v, scale: float, eps: float, outputs, stream: int):
        import torch
        from ..kernels import slot_attention as sa
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            qt, kt, vt = (torch.as_tensor(t, device="cuda") for t in (q, k, v))
            ut, at = (torch.as_tensor(t, device="cuda") for t in outputs)
            batch, slots, dim = qt.shape
            sa.slot_attention_step_kernel[(batch,)](
                qt, kt, vt, kt.shape[1], ut, at, SCALE=float(scale), EPS=float(eps), S=slots, D=dim,
                **sa.block_sizes(slots, kt.shape[1], dim))

    if not aot:
        return

    @trtp.aot_impl(PLUGIN_ID)
    def aot_impl(q, k, v, scale: float, eps: float, outputs, tactic: int
                 ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        from ..kernels.aot import compile_kernel
        dtype = "float16" if q.dtype == trt.float16 else "float32"
        slots, tokens, dim = (_const(q.shape_expr[1]), _const(k.shape_expr[1]), _const(q.shape_expr[2]))
        num_warps = 4
        kernel = compile_kernel(OP, cc=cc, dtype=dtype, num_warps=num_warps, ptx_version=ptx_version,
                                num_slots=slots, num_tokens=tokens, dim=dim, scale=scale, eps=eps)
        launch = trtp.KernelLaunchParams()
        launch.grid_x = q.shape_expr[0]                       # one program per batch element
        launch.block_x = num_warps * 32
        launch.shared_mem = kernel.shared_bytes               # what Triton's compiler says it uses
        extra = trtp.SymIntExprs(1)
        extra[0] = trtp.SymInt32(k.shape_expr[1])             # n_tokens
        return kernel.entry, kernel.ptx, launch, extra


def _const(expr) -> int:
    """A static dimension of a TensorRT shape expression (our graphs have fixed S, N, D)."""
    if getattr(expr, "is_constant", True) is False:           # a property in tensorrt.plugin
        raise EngineError("the slot-attention plugin needs static slot/token/dim sizes; "
                          "export without --dynamic-batch changes to those dims")
    value = getattr(expr, "constant_value", None)             # a method, not a property
    return int(value() if callable(value) else expr)
