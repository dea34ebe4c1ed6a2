"""The TensorRT side of the fused slot-attention plugin (`build-engine --plugins triton`): its
definition for `tensorrt.plugin`, registered before an engine that uses it is built
(export/trt_plugins.py `prepare`) or run (trt_backend.py). JIT (TensorRT 10.6-10.8) calls the
Triton kernel from Python per launch; AOT (10.9+) compiles it to PTX baked into the plan.

No `from __future__ import annotations` in this module: `tensorrt.plugin` reads the decorated
functions' type hints as classes when the decorators run (strings fail its checks).
"""
from typing import Tuple, Union

from ..errors import EngineError
from .trt_facts import detect_features, plugin_module

NAMESPACE = "jsa_rt"
OP = "slot_attention_step"
PLUGIN_ID = f"{NAMESPACE}::{OP}"
TRITON_VERSION_NOTE = "AOT PTX depends on the Triton version: rebuild engines after upgrading triton"


def register_for_runtime(trt) -> None:
    """Running an engine with the plugin: JIT plugins need the Python definitions registered in
    this process; AOT ones carry their kernel (registering is still harmless)."""
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
