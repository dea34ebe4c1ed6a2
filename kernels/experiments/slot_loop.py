"""EXPERIMENT (not used by the product, not on jsa_rt's import path; kernels/README.md):
the whole slot-attention loop of one modality (method.md section 3) in ONE persistent launch.

At batch 1 the eager module is ~95 tiny launches per modality; their count, not their FLOPs, is
the cost. This kernel runs every step with a fixed grid of at most one program per SM, and
separates the data-dependent phases with a grid-wide barrier (`grid_barrier` below):

    prep      K = LN_in(x) Wk^T + bk,  Kq = K Wq (+ K.bq),  Vg = V W_ih^T + b_ih,  slots <- slots0
    T times:  attn  LN_slot(S) -> logits = LN_slot(S).Kq -> softmax over slots + eps -> renormalise
                    -> gi = A Vg   (and, on the last iteration, q = Wq LN_slot(S) + bq for the maps)
              gru   gh = S W_hh^T + b_hh; S' = GRU tail(gi, gh, S); acc = S' + b2
              mlp   acc += relu(LN_ff(S') W1^T + b1) W2^T      (split over hidden tiles, fp32 atomics)

Two rewrites by linearity remove a GEMM and a phase per iteration: q.k = LN_slot(S).(K Wq) + bq.k,
and A (V W_ih^T) = (A V) W_ih^T since the rows of A sum to 1 (b_ih folds into Vg). The weight
products (Wq^T Wk, W_ih Wv) are formed once in float64 when the parameters are packed (cached
until a parameter changes). Everything runs in fp32; outputs are fp32.

`mode="phased"` runs the same phases as separate launches (no barrier; any grid) and is what the
interpreter tests exercise with many programs; the persistent mode runs one program there.
The MLP's atomics make the last bits of the result order-dependent (|diff| ~ 1e-7).
A launch's workspace (and barrier counter) is shared per shape: do not run the same shape
concurrently on two streams.

Measured (H100, benchmarks/kernels_nvidia-h100-80gb-hbm3.json): correct to ~7e-7 vs float64, but
~0.7 ms per modality at the paper size, batch 1 -- the phases are latency-bound chains of
dependent L2 loads (LN statistics, K-chunk loops), not barrier-bound (phased mode times the same).
Beats eager PyTorch 2.3x (paper) / 5.8x (edge) but not eager replayed from a CUDA graph.
"""
import os
import weakref

import torch
import triton
import triton.language as tl

from jsa_rt.kernels import reference, resolve_backend
from jsa_rt.kernels._device import linear_tile, row_stats, sigmoid, slot_softmax, tanh

PHASE_PERSISTENT, PHASE_PREP, PHASE_ATTN, PHASE_GRU, PHASE_MLP = 0, 1, 2, 3, 4


