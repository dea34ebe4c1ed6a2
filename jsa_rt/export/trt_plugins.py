"""Opt-in `--plugins triton`: the fused slot-attention step (jsa_rt.kernels) inside the TensorRT
engine, as a TensorRT Python plugin ("quickly deployable plugin", `tensorrt.plugin`).

Export side (torch, no TensorRT): `use_plugin_ops` sets the model's slot kernels, through the
model's one seam (model/slot_kernels.py `use_kernels`), to `plugin_kernels()`: the slot
attention's read-out step becomes one ONNX node `jsa_rt::slot_attention_step` (q, k, v ->
updates, attn) carrying `plugin_namespace="jsa_rt"` (and `aot=1`), which is how TensorRT's ONNX
parser maps a node to a registered Python plugin. The node is declared with an explicit
onnx.defs.OpSchema: the exporter and the checker need it.

Build side (TensorRT): `prepare()` registers the plugin (jsa_rt/runtime/trt_plugin.py, which
running an engine needs too) before parsing.
  TensorRT >= 10.9: ahead-of-time: the Triton kernel compiled to PTX (jsa_rt/kernels/aot.py),
                    baked into the plan; no Python at run time. Float constants (scale, eps) become
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
from ..errors import EngineError
from ..runtime.trt_facts import plugin_module
from ..runtime.trt_plugin import NAMESPACE, OP, PLUGIN_ID, TRITON_VERSION_NOTE, register


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


_PLUGIN_KERNELS = None


def plugin_kernels():
    """The slot kernels of a `--plugins triton` export: the PyTorch reference loop with its
    competition step as the plugin op (one ONNX node per step), for the model's one seam
    (model/slot_kernels.py). Defined on first use: this module imports no torch."""
    global _PLUGIN_KERNELS
    if _PLUGIN_KERNELS is None:
        from ..model.slot_kernels import SlotKernels
        op = _torch_op()

        class PluginSlotKernels(SlotKernels):
            name = "tensorrt-plugin"

            def attend(self, q, k, v, scale, eps):
                updates, attn = op(q, k, v, float(scale), float(eps))
                return attn, updates
        _PLUGIN_KERNELS = PluginSlotKernels()
    return _PLUGIN_KERNELS


def use_plugin_ops(model):
    """Run the slot attention of `model` (in place) through the plugin op."""
    from ..model.slot_kernels import use_kernels
    if use_kernels(model, plugin_kernels()) is None:
        raise EngineError("--plugins triton applies to JSA models (slot attention); this model has none")
    return model


# ---- TensorRT side --------------------------------------------------------------------------
def prepare(trt, feats, log=print, gpu: tuple[str, str] | None = None) -> int:
    """Register the plugin for this TensorRT; returns extra network-creation flags."""
    if not feats.python_plugins:
        raise EngineError(f"--plugins triton needs TensorRT >= 10.6 (tensorrt.plugin); this is "
                          f"{feats.version} (JetPack 6 ships 10.3): use --plugins none, the default")
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
