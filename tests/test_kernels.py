"""Triton kernels against their PyTorch references.

By default the kernels run on CPU under the Triton interpreter (kernel_helpers sets
TRITON_INTERPRET=1 before any kernel module is imported). On a GPU machine, JSA_KERNELS_DEVICE=cuda
runs the same tests compiled (tools/gpu_checks.sh does). Outputs are allocated NaN-filled
(`poisoned` fixture), so an element a kernel forgets to write fails the comparison.
The experiment kernels/experiments/slot_loop.py has its own tests: test_experiment_slot_loop.py.
"""
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kernel_helpers import DEVICE, FP_TOL, poison_empty, randn, rel_err, skip_unless_runnable

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]
PYTHON_PRELUDE = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"    # for run_python's subprocesses

import jsa_rt.kernels as K  # noqa: E402
from jsa_rt.kernels import reference, slot_attention  # noqa: E402

skip_unless_runnable(slot_attention.slot_attention_step_kernel)


@pytest.fixture
def poisoned(monkeypatch):
    poison_empty(monkeypatch)


# ---- slot-attention step ------------------------------------------------------------------------
# every token count (49 image, 16 audio, 196, 1) with every dtype; S runs through 2..7
STEP_CASES = [(n, 2 + i % 6, dtype) for i, (n, dtype) in enumerate(
    itertools.product((49, 16, 196, 1), (torch.float32, torch.float16, torch.bfloat16)))]


@pytest.mark.parametrize("n,s,dtype", STEP_CASES)
def test_step_matches_reference(poisoned, n, s, dtype):
    B, D = 3, 48                                 # D not a power of two: masked tails
    q, k, v = randn(B, s, D, dtype=dtype), randn(B, n, D, dtype=dtype), randn(B, n, D, dtype=dtype)
    gamma = 0.1 if s % 2 else 1.0                # the sharpened inference variant too
    updates, attn = K.slot_attention_step(q, k, v, D ** -0.5, 1e-8, gamma=gamma, backend="triton")
    ref_u, ref_a = reference.slot_attention_step(q.double(), k.double(), v.double(), D ** -0.5, 1e-8, gamma)
    assert updates.dtype == dtype and attn.dtype == torch.float32
    assert attn.shape == (B, s, n) and updates.shape == (B, s, D)
    assert rel_err(attn, ref_a) < FP_TOL[torch.float32]       # softmax stays fp32 for any input dtype
    assert rel_err(updates, ref_u) < FP_TOL[dtype]
    assert torch.allclose(attn.sum(-1).double().cpu(), torch.ones(B, s, dtype=torch.float64), atol=1e-5)


def test_step_paper_size_and_eps_survives_fp16(poisoned):
    # D=512, N=49, S=2 as in the paper; logits large enough that fp16 would flush the small
    # softmax values (and the 1e-8 eps) to zero without the fp32 path
    q, k, v = randn(2, 2, 512, scale=3.0, seed=1), randn(2, 49, 512, scale=3.0, seed=2), randn(2, 49, 512, seed=3)
    for dtype in (torch.float32, torch.float16):
        updates, attn = K.slot_attention_step(q.to(dtype), k.to(dtype), v.to(dtype), 512 ** -0.5, 1e-8,
                                              backend="triton")
        ref_u, ref_a = reference.slot_attention_step(
            *(t.to(dtype).double() for t in (q, k, v)), 512 ** -0.5, 1e-8)
        assert rel_err(attn, ref_a) < 2e-5 and rel_err(updates, ref_u) < FP_TOL[dtype]
        assert (attn > 0).all()                  # eps kept every weight positive


def test_step_gradients_match_reference():
    B, S, N, D = 2, 3, 16, 32
    leaves = [randn(*shape, seed=i).requires_grad_() for i, shape in enumerate([(B, S, D), (B, N, D), (B, N, D)])]
    twins = [t.detach().clone().requires_grad_() for t in leaves]
    w_u, w_a = randn(B, S, D, seed=7), randn(B, S, N, seed=8)
    u, a = K.slot_attention_step(*leaves, D ** -0.5, 1e-8, gamma=0.5, backend="triton")
    ((u * w_u).sum() + (a * w_a).sum()).backward()
    ru, ra = reference.slot_attention_step(*twins, D ** -0.5, 1e-8, 0.5)
    ((ru * w_u).sum() + (ra * w_a).sum()).backward()
    for got, want in zip(leaves, twins):
        assert rel_err(got.grad, want.grad) < 1e-5


