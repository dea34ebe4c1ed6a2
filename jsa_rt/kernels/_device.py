"""Triton device helpers shared by the kernels: activations, LayerNorm rows, a GEMM tile.

Everything here computes in fp32. Transcendentals use only tl.exp / tl.sqrt because the
interpreter (TRITON_INTERPRET=1, used by the CPU tests) has no libdevice.
"""
import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # 2*sigmoid(2x) - 1: no libdevice tanh in the interpreter
    return 2.0 * sigmoid(2.0 * x) - 1.0


@triton.jit
def _row_chunk(x_ptr, row_stride, rows, row_mask, k0, K: tl.constexpr, BK: tl.constexpr):
    """Columns k0 .. k0+BK of `rows` of a (.., K) matrix in fp32 (zeros outside), their mask and
    their column indices."""
    ks = k0 + tl.arange(0, BK)
    m = row_mask[:, None] & (ks < K)[None, :]
    a = tl.load(x_ptr + rows[:, None] * row_stride + ks[None, :], mask=m, other=0.0,
                cache_modifier=".cg").to(tl.float32)
    return a, m, ks


@triton.jit
def row_stats(x_ptr, row_stride, rows, row_mask, K: tl.constexpr, eps, BR: tl.constexpr,
              BK: tl.constexpr):
    """Mean and 1/std (biased variance, as LayerNorm) of rows of a (.., K) fp32-able matrix; two passes."""
    total = tl.zeros((BR,), tl.float32)
    for k0 in range(0, K, BK):
        a, m, ks = _row_chunk(x_ptr, row_stride, rows, row_mask, k0, K, BK)
        total += tl.sum(a, axis=1)
    mean = total / K
    sq = tl.zeros((BR,), tl.float32)
    for k0 in range(0, K, BK):
        a, m, ks = _row_chunk(x_ptr, row_stride, rows, row_mask, k0, K, BK)
        d = tl.where(m, a - mean[:, None], 0.0)
        sq += tl.sum(d * d, axis=1)
    rstd = 1.0 / tl.sqrt(sq / K + eps)
    return mean, rstd


@triton.jit
def linear_tile(x_ptr, row_stride, row0, n_rows, w_ptr, b_ptr, col0, n_cols,
                ln_w_ptr, ln_b_ptr, ln_eps,
                K: tl.constexpr, HAS_LN: tl.constexpr,
                BR: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    """fp32 tile (BR, BC) of LN?(X[row0:row0+BR]) @ W[col0:col0+BC]^T + b.

    X rows have `row_stride` elements (any float dtype); W is (n_cols, K) row-major (nn.Linear).
    Rows >= n_rows and columns >= n_cols come out as garbage-free zeros + bias; callers mask stores.
    """
    rows = row0 + tl.arange(0, BR)
    cols = col0 + tl.arange(0, BC)
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    if HAS_LN:
        mean, rstd = row_stats(x_ptr, row_stride, rows, row_mask, K, ln_eps, BR, BK)
    acc = tl.zeros((BR, BC), tl.float32)
    for k0 in range(0, K, BK):
        a, m, ks = _row_chunk(x_ptr, row_stride, rows, row_mask, k0, K, BK)
        k_mask = ks < K
        if HAS_LN:
            g = tl.load(ln_w_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)
            beta = tl.load(ln_b_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)
            a = tl.where(m, (a - mean[:, None]) * rstd[:, None] * g[None, :] + beta[None, :], 0.0)
        w = tl.load(w_ptr + cols[:, None] * K + ks[None, :],
                    mask=col_mask[:, None] & k_mask[None, :], other=0.0).to(tl.float32)
        acc += tl.dot(a, tl.trans(w), input_precision="ieee")   # fp32 FMA: the 1e-5 target rules out tf32
    bias = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    return acc + bias[None, :]


@triton.jit
def slot_softmax(logits, slot_ok, valid, scale, eps):
    """Slot attention's normalisation of (slots, tokens) logits: softmax over slots (axis 0), + eps,
    renormalised over tokens (axis 1). Padding slots and tokens (outside `valid`) come back as 0."""
    logits = tl.where(slot_ok[:, None], logits * scale, float("-inf"))
    e = tl.exp(logits - tl.max(logits, axis=0)[None, :])
    attn = tl.where(valid, e / tl.sum(e, axis=0)[None, :] + eps, 0.0)
    return attn / tl.where(slot_ok, tl.sum(attn, axis=1), 1.0)[:, None]
