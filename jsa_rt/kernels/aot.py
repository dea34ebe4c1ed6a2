"""Ahead-of-time compile of the plugin-friendly kernels to PTX, without a GPU (TensorRT plugin path).

TensorRT's AOT Triton plugins (platform.md) want PTX whose kernel takes inputs, then int32
scalars, then outputs, with float constants baked in as constexpr. Triton appends hidden pointer
parameters (global / profile scratch) after those, which TensorRT does not pass; our kernels
need no scratch and never read them, so they are removed from the entry (checked: a kernel that
does need scratch is refused). `ptx_version=85` suits JetPack 6's driver.

    ptx, entry, signature = compile_ptx("slot_attention_step", cc=87, num_slots=2, num_tokens=49,
                                        dim=512, scale=512 ** -0.5, eps=1e-8, gamma=0.1)
"""
from __future__ import annotations

from dataclasses import dataclass

import triton
from triton.backends.compiler import GPUTarget

from .gru import BLOCK as GRU_BLOCK
from .gru import CELL_TILES as GRU_CELL_TILES
from .gru import gru_cell_kernel, gru_update_backward_kernel, gru_update_kernel
from .slot_attention import block_sizes, slot_attention_step_kernel

_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "fp32": "fp32", "fp16": "fp16",
           "bf16": "bf16"}


def _slot_attention_step(dtype, num_slots, num_tokens, dim, scale, eps, gamma=1.0):
    t = f"*{dtype}"
    signature = [("q_ptr", t), ("k_ptr", t), ("v_ptr", t), ("n_tokens", "i32"),
                 ("u_ptr", t), ("attn_ptr", "*fp32")]
    constexprs = {"SCALE": float(gamma * scale), "EPS": float(eps), "S": int(num_slots), "D": int(dim),
                  **block_sizes(num_slots, num_tokens, dim)}
    return slot_attention_step_kernel, signature, constexprs


def _gru_update(dtype, dim):
    t = f"*{dtype}"
    signature = [("gi_ptr", t), ("gh_ptr", t), ("h_ptr", t), ("n_rows", "i32"), ("h_new_ptr", t)]
    return gru_update_kernel, signature, {"D": int(dim), "BLOCK": GRU_BLOCK}


def _gru_update_backward(dtype, dim):
    t = f"*{dtype}"
    signature = [("gi_ptr", t), ("gh_ptr", t), ("h_ptr", t), ("grad_ptr", t), ("n_rows", "i32"),
                 ("dgi_ptr", t), ("dgh_ptr", t), ("dh_ptr", t)]
    return gru_update_backward_kernel, signature, {"D": int(dim), "BLOCK": GRU_BLOCK}


def _gru_cell(dtype, dim):
    t = f"*{dtype}"
    signature = [("x_ptr", t), ("h_ptr", t), ("w_ih_ptr", t), ("w_hh_ptr", t), ("b_ih_ptr", t),
                 ("b_hh_ptr", t), ("n_rows", "i32"), ("h_new_ptr", t)]
    return gru_cell_kernel, signature, {"D": int(dim), **GRU_CELL_TILES}


KERNELS = {"slot_attention_step": _slot_attention_step, "gru_update": _gru_update,
           "gru_update_backward": _gru_update_backward, "gru_cell": _gru_cell}


@dataclass(frozen=True)
class CompiledKernel:
    ptx: str
    entry: str
    signature: list            # [(arg name, triton type)], the PTX's leading parameters in order
    shared_bytes: int          # dynamic shared memory the launch must provide


def compile_ptx(kernel_name: str, cc: int = 87, dtype: str = "float32", num_warps: int = 4,
                ptx_version: int | None = None, **shape):
    """Compile one kernel for sm_<cc>; returns (ptx text, entry name, [(arg name, triton type)]).
    `compile_kernel` takes the same arguments and also says how much shared memory to launch with."""
    k = compile_kernel(kernel_name, cc, dtype, num_warps, ptx_version, **shape)
    return k.ptx, k.entry, k.signature


def compile_kernel(kernel_name: str, cc: int = 87, dtype: str = "float32", num_warps: int = 4,
                   ptx_version: int | None = None, **shape) -> CompiledKernel:
    """Compile one kernel for sm_<cc> (see compile_ptx).

    `shape` is the kernel's fixed configuration: for "slot_attention_step" num_slots, num_tokens,
    dim, scale, eps, gamma; for "gru_update", "gru_update_backward" and "gru_cell" dim. The returned signature lists the PTX's leading
    parameters in order (Triton's hidden scratch pointers follow them).
    """
    try:
        build = KERNELS[kernel_name]
    except KeyError:
        raise ValueError(f"unknown kernel {kernel_name!r}; choose one of {', '.join(KERNELS)}") from None
    try:
        tdtype = _DTYPES[str(dtype).replace("torch.", "")]
    except KeyError:
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}") from None
    fn, signature, constexprs = build(tdtype, **shape)
    full_signature = dict(signature)
    full_signature.update({name: "constexpr" for name in constexprs})
    src = triton.compiler.ASTSource(fn=fn, signature=full_signature, constexprs=constexprs)
    options = {"num_warps": num_warps}
    if ptx_version is not None:
        options["ptx_version"] = int(ptx_version)
    compiled = triton.compile(src, target=GPUTarget("cuda", int(cc), 32), options=options)
    entry = compiled.metadata.name
    ptx = without_hidden_params(compiled.asm["ptx"], entry, len(signature), compiled.metadata)
    return CompiledKernel(ptx, entry, signature, int(getattr(compiled.metadata, "shared", 0)))


def without_hidden_params(ptx: str, entry: str, num_args: int, metadata) -> str:
    """The PTX with the entry's parameters cut to our first `num_args`.

    A launch that passes fewer arguments than the kernel declares is undefined, and TensorRT's
    AOT launcher passes exactly the plugin's own. Triton's trailing scratch pointers are safe to
    drop only when the kernel needs no scratch memory and its body never names them; otherwise
    this refuses (a Triton upgrade that changes that must be looked at, not shipped)."""
    for kind in ("global_scratch", "profile_scratch"):
        if getattr(metadata, f"{kind}_size", 0):
            raise ValueError(f"{entry} needs Triton {kind} memory, which TensorRT's AOT launch "
                             f"cannot provide; simplify the kernel or pin the Triton version")
    head, found, rest = ptx.partition(f".entry {entry}(")
    if not found:
        raise ValueError(f"no .entry {entry} in the PTX")
    params, _, body = rest.partition(")")
    declared = params.split(",")
    hidden = [d.split()[-1] for d in declared[num_args:]]
    if len(declared) < num_args or any(name in body for name in hidden):
        raise ValueError(f"{entry}: the PTX declares {len(declared)} parameters for {num_args} "
                         f"arguments, or its body reads a hidden one; pin the Triton version")
    kept = ",".join(declared[:num_args]).rstrip() + "\n"
    return f"{head}.entry {entry}({kept}){body}"