# ---- GRU ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows,dim,dtype", [(1, 32, torch.float32), (7, 48, torch.float16),
                                            (33, 64, torch.bfloat16), (4, 512, torch.float32)])
def test_gru_update_matches_reference(poisoned, rows, dim, dtype):
    gi, gh = randn(rows, 3 * dim, dtype=dtype, scale=2.0), randn(rows, 3 * dim, dtype=dtype, scale=2.0)
    h = randn(rows, dim, dtype=dtype)
    got = K.gru_update(gi, gh, h, backend="triton")
    assert got.dtype == dtype and got.shape == h.shape
    assert rel_err(got, reference.gru_update(gi.double(), gh.double(), h.double())) < FP_TOL[dtype]


def test_gru_update_matches_torch_grucell():
    cell = torch.nn.GRUCell(40, 40).to(DEVICE)
    x, h = randn(6, 40), randn(6, 40)
    gi, gh = torch.nn.functional.linear(x, cell.weight_ih, cell.bias_ih), torch.nn.functional.linear(
        h, cell.weight_hh, cell.bias_hh)
    with torch.no_grad():
        assert rel_err(K.gru_update(gi, gh, h, backend="triton"), cell(x, h)) < 1e-5
        assert rel_err(K.gru_cell(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
                                  backend="triton"), cell(x, h)) < 1e-5


def test_gru_update_backward_is_triton_and_matches_reference():
    gi, gh, h = randn(5, 96, seed=1, scale=2.0), randn(5, 96, seed=2, scale=2.0), randn(5, 32, seed=3)
    leaves = [t.clone().requires_grad_() for t in (gi, gh, h)]
    twins = [t.clone().requires_grad_() for t in (gi, gh, h)]
    weight = randn(5, 32, seed=4)
    (K.gru_update(*leaves, backend="triton") * weight).sum().backward()
    (reference.gru_update(*twins) * weight).sum().backward()
    for got, want in zip(leaves, twins):
        assert rel_err(got.grad, want.grad) < 1e-5


@pytest.mark.parametrize("rows,dim,dtype", [(3, 32, torch.float32), (20, 48, torch.float16)])
def test_gru_cell_matches_reference(poisoned, rows, dim, dtype):
    x, h = randn(rows, dim, dtype=dtype), randn(rows, dim, dtype=dtype)
    w_ih, w_hh = randn(3 * dim, dim, scale=dim ** -0.5), randn(3 * dim, dim, scale=dim ** -0.5)
    b_ih, b_hh = randn(3 * dim, scale=0.1), randn(3 * dim, scale=0.1)
    got = K.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, backend="triton")
    want = reference.gru_cell(x.double(), h.double(), w_ih.double(), w_hh.double(), b_ih.double(), b_hh.double())
    assert got.dtype == dtype and rel_err(got, want) < FP_TOL[dtype]


def test_gru_cell_gradients_match_reference():
    args = [randn(4, 32, seed=1), randn(4, 32, seed=2), randn(96, 32, seed=3, scale=0.2),
            randn(96, 32, seed=4, scale=0.2), randn(96, seed=5), randn(96, seed=6)]
    leaves = [t.clone().requires_grad_() for t in args]
    twins = [t.clone().requires_grad_() for t in args]
    weight = randn(4, 32, seed=7)
    (K.gru_cell(*leaves, backend="triton") * weight).sum().backward()
    (reference.gru_cell(*twins) * weight).sum().backward()
    for got, want in zip(leaves, twins):
        assert rel_err(got.grad, want.grad) < 1e-5