@triton.jit
def grid_barrier(bar_ptr, target):
    """Wait until `target` arrivals have been counted at bar_ptr (every program arrives once per barrier).

    Only correct when all programs of the grid are resident at once (grid <= number of SMs):
    the persistent kernels size their grid that way. Thread 0 does the atomics (Triton predicates
    scalar atomics); release/acquire at GPU scope + the CTA barriers order the phases' memory.
    """
    tl.debug_barrier()
    tl.atomic_add(bar_ptr, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def grid_exit(bar_ptr):
    """Last program out resets the barrier counters, so the next launch (or CUDA-graph replay) starts at 0."""
    old = tl.atomic_add(bar_ptr + 1, 1, sem="acq_rel", scope="gpu")
    if old == tl.num_programs(0) - 1:
        tl.atomic_xchg(bar_ptr, 0, sem="relaxed", scope="gpu")
        tl.atomic_xchg(bar_ptr + 1, 0, sem="relaxed", scope="gpu")


def packed_layout(dim: int, hidden: int):
    """(name, numel) of the packed fp32 parameter buffer, in order; the kernel mirrors these offsets."""
    D, H = dim, hidden
    return [
        ("ln_in_w", D), ("ln_in_b", D), ("w_k", D * D), ("b_k", D),
        ("w_kq", (D + 1) * D), ("b_kq", D + 1), ("w_vg", 3 * D * D), ("b_vg", 3 * D),
        ("ln_s_w", D), ("ln_s_b", D), ("w_q", D * D), ("b_q", D),
        ("w_hh", 3 * D * D), ("b_hh", 3 * D), ("ln_f_w", D), ("ln_f_b", D),
        ("w_1", H * D), ("b_1", H), ("w_2", D * H), ("b_2", D),
    ]


@triton.jit
def _store_tile(out_ptr, row_stride, row0, n_rows, col0, n_cols, tile, BR: tl.constexpr, BC: tl.constexpr):
    rows = row0 + tl.arange(0, BR)
    cols = col0 + tl.arange(0, BC)
    tl.store(out_ptr + rows[:, None] * row_stride + cols[None, :], tile,
             mask=(rows < n_rows)[:, None] & (cols < n_cols)[None, :])


@triton.jit
def _prep_phase(x_ptr, slots0_ptr, p_ptr, kq_ptr, vg_ptr, s_ptr, k_out_ptr,
                B, N, slots0_bstride, ln_eps, pid, nprog,
                S: tl.constexpr, D: tl.constexpr, BRT: tl.constexpr, BCT: tl.constexpr,
                BKT: tl.constexpr):
    # packed offsets (see packed_layout)
    O_LNIN_W = 0
    O_LNIN_B = D
    O_WK = 2 * D
    O_BK = O_WK + D * D
    O_WKQ = O_BK + D
    O_BKQ = O_WKQ + (D + 1) * D
    O_WVG = O_BKQ + D + 1
    O_BVG = O_WVG + 3 * D * D
    CT_K: tl.constexpr = (D + BCT - 1) // BCT
    CT_KQ: tl.constexpr = (D + 1 + BCT - 1) // BCT
    CT_VG: tl.constexpr = (3 * D + BCT - 1) // BCT
    CT_ALL: tl.constexpr = CT_K + CT_KQ + CT_VG
    n_rows = B * N
    n_tasks = tl.cdiv(n_rows, BRT) * CT_ALL + 1
    for t in range(pid, n_tasks, nprog):
        if t == n_tasks - 1:
            # initial slots (shared (S,D) or per batch (B,S,D)) into the slot buffer
            for r0 in range(0, B * S, BRT):
                rows = r0 + tl.arange(0, BRT)
                for d0 in range(0, D, BKT):
                    d = d0 + tl.arange(0, BKT)
                    m = (rows < B * S)[:, None] & (d < D)[None, :]
                    src = (rows // S) * slots0_bstride + (rows % S) * D
                    val = tl.load(slots0_ptr + src[:, None] + d[None, :], mask=m, other=0.0)
                    tl.store(s_ptr + rows[:, None] * D + d[None, :], val.to(tl.float32), mask=m)
        else:
            row0 = (t // CT_ALL) * BRT
            c = t % CT_ALL
            if c < CT_K:
                tile = linear_tile(x_ptr, D, row0, n_rows, p_ptr + O_WK, p_ptr + O_BK, c * BCT, D,
                                   p_ptr + O_LNIN_W, p_ptr + O_LNIN_B, ln_eps, D, True, BRT, BCT, BKT)
                _store_tile(k_out_ptr, D, row0, n_rows, c * BCT, D, tile, BRT, BCT)
            elif c < CT_K + CT_KQ:
                col0 = (c - CT_K) * BCT
                tile = linear_tile(x_ptr, D, row0, n_rows, p_ptr + O_WKQ, p_ptr + O_BKQ, col0, D + 1,
                                   p_ptr + O_LNIN_W, p_ptr + O_LNIN_B, ln_eps, D, True, BRT, BCT, BKT)
                _store_tile(kq_ptr, D + 1, row0, n_rows, col0, D + 1, tile, BRT, BCT)
            else:
                col0 = (c - CT_K - CT_KQ) * BCT
                tile = linear_tile(x_ptr, D, row0, n_rows, p_ptr + O_WVG, p_ptr + O_BVG, col0, 3 * D,
                                   p_ptr + O_LNIN_W, p_ptr + O_LNIN_B, ln_eps, D, True, BRT, BCT, BKT)
                _store_tile(vg_ptr, 3 * D, row0, n_rows, col0, 3 * D, tile, BRT, BCT)


@triton.jit
def _attn_phase(p_ptr, kq_ptr, vg_ptr, gi_ptr, s_ptr, q_out_ptr, attn_out_ptr,
                B, N, is_last, scale, attn_eps, ln_eps, pid, nprog,
                S: tl.constexpr, D: tl.constexpr, BSP: tl.constexpr, BN: tl.constexpr,
                BKA: tl.constexpr, BCA: tl.constexpr, BCC: tl.constexpr, BR: tl.constexpr,
                BC: tl.constexpr, BK: tl.constexpr):
    # slot rows are padded to BSP >= 16 (and tokens to BN >= 16) so both contractions are tl.dot
    O_LNS_W = 2 * D + D * D + D + (D + 1) * D + D + 1 + 3 * D * D + 3 * D
    O_LNS_B = O_LNS_W + D
    O_WQ = O_LNS_B + D
    O_BQ = O_WQ + D * D
    CT_GI: tl.constexpr = (3 * D + BCA - 1) // BCA
    CT_Q: tl.constexpr = (D + BC - 1) // BC
    n_attn = B * CT_GI
    n_q = tl.cdiv(B * S, BR) * CT_Q * is_last
    slot = tl.arange(0, BSP)
    slot_ok = slot < S
    tok = tl.arange(0, BN)
    tok_ok = tok < N
    for t in range(pid, n_attn + n_q, nprog):
        if t < n_attn:
            b = t // CT_GI
            c0 = (t % CT_GI) * BCA
            rows = b * S + slot
            mean, rstd = row_stats(s_ptr, D, rows, slot_ok, D, ln_eps, BSP, BK)
            # logits = [LN_slot(S), 1] . [K Wq, K.bq]  (the extra column carries the q bias)
            logits = tl.zeros((BSP, BN), tl.float32)
            for k0 in range(0, D + 1, BKA):
                ks = k0 + tl.arange(0, BKA)
                ks_ok = ks < D
                m = slot_ok[:, None] & ks_ok[None, :]
                a = tl.load(s_ptr + rows[:, None] * D + ks[None, :], mask=m, other=0.0,
                            cache_modifier=".cg")
                g = tl.load(p_ptr + O_LNS_W + ks, mask=ks_ok, other=0.0)
                beta = tl.load(p_ptr + O_LNS_B + ks, mask=ks_ok, other=0.0)
                a = tl.where(m, (a - mean[:, None]) * rstd[:, None] * g[None, :] + beta[None, :], 0.0)
                a = tl.where(slot_ok[:, None] & (ks == D)[None, :], 1.0, a)
                kq = tl.load(kq_ptr + (b * N + tok[:, None]) * (D + 1) + ks[None, :],
                             mask=tok_ok[:, None] & (ks < D + 1)[None, :], other=0.0,
                             cache_modifier=".cg")
                logits += tl.dot(a, tl.trans(kq), input_precision="ieee")
            valid = slot_ok[:, None] & tok_ok[None, :]
            attn = slot_softmax(logits, slot_ok, valid, scale, attn_eps)
            if c0 == 0:
                tl.store(attn_out_ptr + b * S * N + slot[:, None] * N + tok[None, :], attn, mask=valid)
            # gi[:, c0:c0+BCA] = A Vg  (= U W_ih^T + b_ih)
            for cc in range(0, BCA, BCC):
                cols = c0 + cc + tl.arange(0, BCC)
                cols_ok = cols < 3 * D
                vg = tl.load(vg_ptr + (b * N + tok[:, None]) * (3 * D) + cols[None, :],
                             mask=tok_ok[:, None] & cols_ok[None, :], other=0.0, cache_modifier=".cg")
                gi = tl.dot(attn, vg, input_precision="ieee")
                tl.store(gi_ptr + rows[:, None] * (3 * D) + cols[None, :], gi,
                         mask=slot_ok[:, None] & cols_ok[None, :])
        else:
            tq = t - n_attn
            row0 = (tq // CT_Q) * BR
            col0 = (tq % CT_Q) * BC
            tile = linear_tile(s_ptr, D, row0, B * S, p_ptr + O_WQ, p_ptr + O_BQ, col0, D,
                               p_ptr + O_LNS_W, p_ptr + O_LNS_B, ln_eps, D, True, BR, BC, BK)
            _store_tile(q_out_ptr, D, row0, B * S, col0, D, tile, BR, BC)


@triton.jit
def _gru_phase(p_ptr, gi_ptr, s_ptr, snew_ptr, snext_ptr, B, pid, nprog,
               S: tl.constexpr, D: tl.constexpr, H: tl.constexpr,
               BR: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    O_WHH = 2 * D + D * D + D + (D + 1) * D + D + 1 + 3 * D * D + 3 * D + 2 * D + D * D + D
    O_BHH = O_WHH + 3 * D * D
    O_B2 = O_BHH + 3 * D + 2 * D + H * D + H + D * H
    CT: tl.constexpr = (D + BC - 1) // BC
    M = B * S
    for t in range(pid, tl.cdiv(M, BR) * CT, nprog):
        row0 = (t // CT) * BR
        col0 = (t % CT) * BC
        rows = row0 + tl.arange(0, BR)
        cols = col0 + tl.arange(0, BC)
        rows_ok = rows < M
        cols_ok = cols < D
        # gh for the three gates in one pass over K (one slot-row load feeds three weight tiles)
        gh_r = tl.zeros((BR, BC), tl.float32)
        gh_z = tl.zeros((BR, BC), tl.float32)
        gh_n = tl.zeros((BR, BC), tl.float32)
        for k0 in range(0, D, BK):
            ks = k0 + tl.arange(0, BK)
            ks_ok = ks < D
            a = tl.load(s_ptr + rows[:, None] * D + ks[None, :], mask=rows_ok[:, None] & ks_ok[None, :],
                        other=0.0, cache_modifier=".cg")
            w = p_ptr + O_WHH + cols[:, None] * D + ks[None, :]
            wm = cols_ok[:, None] & ks_ok[None, :]
            w_r = tl.load(w, mask=wm, other=0.0)
            w_z = tl.load(w + D * D, mask=wm, other=0.0)
            w_n = tl.load(w + 2 * D * D, mask=wm, other=0.0)
            gh_r += tl.dot(a, tl.trans(w_r), input_precision="ieee")
            gh_z += tl.dot(a, tl.trans(w_z), input_precision="ieee")
            gh_n += tl.dot(a, tl.trans(w_n), input_precision="ieee")
        gh_r += tl.load(p_ptr + O_BHH + cols, mask=cols_ok, other=0.0)[None, :]
        gh_z += tl.load(p_ptr + O_BHH + D + cols, mask=cols_ok, other=0.0)[None, :]
        gh_n += tl.load(p_ptr + O_BHH + 2 * D + cols, mask=cols_ok, other=0.0)[None, :]
        ok = rows_ok[:, None] & cols_ok[None, :]
        g = gi_ptr + rows[:, None] * (3 * D) + cols[None, :]
        gi_r = tl.load(g, mask=ok, other=0.0, cache_modifier=".cg")
        gi_z = tl.load(g + D, mask=ok, other=0.0, cache_modifier=".cg")
        gi_n = tl.load(g + 2 * D, mask=ok, other=0.0, cache_modifier=".cg")
        h = tl.load(s_ptr + rows[:, None] * D + cols[None, :], mask=ok, other=0.0, cache_modifier=".cg")
        r = sigmoid(gi_r + gh_r)
        z = sigmoid(gi_z + gh_z)
        n = tanh(gi_n + r * gh_n)
        h_new = (1.0 - z) * n + z * h
        tl.store(snew_ptr + rows[:, None] * D + cols[None, :], h_new, mask=ok)
        b2 = tl.load(p_ptr + O_B2 + cols, mask=cols_ok, other=0.0)
        tl.store(snext_ptr + rows[:, None] * D + cols[None, :], h_new + b2[None, :], mask=ok)


@triton.jit
def _mlp_phase(p_ptr, snew_ptr, snext_ptr, B, ln_eps, pid, nprog,
               S: tl.constexpr, D: tl.constexpr, H: tl.constexpr,
               BR: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    O_LNF_W = 2 * D + D * D + D + (D + 1) * D + D + 1 + 3 * D * D + 3 * D + 2 * D + D * D + D \
        + 3 * D * D + 3 * D
    O_LNF_B = O_LNF_W + D
    O_W1 = O_LNF_B + D
    O_B1 = O_W1 + H * D
    O_W2 = O_B1 + H
    CT: tl.constexpr = (H + BC - 1) // BC
    M = B * S
    for t in range(pid, tl.cdiv(M, BR) * CT, nprog):
        row0 = (t // CT) * BR
        h0 = (t % CT) * BC
        hid = linear_tile(snew_ptr, D, row0, M, p_ptr + O_W1, p_ptr + O_B1, h0, H,
                          p_ptr + O_LNF_W, p_ptr + O_LNF_B, ln_eps, D, True, BR, BC, BK)
        hcols = h0 + tl.arange(0, BC)
        hid = tl.where((hcols < H)[None, :], tl.maximum(hid, 0.0), 0.0)
        rows = row0 + tl.arange(0, BR)
        for d0 in range(0, D, BK):
            d = d0 + tl.arange(0, BK)
            w2t = tl.load(p_ptr + O_W2 + d[None, :] * H + hcols[:, None],
                          mask=(hcols < H)[:, None] & (d < D)[None, :], other=0.0)
            part = tl.dot(hid, w2t, input_precision="ieee")
            tl.atomic_add(snext_ptr + rows[:, None] * D + d[None, :], part,
                          mask=(rows < M)[:, None] & (d < D)[None, :], sem="relaxed", scope="gpu")


@triton.jit(do_not_specialize=["B", "N", "slots0_bstride", "iters", "phase_iter"])
def slot_loop_kernel(x_ptr, slots0_ptr, p_ptr,
                     kq_ptr, vg_ptr, gi_ptr, snew_ptr, bar_ptr,
                     acc_ptr, k_out_ptr, q_out_ptr, attn_out_ptr,
                     B, N, slots0_bstride, iters, phase_iter,
                     scale, attn_eps, ln_eps,
                     S: tl.constexpr, D: tl.constexpr, H: tl.constexpr, PHASE: tl.constexpr,
                     BSP: tl.constexpr, BN: tl.constexpr, BKA: tl.constexpr, BCA: tl.constexpr,
                     BCC: tl.constexpr, BRT: tl.constexpr, BCT: tl.constexpr, BKT: tl.constexpr,
                     BR: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    """acc_ptr is (2, B, S, D): iteration `it` reads half it % 2 and writes the other half."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    half = B * S * D
    if PHASE == 0:
        _prep_phase(x_ptr, slots0_ptr, p_ptr, kq_ptr, vg_ptr, acc_ptr, k_out_ptr,
                    B, N, slots0_bstride, ln_eps, pid, nprog, S, D, BRT, BCT, BKT)
        grid_barrier(bar_ptr, nprog)
        for it in range(iters):
            s_ptr = acc_ptr + (it % 2) * half
            snext_ptr = acc_ptr + ((it + 1) % 2) * half
            epoch = 1 + 3 * it
            _attn_phase(p_ptr, kq_ptr, vg_ptr, gi_ptr, s_ptr, q_out_ptr, attn_out_ptr,
                        B, N, (it == iters - 1).to(tl.int32), scale, attn_eps, ln_eps, pid, nprog,
                        S, D, BSP, BN, BKA, BCA, BCC, BR, BC, BK)
            grid_barrier(bar_ptr, (epoch + 1) * nprog)
            _gru_phase(p_ptr, gi_ptr, s_ptr, snew_ptr, snext_ptr, B, pid, nprog, S, D, H, BR, BC, BK)
            grid_barrier(bar_ptr, (epoch + 2) * nprog)
            _mlp_phase(p_ptr, snew_ptr, snext_ptr, B, ln_eps, pid, nprog, S, D, H, BR, BC, BK)
            if it < iters - 1:
                grid_barrier(bar_ptr, (epoch + 3) * nprog)
        grid_exit(bar_ptr)
    elif PHASE == 1:
        _prep_phase(x_ptr, slots0_ptr, p_ptr, kq_ptr, vg_ptr, acc_ptr, k_out_ptr,
                    B, N, slots0_bstride, ln_eps, pid, nprog, S, D, BRT, BCT, BKT)
    else:
        s_ptr = acc_ptr + (phase_iter % 2) * half
        snext_ptr = acc_ptr + ((phase_iter + 1) % 2) * half
        if PHASE == 2:
            _attn_phase(p_ptr, kq_ptr, vg_ptr, gi_ptr, s_ptr, q_out_ptr, attn_out_ptr,
                        B, N, (phase_iter == iters - 1).to(tl.int32), scale, attn_eps, ln_eps,
                        pid, nprog, S, D, BSP, BN, BKA, BCA, BCC, BR, BC, BK)
        elif PHASE == 3:
            _gru_phase(p_ptr, gi_ptr, s_ptr, snew_ptr, snext_ptr, B, pid, nprog, S, D, H, BR, BC, BK)
        else:
            _mlp_phase(p_ptr, snew_ptr, snext_ptr, B, ln_eps, pid, nprog, S, D, H, BR, BC, BK)


# ---------------------------------------------------------------------------------------------
# host side

_PACK_CACHE: dict = {}
_WORKSPACES: dict = {}


def pack_params(params: dict) -> torch.Tensor:
    """Flatten one modality's parameters (reference.PARAM_NAMES) into the kernel's fp32 buffer.

    Cached per parameter *object* (weak references: a freed tensor whose memory is reused by a new
    one never hits) and its storage and version, so inference packs once and an optimizer step
    or load_state_dict (which bump the versions) triggers a repack. Writes through `.data`
    bypass the version counter: call `clear_cache()` after those.
    """
    tensors = [params[name] for name in reference.PARAM_NAMES]
    key = tuple((id(t), t.data_ptr(), t._version) for t in tensors)
    hit = _PACK_CACHE.get(key)
    if hit is not None and all(ref() is t for ref, t in zip(hit[0], tensors)):
        return hit[1]
    p = {name: t.detach().double() for name, t in zip(reference.PARAM_NAMES, tensors)}
    w_q, b_q = p["to_q.weight"], p["to_q.bias"]
    w_k, b_k = p["to_k.weight"], p["to_k.bias"]
    w_v, b_v = p["to_v.weight"], p["to_v.bias"]
    w_ih, b_ih = p["gru.weight_ih"], p["gru.bias_ih"]
    parts = {
        "ln_in_w": p["norm_input.weight"], "ln_in_b": p["norm_input.bias"],
        "w_k": w_k, "b_k": b_k,
        "w_kq": torch.cat([w_q.T @ w_k, (w_k.T @ b_q)[None]]),      # logits = [s, 1].[K Wq, K.bq]
        "b_kq": torch.cat([w_q.T @ b_k, (b_k @ b_q)[None]]),
        "w_vg": w_ih @ w_v, "b_vg": w_ih @ b_v + b_ih,               # A (V W_ih^T) + b_ih
        "ln_s_w": p["norm_slots.weight"], "ln_s_b": p["norm_slots.bias"],
        "w_q": w_q, "b_q": b_q,
        "w_hh": p["gru.weight_hh"], "b_hh": p["gru.bias_hh"],
        "ln_f_w": p["norm_pre_ff.weight"], "ln_f_b": p["norm_pre_ff.bias"],
        "w_1": p["mlp.0.weight"], "b_1": p["mlp.0.bias"], "w_2": p["mlp.2.weight"], "b_2": p["mlp.2.bias"],
    }
    D, H = w_q.shape[0], p["mlp.0.weight"].shape[0]
    flat = []
    for name, numel in packed_layout(D, H):
        assert parts[name].numel() == numel, name
        flat.append(parts[name].reshape(-1))
    packed = torch.cat(flat).float().contiguous()
    if len(_PACK_CACHE) >= 8:
        _PACK_CACHE.pop(next(iter(_PACK_CACHE)))
    _PACK_CACHE[key] = ([weakref.ref(t) for t in tensors], packed)
    return packed


def clear_cache():
    """Forget packed parameters and workspaces (after editing parameters through `.data`)."""
    _PACK_CACHE.clear()
    _WORKSPACES.clear()


def _workspace(device, B, N, S, D):
    key = (device, B, N, S, D)
    ws = _WORKSPACES.get(key)
    if ws is None:
        f32 = dict(device=device, dtype=torch.float32)
        ws = {
            "kq": torch.empty(B * N * (D + 1), **f32), "vg": torch.empty(B * N * 3 * D, **f32),
            "gi": torch.empty(B * S * 3 * D, **f32), "snew": torch.empty(B * S * D, **f32),
            "bar": torch.zeros(2, device=device, dtype=torch.int32),
        }
        _WORKSPACES[key] = ws
    return ws


def _tiles(B, N, S, D):
    small = B * S <= 16      # batch 1..8 with 2 slots: latency-bound, narrow tiles, long K steps
    bn = max(16, triton.next_power_of_2(N))
    chunk = max(16, min(128, 4096 // bn))                      # (BN, chunk) tiles of Kq / Vg
    return {
        "BSP": max(16, triton.next_power_of_2(S)), "BN": bn,   # attention: padded for tl.dot
        "BKA": chunk, "BCC": chunk,
        "BCA": max(chunk, 64 if B <= 4 else 128),              # gi columns per attention task
        "BRT": 32, "BCT": 64, "BKT": 32,                       # token GEMMs (prep)
        "BR": 16, "BC": 16, "BK": min(128 if small else 64, triton.next_power_of_2(D)),
    }


_SM_COUNT: dict = {}


def _num_programs(device, tiles, B, N, D) -> int:
    """Persistent grid: one program per SM at most (all must be resident for the grid barrier).

    JSA_SLOT_LOOP_PROGRAMS overrides the count (tuning; it is still capped at the SM count).
    """
    if device.type != "cuda":
        return 1            # the interpreter runs programs one after another: a barrier needs one
    if device not in _SM_COUNT:
        _SM_COUNT[device] = torch.cuda.get_device_properties(device).multi_processor_count
    prep = triton.cdiv(B * N, tiles["BRT"]) * (3 * triton.cdiv(D, tiles["BCT"]) + 3)
    wanted = int(os.environ.get("JSA_SLOT_LOOP_PROGRAMS", "0")) or prep
    return max(1, min(_SM_COUNT[device], wanted))


def forward(x, slots0, params: dict, iters: int, scale: float, eps: float, ln_eps: float = 1e-5,
            mode: str = "persistent"):
    """Launch the loop; returns fp32 (slots, q_last, k, attn_last) like reference.slot_iterations."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if mode not in ("persistent", "phased"):
        raise ValueError(f"mode must be 'persistent' or 'phased', got {mode!r}")
    x = x.contiguous()
    slots0 = slots0.contiguous()
    B, N, D = x.shape
    S = slots0.shape[-2]
    H = params["mlp.0.weight"].shape[0]
    packed = pack_params(params)
    ws = _workspace(x.device, B, N, S, D)
    f32 = dict(device=x.device, dtype=torch.float32)
    acc = torch.empty((2, B, S, D), **f32)
    k_out = torch.empty((B, N, D), **f32)
    q_out = torch.empty((B, S, D), **f32)
    attn = torch.empty((B, S, N), **f32)
    tiles = _tiles(B, N, S, D)
    bstride = S * D if slots0.dim() == 3 else 0
    args = (x, slots0, packed, ws["kq"], ws["vg"], ws["gi"], ws["snew"], ws["bar"],
            acc, k_out, q_out, attn, B, N, bstride, iters)
    # num_stages=1: no software pipelining (keeps shared memory small); 8 warps: no register spills
    consts = dict(S=S, D=D, H=H, num_stages=1, num_warps=8, **tiles)
    floats = (float(scale), float(eps), float(ln_eps))
    if mode == "persistent":
        grid = (_num_programs(x.device, tiles, B, N, D),)
        slot_loop_kernel[grid](*args, 0, *floats, PHASE=PHASE_PERSISTENT, **consts)
    else:
        slot_loop_kernel[(_phase_tasks(PHASE_PREP, tiles, B, N, S, D, H, False),)](
            *args, 0, *floats, PHASE=PHASE_PREP, **consts)
        for it in range(iters):
            for phase in (PHASE_ATTN, PHASE_GRU, PHASE_MLP):
                grid = (_phase_tasks(phase, tiles, B, N, S, D, H, it == iters - 1),)
                slot_loop_kernel[grid](*args, it, *floats, PHASE=phase, **consts)
    return acc[iters % 2], q_out, k_out, attn


def _phase_tasks(phase, t, B, N, S, D, H, last) -> int:
    """Number of tasks (= programs in phased mode) of one phase; mirrors the kernel's task lists."""
    cd = triton.cdiv
    if phase == PHASE_PREP:
        return cd(B * N, t["BRT"]) * (cd(D, t["BCT"]) + cd(D + 1, t["BCT"]) + cd(3 * D, t["BCT"])) + 1
    if phase == PHASE_ATTN:
        return B * cd(3 * D, t["BCA"]) + (cd(B * S, t["BR"]) * cd(D, t["BC"]) if last else 0)
    if phase == PHASE_GRU:
        return cd(B * S, t["BR"]) * cd(D, t["BC"])
    return cd(B * S, t["BR"]) * cd(H, t["BC"])


class SlotIterations(torch.autograd.Function):
    """Fused forward; backward recomputes `reference.slot_iterations` with autograd (training)."""

    @staticmethod
    def forward(ctx, x, slots0, iters, scale, eps, ln_eps, mode, *param_tensors):
        params = dict(zip(reference.PARAM_NAMES, param_tensors))
        ctx.save_for_backward(x, slots0, *param_tensors)
        ctx.consts = (iters, scale, eps, ln_eps)
        return forward(x, slots0, params, iters, scale, eps, ln_eps, mode)

    @staticmethod
    def backward(ctx, *grads):
        x, slots0, *param_tensors = ctx.saved_tensors
        iters, scale, eps, ln_eps = ctx.consts
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(t.requires_grad) for t in (x, slots0, *param_tensors)]
            params = dict(zip(reference.PARAM_NAMES, leaves[2:]))
            outs = reference.slot_iterations(leaves[0], leaves[1], params, iters, scale, eps, ln_eps)
            pairs = [(o.float(), g) for o, g in zip(outs, grads) if g is not None]
            wanted = [t for t in leaves if t.requires_grad]
            got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                           allow_unused=True)) if wanted else iter(())
        out = [next(got) if t.requires_grad else None for t in leaves]
        return (out[0], out[1], None, None, None, None, None, *out[2:])


def slot_iterations(x, slots0, params: dict, iters: int, scale: float, eps: float,
                    ln_eps: float = 1e-5, backend: str = "auto", mode: str = "persistent"):
    """The whole slot loop of one modality (method.md section 3, eval path: no token masking).

    x:       (B, N, D) encoder tokens BEFORE the input LayerNorm (any float dtype).
    slots0:  (S, D) shared initial slots (or (B, S, D)).
    params:  dict keyed by reference.PARAM_NAMES, e.g. reference.params_from_modules(...).
    iters:   T (5); scale = D**-0.5; eps = attention eps (1e-8); ln_eps = the LayerNorms' eps.
    Returns fp32 (slots (B,S,D), q_last (B,S,D), k (B,N,D), attn_last (B,S,N)); q_last and
    attn_last are from the last iteration (queries of the slots before the last update), which is
    what the maps (ia_vv, ca_av, ...) are built from. mode="persistent" is one launch (grid-wide
    barriers, grid <= SM count); "phased" is 1 + 3T launches of the same phases.
    """
    if resolve_backend(x.device, backend) == "torch":
        return tuple(t.float() for t in reference.slot_iterations(x, slots0, params, iters, scale, eps, ln_eps))
    tensors = [params[name] for name in reference.PARAM_NAMES]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, slots0, *tensors)):
        return SlotIterations.apply(x, slots0, iters, float(scale), float(eps), float(ln_eps), mode, *tensors)
    return forward(x, slots0, params, iters, scale, eps, ln_eps, mode)
