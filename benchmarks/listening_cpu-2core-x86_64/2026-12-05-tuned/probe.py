"""Upper bound for frozen features: linear per-cell image probe and audio probe, class-supervised."""
import torch, torch.nn.functional as F, collections, sys
torch.set_num_threads(2); torch.manual_seed(0)
tr = torch.load('/tmp/exp/cache_train_plain.pt', weights_only=False)
G = 7
def cells_in(box):
    x0, y0, x1, y1 = box
    cs = [(r, q) for r in range(G) for q in range(G) if x0 <= (q + .5) / G <= x1 and y0 <= (r + .5) / G <= y1]
    if not cs: cs = [(min(G - 1, int((y0 + y1) / 2 * G)), min(G - 1, int((x0 + x1) / 2 * G)))]
    return cs
classes = sorted(set(tr['labels']) | {'__bg__'})
ci = {c: i for i, c in enumerate(classes)}
X, Y = [], []
im = tr['images'][0]
for k, (lab, boxes, ns, meta) in enumerate(zip(tr['labels'], tr['boxes'], tr['no_source'], tr['meta'])):
    if ns: continue
    for (r, q) in cells_in(boxes[0]):
        X.append(im[k, :, r, q]); Y.append(ci[lab])
    # distractor cells labelled by their class if it is known, else background
    for b, c in zip(meta.get('distractor_boxes', []), meta.get('distractor_classes', [])):
        for (r, q) in cells_in(b)[:2]:
            X.append(im[k, :, r, q]); Y.append(ci.get(c, ci['__bg__']) if c else ci['__bg__'])
X = torch.stack(X).float(); Y = torch.tensor(Y)
mu, sd = X.mean(0), X.std(0) + 1e-3
X = (X - mu) / sd
print('cells', X.shape, flush=True)
W = torch.nn.Linear(X.shape[1], len(classes)); opt = torch.optim.Adam(W.parameters(), 1e-3, weight_decay=1e-4)
for ep in range(30):
    perm = torch.randperm(len(X))
    for i in range(0, len(X), 512):
        idx = perm[i:i+512]; loss = F.cross_entropy(W(X[idx]), Y[idx]); opt.zero_grad(); loss.backward(); opt.step()
print('train acc', (W(X).argmax(1) == Y).float().mean().item())
# audio probe
A = torch.stack([a.float().mean(-1) for a in tr['audio']]).flatten(0, 1)  # views x N
AY = torch.tensor([ci[l] for l in tr['labels']]).repeat(len(tr['audio']))
keep = torch.tensor([not ns for ns in tr['no_source']]).repeat(len(tr['audio']))
A, AY = A[keep], AY[keep]; amu, asd = A.mean(0), A.std(0) + 1e-3; A = (A - amu) / asd
V = torch.nn.Linear(A.shape[1], len(classes)); opt = torch.optim.Adam(V.parameters(), 1e-3, weight_decay=1e-4)
for ep in range(30):
    perm = torch.randperm(len(A))
    for i in range(0, len(A), 256):
        idx = perm[i:i+256]; loss = F.cross_entropy(V(A[idx]), AY[idx]); opt.zero_grad(); loss.backward(); opt.step()
print('audio train acc', (V(A).argmax(1) == AY).float().mean().item())
for split in ['pairs', 'real-pairs', 'pairs-unheard', 'real', 'test']:
    d = torch.load(f'/tmp/exp/cache_{split}.pt', weights_only=False)
    img = ((d['images'][0].float().permute(0, 2, 3, 1) - mu) / sd)
    logits = W(img)  # N,7,7,C
    aud = (d['audio'][0].float().mean(-1) - amu) / asd
    alog = V(aud)
    hits, ahits, ohits, n = [], [], [], 0; groups = collections.defaultdict(list); agroups = collections.defaultdict(list)
    for k, lab in enumerate(d['labels']):
        if d['no_source'][k] : continue
        def inbox(m):
            i = int(m.argmax()); y, x = (i // G + .5) / G, (i % G + .5) / G
            return any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in d['boxes'][k])
        known = lab in ci
        # oracle: true class; audio: predicted class distribution -> expected class score map
        if known:
            h = inbox(logits[k, :, :, ci[lab]]); hits.append(h)
        p = alog[k].softmax(-1)
        m = (logits[k].log_softmax(-1) * 0 + logits[k].softmax(-1)) @ p
        ah = inbox(m); ahits.append(ah)
        if known: ohits.append(int(alog[k].argmax()) == ci[lab])
        g = d['meta'][k].get('group')
        if g: groups[g].append(h if known else False); agroups[g].append(ah)
    f = lambda v: round(100 * sum(v) / max(1, len(v)), 1)
    print(split, 'oracle-class pointing', f(hits), 'follows', f([all(v) for v in groups.values()]),
          '| audio-probe pointing', f(ahits), 'follows', f([all(v) for v in agroups.values()]), '| audio acc', f(ohits), 'n', len(ahits), flush=True)