# ---- public API -----------------------------------------------------------------------------------
def test_backend_selection():
    assert K.triton_available(DEVICE)
    assert K.resolve_backend(DEVICE, "auto") == "triton"
    assert K.resolve_backend(DEVICE, "torch") == "torch"
    with pytest.raises(ValueError):
        K.resolve_backend(DEVICE, "cuda")
    q, k, v = randn(1, 2, 8), randn(1, 5, 8), randn(1, 5, 8)
    got = K.slot_attention_step(q, k, v, 0.3, 1e-8, backend="torch")
    want = reference.slot_attention_step(q, k, v, 0.3, 1e-8)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def run_python(code: str, env_drop=("TRITON_INTERPRET",)) -> str:
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    done = subprocess.run([sys.executable, "-c", PYTHON_PRELUDE + code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_import_without_triton_falls_back_to_torch():
    out = run_python("""
import json
sys.modules["triton"] = None                     # make `import triton` fail
import torch
from jsa_rt.kernels import triton_available, slot_attention_step, gru_update
from jsa_rt.errors import DeviceError
q, k, v = torch.randn(1, 2, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
u, a = slot_attention_step(q, k, v, 0.3, 1e-8)
try:
    gru_update(torch.randn(2, 24), torch.randn(2, 24), torch.randn(2, 8), backend="triton")
    raised = ""
except DeviceError as e:
    raised = str(e)
print(json.dumps({"available": triton_available("cpu"), "shape": list(a.shape), "raised": raised}))
""")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["available"] is False and result["shape"] == [1, 2, 5]
    assert "kernels='torch'" in result["raised"]


# ---- ahead-of-time PTX --------------------------------------------------------------------------
def assert_ptxas_accepts(ptx: str, cc: int) -> None:
    """NVIDIA's assembler (bundled with Triton) turns the PTX we edited into a cubin for its own
    target (Triton writes sm_90a for Hopper)."""
    import re

    import triton
    target = re.search(r"^\.target (sm_\w+)", ptx, re.M).group(1)
    assert target.rstrip("a") == f"sm_{cc}"
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        done = subprocess.run([str(ptxas), f"-arch={target}", str(src), "-o", str(Path(tmp) / "k.cubin")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_hidden_parameters_are_removed_only_when_unused():
    from types import SimpleNamespace

    from jsa_rt.kernels.aot import without_hidden_params
    ptx = (".entry k(\n\t.param .u64 k_param_0,\n\t.param .u32 k_param_1,\n\t.param .u64 k_param_2,\n"
           "\t.param .u64 k_param_3\n)\n{\n\tld.param.u64 %rd1, [k_param_0];\n\tret;\n}\n")
    no_scratch = SimpleNamespace(global_scratch_size=0, profile_scratch_size=0)
    assert without_hidden_params(ptx, "k", 2, no_scratch) == (
        ".entry k(\n\t.param .u64 k_param_0,\n\t.param .u32 k_param_1\n)\n{\n\tld.param.u64 %rd1, [k_param_0];"
        "\n\tret;\n}\n")
    with pytest.raises(ValueError, match="global_scratch memory"):
        without_hidden_params(ptx, "k", 2, SimpleNamespace(global_scratch_size=128, profile_scratch_size=0))
    reads_hidden = ptx.replace("ret;", "ld.param.u64 %rd2, [k_param_3];\n\tret;")
    with pytest.raises(ValueError, match="reads a hidden one"):
        without_hidden_params(reads_hidden, "k", 2, no_scratch)


def test_aot_ptx_entry_and_parameter_order():
    out = run_python("""
import json
from jsa_rt.kernels.aot import compile_ptx
result = {}
for cc in (87, 90):
    ptx, entry, sig = compile_ptx("slot_attention_step", cc=cc, ptx_version=85 if cc == 87 else None,
                                  num_slots=2, num_tokens=49, dim=512, scale=512 ** -0.5, eps=1e-8, gamma=0.1)
    gptx, gentry, gsig = compile_ptx("gru_update", cc=cc, dtype="float16", dim=512)
    result[cc] = {"step": [ptx, entry, sig], "gru": [gptx, gentry, gsig]}
from jsa_rt.kernels.aot import compile_kernel
k = compile_kernel("slot_attention_step", cc=87, num_slots=2, num_tokens=49, dim=512, scale=0.04, eps=1e-8)
result["shared"] = k.shared_bytes
print(json.dumps(result))
""")
    result = json.loads(out.strip().splitlines()[-1])
    for cc, target in (("87", ".target sm_87"), ("90", ".target sm_90")):
        for kind, name, want_sig in (
                ("step", "slot_attention_step_kernel",
                 ["*fp32", "*fp32", "*fp32", "i32", "*fp32", "*fp32"]),
                ("gru", "gru_update_kernel", ["*fp16", "*fp16", "*fp16", "i32", "*fp16"])):
            ptx, entry, sig = result[cc][kind]
            assert entry == name and f".entry {name}(" in ptx and target in ptx
            assert [t for _, t in sig] == want_sig
            # the PTX parameter list is exactly our arguments in order (pointers u64, int32 u32):
            # Triton's hidden scratch pointers, which TensorRT would not pass, are removed
            params = [line.split()[1] for line in ptx[ptx.index(f".entry {name}("):].split(")")[0].splitlines()
                      if ".param" in line]
            assert params == [".u64" if t.startswith("*") else ".u32" for t in want_sig]
            assert_ptxas_accepts(ptx, int(cc))
    assert ".version 8.5" in result["87"]["step"][0]
    # the launch's dynamic shared memory, as Triton's compiler reports it (what the plugin asks for)
    assert isinstance(result["shared"], int) and 0 <= result["shared"] <= 48 * 1024


def test_gru_kernels_compile_for_hopper_and_orin_without_a_gpu():
    """The interpreter runs any Python; this is the real compiler (PTX, then ptxas to a cubin), so
    a kernel only the interpreter accepts fails here. Covers the kernels the test above does not."""
    out = run_python("""
import json
from jsa_rt.kernels.aot import compile_ptx
result = []
for cc in (87, 90):
    for name in ("gru_update_backward", "gru_cell"):
        ptx, entry, sig = compile_ptx(name, cc=cc, dim=512)
        result.append([cc, entry, ".target sm_%d" % cc in ptx, [t for _, t in sig], ptx])
print(json.dumps(result))
""")
    result = json.loads(out.strip().splitlines()[-1])
    assert [(cc, entry) for cc, entry, _, _, _ in result] == [
        (cc, name) for cc in (87, 90) for name in ("gru_update_backward_kernel", "gru_cell_kernel")]
    assert all(target_ok for _, _, target_ok, _, _ in result)
    for cc, _, _, sig, ptx in result:
        assert ptx.split(")")[0].count(".param") == len(sig)      # no hidden parameters left
        assert_ptxas_accepts(ptx, cc)
    assert result[0][3] == ["*fp32"] * 4 + ["i32"] + ["*fp32"] * 3
    assert result[1][3] == ["*fp32"] * 6 + ["i32", "*fp32"]


class FakeCudaDriver:
    """Stands in for libcuda (no GPU here): records the module load and the launch, reading the
    kernel parameters back through their pointers as the driver would."""

    def __init__(self):
        self.loaded, self.launch, self.unloaded = None, None, False

    def cuModuleLoadData(self, module_ref, image):
        module_ref._obj.value, self.loaded = 11, image
        return 0

    def cuModuleGetFunction(self, function_ref, module, name):
        function_ref._obj.value, self.entry = 22, name
        return 0

    def cuLaunchKernel(self, function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        import ctypes
        self.launch = {"grid": (gx, gy, gz), "block": (bx, by, bz), "shared": shared, "extra": extra,
                       "u64": [ctypes.cast(params[i], ctypes.POINTER(ctypes.c_uint64)).contents.value
                               for i in range(len(params))],
                       "i32": [ctypes.cast(params[i], ctypes.POINTER(ctypes.c_int32)).contents.value
                               for i in range(len(params))]}
        return 0

    def cuModuleUnload(self, module):
        self.unloaded = True


def test_aot_launch_check_passes_exactly_the_plugin_arguments(monkeypatch):
    """tools/check_aot_launch.py (run on a GPU) launches the edited PTX as TensorRT would: each
    kernel parameter points at a device pointer (u64) or an int32, in the plugin's order."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("check_aot_launch", ROOT / "tools" / "check_aot_launch.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: type("S", (), {"cuda_stream": 0})())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    driver = FakeCudaDriver()
    q, k, v, u, attn = (torch.zeros(2) for _ in range(5))
    tool.launch_ptx(driver, ".entry k(\n)", "k", [q, k, v, 49, u, attn], 3, 128, 1024)
    assert driver.loaded == b".entry k(\n)\0" and driver.entry == b"k" and driver.unloaded
    assert driver.launch["grid"] == (3, 1, 1) and driver.launch["block"] == (128, 1, 1)
    assert driver.launch["shared"] == 1024 and driver.launch["extra"] is None
    pointers = driver.launch["u64"]
    assert [pointers[i] for i in (0, 1, 2, 4, 5)] == [t.data_ptr() for t in (q, k, v, u, attn)]
    assert driver.launch["i32"][3] == 49
