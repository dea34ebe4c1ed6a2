"""Launch the AOT-compiled PTX exactly as TensorRT's AOT plugin launcher does, on a real GPU.

TensorRT (10.9+) loads the PTX that `trt_plugins.aot_impl` returns and launches its entry with
the plugin's inputs, its int32 extra arguments and its outputs, nothing more. Triton appends
hidden scratch pointers to each entry, which `kernels.aot` removes (see its docstring). This
script checks, without TensorRT, that the edited PTX loads with the CUDA driver and gives the
PyTorch reference's result when launched with exactly that argument list and launch shape:

    python tools/check_aot_launch.py            # needs an NVIDIA GPU, torch (CUDA) and triton

It uses the driver API through ctypes (libcuda), in the CUDA context torch has made current.
Exits non-zero on any mismatch; prints one line per case.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

CUDA_SUCCESS = 0


def _driver():
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError as exc:
        sys.exit(f"check_aot_launch: no CUDA driver library ({exc}); run this on an NVIDIA GPU machine")


def _check(result: int, what: str, cuda) -> None:
    if result != CUDA_SUCCESS:
        message = ctypes.c_char_p()
        cuda.cuGetErrorString(result, ctypes.byref(message))
        raise RuntimeError(f"{what} failed: {message.value.decode() if message.value else result}")


def launch_ptx(cuda, ptx: str, entry: str, args: list, grid: int, block: int, shared: int) -> None:
    """Load `ptx`, launch `entry` on torch's current stream with `args` (tensors -> device
    pointers, ints -> int32), as TensorRT's AOT launcher does, and wait for it."""
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    _check(cuda.cuModuleLoadData(ctypes.byref(module), ptx.encode() + b"\0"), "cuModuleLoadData", cuda)
    try:
        _check(cuda.cuModuleGetFunction(ctypes.byref(function), module, entry.encode()),
               "cuModuleGetFunction", cuda)
        values = [ctypes.c_uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else ctypes.c_int32(a)
                  for a in args]
        params = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in values])
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        _check(cuda.cuLaunchKernel(function, grid, 1, 1, block, 1, 1, shared, stream, params, None),
               "cuLaunchKernel", cuda)
        torch.cuda.synchronize()
    finally:
        cuda.cuModuleUnload(module)


def main() -> int:
    if not torch.cuda.is_available():
        sys.exit("check_aot_launch: torch sees no CUDA GPU; run this on an NVIDIA GPU machine")
    from jsa_rt.kernels import aot, reference
    from jsa_rt.kernels.gru import BLOCK as GRU_BLOCK
    torch.cuda.init()
    cuda = _driver()
    major, minor = torch.cuda.get_device_capability()
    cc, num_warps, failures = 10 * major + minor, 4, 0
    torch.manual_seed(0)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 1e-2)):
        name = str(dtype).replace("torch.", "")
        # the slot-attention plugin: grid = batch, extra int32 = n_tokens (trt_plugins.aot_impl)
        batch, slots, tokens, dim, scale, eps = 3, 2, 49, 512, 512 ** -0.5, 1e-8
        q, k, v = (torch.randn(batch, n, dim, device="cuda", dtype=dtype) for n in (slots, tokens, tokens))
        u = torch.full((batch, slots, dim), float("nan"), device="cuda", dtype=dtype)
        attn = torch.full((batch, slots, tokens), float("nan"), device="cuda", dtype=torch.float32)
        kernel = aot.compile_kernel("slot_attention_step", cc=cc, dtype=name, num_warps=num_warps,
                                    num_slots=slots, num_tokens=tokens, dim=dim, scale=scale, eps=eps)
        launch_ptx(cuda, kernel.ptx, kernel.entry, [q, k, v, tokens, u, attn], batch, num_warps * 32,
                   kernel.shared_bytes)
        want_u, want_attn = reference.slot_attention_step(q.double(), k.double(), v.double(), scale, eps)
        err = max(((u.double() - want_u).abs().max() / want_u.abs().max()).item(),
                  ((attn.double() - want_attn).abs().max() / want_attn.abs().max()).item())
        ok = err <= tol
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} slot_attention_step {name} sm_{cc}: relative error {err:.2e} (<= {tol})")
        # the GRU tail: grid = cdiv(rows * dim, BLOCK), extra int32 = n_rows
        rows = 7
        gi, gh = (torch.randn(rows, 3 * dim, device="cuda", dtype=dtype) for _ in range(2))
        h = torch.randn(rows, dim, device="cuda", dtype=dtype)
        h_new = torch.full_like(h, float("nan"))
        kernel = aot.compile_kernel("gru_update", cc=cc, dtype=name, num_warps=num_warps, dim=dim)
        launch_ptx(cuda, kernel.ptx, kernel.entry, [gi, gh, h, rows, h_new],
                   (rows * dim + GRU_BLOCK - 1) // GRU_BLOCK, num_warps * 32, kernel.shared_bytes)
        want = reference.gru_update(gi.double(), gh.double(), h.double())
        err = ((h_new.double() - want).abs().max() / want.abs().max()).item()
        ok = err <= tol
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} gru_update {name} sm_{cc}: relative error {err:.2e} (<= {tol})")
    print(f"check_aot_launch: {'all cases match' if not failures else f'{failures} case(s) FAILED'} "
          f"({torch.cuda.get_device_name()})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
