"""Small SASRec-style next-item model (written from scratch for this study).

Items are shifted by +1 so that 0 is padding. Left-padded sequences, learned positions,
pre-norm causal self-attention blocks, tied output embeddings, full-softmax CE at every
non-padded position.
"""
import math
import os
import pickle
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pathlib import Path as _Path

HERE = _Path(__file__).resolve().parent  # this folder: caches, models and ranks are written here
REPO = HERE.parents[1]
SHARED_DATA = _Path(os.environ.get("NEXTWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(1)
sys.path.insert(0, str(REPO / "src"))

MAXLEN = 50


class Block(nn.Module):
    def __init__(self, d, heads, drop):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.att = nn.MultiheadAttention(d, heads, dropout=drop, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(drop), nn.Linear(d, d))
        self.drop = nn.Dropout(drop)

    def forward(self, x, causal, pad):
        h = self.ln1(x)
        a, _ = self.att(h, h, h, attn_mask=causal, need_weights=False)
        x = x + self.drop(a)
        x = x + self.drop(self.ff(self.ln2(x)))
        return x * (~pad).unsqueeze(-1)


class SASRec(nn.Module):
    def __init__(self, n_items, d=64, blocks=2, heads=1, drop=0.3, maxlen=MAXLEN):
        super().__init__()
        self.n = n_items
        self.emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos = nn.Embedding(maxlen, d)
        self.drop = nn.Dropout(drop)
        self.blocks = nn.ModuleList([Block(d, heads, drop) for _ in range(blocks)])
        self.ln = nn.LayerNorm(d)
        self.d = d
        self.heads = heads
        nn.init.normal_(self.emb.weight, std=0.05)
        nn.init.normal_(self.pos.weight, std=0.05)
        with torch.no_grad():
            self.emb.weight[0].zero_()

    def hidden(self, seq):  # seq (B, L) long, left padded with 0
        B, L = seq.shape
        pad = seq == 0
        x = self.emb(seq) * math.sqrt(self.d) + self.pos(torch.arange(L).unsqueeze(0))
        x = self.drop(x) * (~pad).unsqueeze(-1)
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
        mask = causal.unsqueeze(0) | pad.unsqueeze(1)  # block future and padded keys
        mask = mask & ~torch.eye(L, dtype=torch.bool).unsqueeze(0)  # always see self (no empty rows)
        causal = mask.repeat_interleave(self.heads, 0)
        for b in self.blocks:
            x = b(x, causal, pad)
        return self.ln(x)

    def item_weights(self):
        return self.emb.weight[1:]  # (n, d) for items 0..n-1

    def score_last(self, seq):
        """(B, n) scores of the next item after the last position."""
        h = self.hidden(seq)[:, -1]
        return h @ self.item_weights().T


def left_pad(seqs, L):
    out = np.zeros((len(seqs), L), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-L:]
        if len(s):
            out[i, L - len(s):] = np.asarray(s, dtype=np.int64) + 1
    return out


def make_training(histories):
    """Inputs/targets (item ids +1, 0 = pad) for next-item at every position."""
    seqs = [h[-(MAXLEN + 1):] for h in histories if len(h) >= 2]
    return seqs


def batch_tensors(seqs):
    L = min(MAXLEN, max(len(s) - 1 for s in seqs))
    x = left_pad([s[:-1] for s in seqs], L)
    y = left_pad([s[1:] for s in seqs], L)
    return torch.from_numpy(x), torch.from_numpy(y)


def train_epoch(model, opt, seqs, rng, bs=128):
    model.train()
    order = rng.permutation(len(seqs))
    tot, cnt = 0.0, 0
    for s in range(0, len(order), bs):
        x, y = batch_tensors([seqs[i] for i in order[s:s + bs]])
        h = model.hidden(x)
        m = y > 0
        logits = h[m] @ model.item_weights().T
        loss = F.cross_entropy(logits, y[m] - 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tot += loss.item() * int(m.sum())
        cnt += int(m.sum())
    return tot / cnt


@torch.no_grad()
def seq_scores(model, hs, bs=512):
    """Dense (len(hs), n) float32 scores from the last MAXLEN titles."""
    model.eval()
    out = []
    for s in range(0, len(hs), bs):
        chunk = hs[s:s + bs]
        L = min(MAXLEN, max(len(h) for h in chunk))
        x = torch.from_numpy(left_pad(chunk, L))
        out.append(model.score_last(x).numpy())
    return np.concatenate(out)


def rank_eval(S, hs, targets):
    """Ranks with harness rules: history masked, rank = # strictly above, target in history = miss."""
    S = S.astype(np.float32, copy=True)
    B = len(hs)
    rows = np.repeat(np.arange(B), [len(h) for h in hs])
    cols = np.concatenate(hs).astype(np.int64)
    watched = np.zeros(S.shape, dtype=bool)
    watched[rows, cols] = True
    S[rows, cols] = -np.inf
    t = np.asarray(targets, dtype=np.int64)
    tv = S[np.arange(B), t]
    r = (S > tv[:, None]).sum(axis=1)
    r[watched[np.arange(B), t]] = 10 ** 9
    return r


def metrics(r):
    hit = r < 10
    nd = np.where(hit, 1.0 / np.log2(np.minimum(r, 10 ** 6) + 2.0), 0.0)
    return hit.mean(), nd.mean()


def main():
    which = sys.argv[1]  # val | test
    max_epochs = int(sys.argv[2])
    budget = float(sys.argv[3])  # seconds
    drop = float(sys.argv[4]) if len(sys.argv) > 4 else 0.3
    split = pickle.load(open(HERE / "cache" / "beauty_split.pkl", "rb"))
    n = split.n_items
    hist = split.validation_histories if which == "val" else split.test_histories
    seqs = make_training(hist)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = SASRec(n, drop=drop)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # validation sample for early stopping (val model only)
    vh, vt = split.validation_histories, split.validation_targets
    samp = np.random.default_rng(1).choice(len(vt), 4000, replace=False)
    sh, st = [vh[i] for i in samp], vt[samp]
    best, best_ep, t0, ep_times = -1, 0, time.time(), []
    for ep in range(1, max_epochs + 1):
        te = time.time()
        loss = train_epoch(model, opt, seqs, rng)
        ep_times.append(time.time() - te)
        msg = f"ep {ep} loss {loss:.4f} epoch {ep_times[-1]:.1f}s total {time.time() - t0:.0f}s"
        if which == "val" and (ep % 2 == 0 or ep == max_epochs):
            hr, nd = metrics(rank_eval(seq_scores(model, sh), sh, st))
            msg += f" | sample-val HR {hr:.4f} NDCG {nd:.4f}"
            if nd > best:
                best, best_ep = nd, ep
                torch.save(model.state_dict(), HERE / f"model_{which}.pt")
            elif ep - best_ep >= 6:
                print(msg, flush=True)
                print("early stop", flush=True)
                break
        print(msg, flush=True)
        if time.time() - t0 > budget:
            print("time budget reached", flush=True)
            break
    if which != "val":
        torch.save(model.state_dict(), HERE / f"model_{which}.pt")
    print(f"done: epochs {ep}, best_ep {best_ep}, best sample NDCG {best:.4f}, mean epoch {np.mean(ep_times):.1f}s, "
          f"total {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
