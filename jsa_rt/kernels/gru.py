"""Fused GRUCell: the elementwise tail (forward and backward), and the whole cell with its GEMMs.

PyTorch GRUCell, gates in the order r, z, n, biases already inside gi = W_ih x + b_ih and
gh = W_hh h + b_hh:
    r = sigmoid(gi_r + gh_r);  z = sigmoid(gi_z + gh_z);  n = tanh(gi_n + r * gh_n)
    h' = (1 - z) * n + z * h
`gru_update_kernel` reads gi, gh, h once and writes h' (one launch instead of ~8 eager ops);
`gru_update_backward_kernel` is its exact adjoint; `gru_cell_kernel` also does both gate GEMMs
for a column tile, so the whole cell is one launch. All arithmetic is fp32.
"""
import torch
import triton
import triton.language as tl

from . import reference
from ._device import linear_tile, sigmoid, tanh


@triton.jit
def _gates(gi_r, gi_z, gi_n, gh_r, gh_z, gh_n):
    """r, z, n from the six gate pre-activations (fp32): the one place the GRU's gating is written."""
    r = sigmoid(gi_r + gh_r)
    z = sigmoid(gi_z + gh_z)
    n = tanh(gi_n + r * gh_n)
    return r, z, n


@triton.jit
def _load(ptr, offs, ok):
    return tl.load(ptr + offs, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _elements(n_rows, D: tl.constexpr, BLOCK: tl.constexpr):
    """This program's flat elements of h (B*S rows of D), whether each exists, and the offset of
    its r gate in gi/gh (z and n follow at +D and +2D)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < n_rows * D, (offs // D) * 3 * D + offs % D


@triton.jit
def gru_update_kernel(gi_ptr, gh_ptr, h_ptr, n_rows, h_new_ptr, D: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, gate = _elements(n_rows, D, BLOCK)
    r, z, n = _gates(_load(gi_ptr, gate, ok), _load(gi_ptr, gate + D, ok), _load(gi_ptr, gate + 2 * D, ok),
                     _load(gh_ptr, gate, ok), _load(gh_ptr, gate + D, ok), _load(gh_ptr, gate + 2 * D, ok))
    h = _load(h_ptr, offs, ok)
    tl.store(h_new_ptr + offs, ((1.0 - z) * n + z * h).to(h_new_ptr.dtype.element_ty), mask=ok)


@triton.jit
def gru_update_backward_kernel(gi_ptr, gh_ptr, h_ptr, grad_ptr, n_rows,
                               dgi_ptr, dgh_ptr, dh_ptr, D: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, gate = _elements(n_rows, D, BLOCK)
    gh_n = _load(gh_ptr, gate + 2 * D, ok)
    r, z, n = _gates(_load(gi_ptr, gate, ok), _load(gi_ptr, gate + D, ok), _load(gi_ptr, gate + 2 * D, ok),
                     _load(gh_ptr, gate, ok), _load(gh_ptr, gate + D, ok), gh_n)
    h = _load(h_ptr, offs, ok)
    g = _load(grad_ptr, offs, ok)
    d_n = g * (1.0 - z) * (1.0 - n * n)          # through tanh
    d_z = g * (h - n) * z * (1.0 - z)            # through sigmoid
    d_r = d_n * gh_n * r * (1.0 - r)
    ty = dgi_ptr.dtype.element_ty
    tl.store(dgi_ptr + gate, d_r.to(ty), mask=ok)
    tl.store(dgi_ptr + gate + D, d_z.to(ty), mask=ok)
    tl.store(dgi_ptr + gate + 2 * D, d_n.to(ty), mask=ok)
    tl.store(dgh_ptr + gate, d_r.to(ty), mask=ok)
    tl.store(dgh_ptr + gate + D, d_z.to(ty), mask=ok)
    tl.store(dgh_ptr + gate + 2 * D, (d_n * r).to(ty), mask=ok)
    tl.store(dh_ptr + offs, (g * z).to(dh_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _gate_tiles(x_ptr, w_ptr, b_ptr, row0, n_rows, col0, D: tl.constexpr, BR: tl.constexpr,
                BC: tl.constexpr, BK: tl.constexpr):
    """One gate GEMM's (BR, BC) tiles of x W^T + b for the r, z and n gates (W (3D, D), nn.GRUCell's)."""
    r = linear_tile(x_ptr, D, row0, n_rows, w_ptr, b_ptr, col0, D, w_ptr, w_ptr, 0.0, D, False, BR, BC, BK)
    z = linear_tile(x_ptr, D, row0, n_rows, w_ptr + D * D, b_ptr + D, col0, D, w_ptr, w_ptr, 0.0, D, False,
                    BR, BC, BK)
    n = linear_tile(x_ptr, D, row0, n_rows, w_ptr + 2 * D * D, b_ptr + 2 * D, col0, D, w_ptr, w_ptr, 0.0,
                    D, False, BR, BC, BK)
    return r, z, n


@triton.jit
def gru_cell_kernel(x_ptr, h_ptr, w_ih_ptr, w_hh_ptr, b_ih_ptr, b_hh_ptr, n_rows, h_new_ptr,
                    D: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    """One (BR rows, BC columns) tile of h': six GEMM tiles (3 gates x {ih, hh}) then the tail."""
    row0 = tl.program_id(0) * BR
    col0 = tl.program_id(1) * BC
    gi_r, gi_z, gi_n = _gate_tiles(x_ptr, w_ih_ptr, b_ih_ptr, row0, n_rows, col0, D, BR, BC, BK)
    gh_r, gh_z, gh_n = _gate_tiles(h_ptr, w_hh_ptr, b_hh_ptr, row0, n_rows, col0, D, BR, BC, BK)
    r, z, n = _gates(gi_r, gi_z, gi_n, gh_r, gh_z, gh_n)
    rows = row0 + tl.arange(0, BR)
    cols = col0 + tl.arange(0, BC)
    ok = (rows < n_rows)[:, None] & (cols < D)[None, :]
    h = tl.load(h_ptr + rows[:, None] * D + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    tl.store(h_new_ptr + rows[:, None] * D + cols[None, :],
             ((1.0 - z) * n + z * h).to(h_new_ptr.dtype.element_ty), mask=ok)


BLOCK = 1024
CELL_TILES = {"BR": 16, "BC": 32, "BK": 64}      # gru_cell_kernel: rows, columns, reduction chunk


def forward(gi, gh, h):
    gi, gh, h = gi.contiguous(), gh.contiguous(), h.contiguous()
    D = h.shape[-1]
    rows = h.numel() // D
    h_new = torch.empty_like(h)
    gru_update_kernel[(triton.cdiv(rows * D, BLOCK),)](gi, gh, h, rows, h_new, D=D, BLOCK=BLOCK)
    return h_new


def backward(gi, gh, h, grad):
    D = h.shape[-1]
    rows = h.numel() // D
    dgi, dgh, dh = torch.empty_like(gi), torch.empty_like(gh), torch.empty_like(h)
    gru_update_backward_kernel[(triton.cdiv(rows * D, BLOCK),)](
        gi, gh, h, grad.contiguous(), rows, dgi, dgh, dh, D=D, BLOCK=BLOCK)
    return dgi, dgh, dh


class GruUpdate(torch.autograd.Function):
    """Triton forward and Triton backward (gru_update_backward_kernel)."""

    @staticmethod
    def forward(ctx, gi, gh, h):
        gi, gh, h = gi.contiguous(), gh.contiguous(), h.contiguous()
        ctx.save_for_backward(gi, gh, h)
        return forward(gi, gh, h)

    @staticmethod
    def backward(ctx, grad):
        return backward(*ctx.saved_tensors, grad)


def cell_forward(x, h, w_ih, w_hh, b_ih, b_hh):
    """Whole GRUCell in one launch; x, h (M, D) with one dtype, weights fp32 or that dtype."""
    x, h = x.contiguous(), h.contiguous()
    M, D = h.shape
    w_ih, w_hh, b_ih, b_hh = (t.contiguous() for t in (w_ih, w_hh, b_ih, b_hh))
    h_new = torch.empty_like(h)
    br, bc, bk = CELL_TILES["BR"], CELL_TILES["BC"], CELL_TILES["BK"]
    gru_cell_kernel[(triton.cdiv(M, br), triton.cdiv(D, bc))](
        x, h, w_ih, w_hh, b_ih, b_hh, M, h_new, D=D, BR=br, BC=bc, BK=min(bk, triton.next_power_of_2(D)))
    return h_new


class GruCell(torch.autograd.Function):
    """Fused cell forward; backward recomputes `reference.gru_cell` with autograd."""

    @staticmethod
    def forward(ctx, x, h, w_ih, w_hh, b_ih, b_hh):
        ctx.save_for_backward(x, h, w_ih, w_hh, b_ih, b_hh)
        return cell_forward(x, h, w_ih, w_hh, b_ih, b_hh)

    @staticmethod
    def backward(ctx, grad):
        inputs = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(t.requires_grad) for t in inputs]
            wanted = [t for t in leaves if t.requires_grad]
            out = reference.gru_cell(*leaves)
            grads = iter(torch.autograd.grad(out, wanted, grad)) if wanted else iter(())
        return tuple(next(grads) if t.requires_grad else None for t in leaves)
