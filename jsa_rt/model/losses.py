"""The four JSA losses (method.md section 4), EZ-VSL's multiple-instance contrastive loss and
the listen variant's audio-conditioned localisation loss (model/jsa.py).

Each is a plain function of tensors so tests can check it on hand-made cases.
"""
import torch
import torch.nn.functional as F


def whole_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Under multi-process training (DDP), each tensor gathered from every rank, in rank order,
    with gradients flowing back to each rank's own rows; unchanged in a single process.

    The contrastive terms then see the global batch as negatives (and its k-reciprocal
    neighbours), as the official single-process DataParallel code does. Every rank computes the
    same global loss; the gather's backward sums the ranks' gradients and DDP averages them, so
    the update equals the single-process one on the whole batch."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    return tuple(_GatherRows.apply(t) for t in tensors)


class _GatherRows(torch.autograd.Function):
    """All ranks' rows, concatenated in rank order; the ranks may hold different counts (a batch
    that lost unreadable items). Backward: the sum of every rank's gradient for this rank's rows.
    (torch.distributed.nn's all_gather gave wrong gradients under gloo for non-contiguous ones.)"""

    @staticmethod
    def forward(ctx, rows):
        import torch.distributed as dist
        world, rank = dist.get_world_size(), dist.get_rank()
        counts = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(world)]
        dist.all_gather(counts, torch.tensor([rows.shape[0]], device=rows.device))
        counts = [int(c) for c in counts]
        padded = rows.new_zeros((max(counts), *rows.shape[1:]))
        padded[:rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        ctx.start, ctx.count = sum(counts[:rank]), counts[rank]
        return torch.cat([part[:n] for part, n in zip(parts, counts)])

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.start:ctx.start + ctx.count]


def k_reciprocal_false_negatives(image_slots: torch.Tensor, audio_slots: torch.Tensor,
                                 k: int) -> torch.Tensor:
    """(B,B) bool: j is a potential false negative of i when j is among the k nearest of i in
    both modalities, and the relation is reciprocal (i->j and j->i). Never the diagonal."""
    with torch.no_grad():
        pv = F.normalize(image_slots.detach().float(), dim=-1)
        pa = F.normalize(audio_slots.detach().float(), dim=-1)
        batch = pv.shape[0]
        k = min(k, batch)
        eye = torch.eye(batch, dtype=torch.bool, device=pv.device)

        def knn(p):
            idx = (p @ p.T).topk(k, dim=1).indices
            return torch.zeros(batch, batch, dtype=torch.bool, device=p.device).scatter_(1, idx, True)

        both = knn(pv) & knn(pa)
        return both & both.T & ~eye


def contrastive_loss(image_slots, audio_slots, tau: float, k: int = 0) -> torch.Tensor:
    """Symmetric InfoNCE on L2-normalised target slots; k > 0 masks k-reciprocal false negatives."""
    pv, pa = F.normalize(image_slots.float(), dim=-1), F.normalize(audio_slots.float(), dim=-1)
    logits = pv @ pa.T / tau
    if k > 0:
        logits = logits.masked_fill(k_reciprocal_false_negatives(pv, pa, k), float("-inf"))
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


def attention_matching_loss(ca_av, ia_vv, ca_va, ia_aa, mode: str = "both") -> torch.Tensor:
    """Cross-modal target-slot maps follow the (detached) intra-modal ones (mode "both", the
    paper). Ablations of the image-side term: "audio_only" drops it, "reverse" makes the image's
    own map follow the detached localisation map instead; "off" drops both (returns 0)."""
    if mode == "off":
        return ca_av.new_zeros(())
    audio_side = F.mse_loss(ca_va[:, 0], ia_aa[:, 0].detach())
    if mode == "audio_only":
        return audio_side
    if mode == "reverse":
        return F.mse_loss(ia_vv[:, 0], ca_av[:, 0].detach()) + audio_side
    if mode == "both":
        return F.mse_loss(ca_av[:, 0], ia_vv[:, 0].detach()) + audio_side
    raise ValueError(f"unknown attention-matching mode {mode!r}")


def slot_divergence_loss(slots: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ReLU(cos(target, off-target)) for one modality's (B,2,D) slots."""
    return F.relu(F.cosine_similarity(slots[:, 0], slots[:, 1], dim=-1)).mean()


def reconstruction_loss(reconstruction, tokens) -> torch.Tensor:
    return F.mse_loss(reconstruction, tokens.detach())


def ezvsl_mil_loss(audio_emb: torch.Tensor, image_map: torch.Tensor, tau: float,
                   frames: torch.Tensor | None = None) -> torch.Tensor:
    """EZ-VSL: audio (B,D) vs image locations (B,N,D), both normalised; the score of a pair is
    the max over image locations; symmetric cross-entropy against the diagonal. `frames`: as
    in `localisation_mil_loss` (two soundtracks of one frame are not negatives)."""
    a = F.normalize(audio_emb.float(), dim=-1)
    v = F.normalize(image_map.float(), dim=-1)
    scores = torch.einsum("id,jnd->ijn", a, v).amax(dim=2) / tau      # (B audio, B image)
    if frames is not None:
        scores = _without_shared_frames(scores, frames)
    labels = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, labels) + F.cross_entropy(scores.T, labels)


def localisation_mil_loss(audio_query: torch.Tensor, image_keys: torch.Tensor, scale: float,
                          tau: float, frames: torch.Tensor | None = None) -> torch.Tensor:
    """The listen variant's `loc` term: audio i's last queries (B,S,D) against image j's keys
    (B,N,D). The logit at token n is the target-minus-off-target margin of the localisation map,
    m_ijn = scale * (q_i0 - q_i1) . k_jn (softmax over two slots = sigmoid(m), so its argmax is
    the map's peak); the pair's score is max_n m_ijn (MIL: a sound lights up some location of
    its own image, more than any location of the other images). Symmetric cross-entropy
    against the diagonal at temperature tau, in fp32. `frames` (B,) names each item's frame
    (-1: a frame with one soundtrack): two soundtracks of one frame are not negatives of each
    other (both objects are in view), so those pairs are left out."""
    scores = _margin_scores(audio_query, image_keys, scale, tau).amax(dim=2)        # (B audio, B image)
    if frames is not None:
        scores = _without_shared_frames(scores, frames)
    labels = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, labels) + F.cross_entropy(scores.T, labels)


def same_frame_loss(audio_query: torch.Tensor, image_keys: torch.Tensor, scale: float, tau: float,
                    frames: torch.Tensor) -> torch.Tensor:
    """The listen variant's `frame` term, hard negatives from the same frame: where one frame
    is in the batch once per sounding object (items with equal `frames` >= 0), each sound must
    own some location of the frame, that is, beat the frame's other sounds there:
    -max_n log softmax_k(m_kin)[i], k over the soundtracks of item i's frame, with the margins
    m of `localisation_mil_loss`. Each item is scored on its own image (augmentation may differ
    between the copies). Zero when no frame has two soundtracks in the batch."""
    scores = _margin_scores(audio_query, image_keys, scale, tau)                    # (B audio, B image, N)
    own, log_share = _frame_shares(scores, frames)
    if not len(own):
        return scores.sum() * 0.0                     # keeps the graph (and DDP's gradient sync) whole
    return -log_share.amax(dim=1).mean()


def peak_ownership_loss(audio_query: torch.Tensor, image_keys: torch.Tensor, scale: float, tau: float,
                        frames: torch.Tensor) -> torch.Tensor:
    """The listen variant's `own` term: each sound must own the place where its own map peaks.
    `frame` asks only that a sound win *somewhere*; a part of the query that every sound shares
    (a sound-blind saliency) cancels in that softmax over sounds, yet it decides where the map
    peaks, so the peak need not move when the sound changes. Here the ownership log-share of
    `same_frame_loss` is averaged under the sound's own spatial distribution, softmax_n(m_iin):
    -sum_n p_i(n) log softmax_k(m_kin)[i]. Two sounds of one frame that peak at one place
    cannot both own it, so the loss falls only when their peaks part (the `follows` metric,
    made differentiable); p is not detached, so the peak itself moves. Zero without a shared frame."""
    scores = _margin_scores(audio_query, image_keys, scale, tau)
    own, log_share = _frame_shares(scores, frames)
    if not len(own):
        return scores.sum() * 0.0
    return -(own.softmax(dim=1) * log_share).sum(dim=1).mean()


def _frame_shares(scores: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each item whose frame has other soundtracks in the batch, on its own image: its margins
    m_iin / tau (S, N) and its log-share among its frame's soundtracks, log softmax_k(m_kin)[i].
    Only those rows are computed: another item's share would be a log of nothing (+inf)."""
    same = _same_frame(frames)
    shared = same.sum(1) > 1
    others = scores.transpose(0, 1)[shared].masked_fill(~same[shared][:, :, None], float("-inf"))   # (i, audio k, N)
    own = scores.diagonal(0, 0, 1).T[shared]                                                         # (i, N)
    return own, own - others.logsumexp(dim=1)


def _margin_scores(audio_query, image_keys, scale: float, tau: float) -> torch.Tensor:
    """m_ijn / tau in fp32: audio i's target-minus-off-target query against image j's token n."""
    with torch.autocast(audio_query.device.type, enabled=False):
        margin = (audio_query[:, 0] - audio_query[:, 1]).float() * scale                  # (B, D)
        return torch.einsum("id,jnd->ijn", margin, image_keys.float()) / tau


def _without_shared_frames(scores: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(B,B) pair scores with the pairs of two soundtracks of one frame set to -inf."""
    eye = torch.eye(len(frames), dtype=torch.bool, device=scores.device)
    return scores.masked_fill(_same_frame(frames) & ~eye, float("-inf"))


def _same_frame(frames: torch.Tensor) -> torch.Tensor:
    """(B,B): items i and j show the same frame (the diagonal: for items of a shared frame)."""
    return (frames[:, None] == frames[None, :]) & (frames[:, None] >= 0)
