"""Fast numpy harness for the nextwatch default model and variants.

Uses the project's own split (protocol.leave_last_out), pair kernels and top_neighbours (read
imported read-only from the project's src/), and a vectorised dense evaluator equivalent to
NextTitleModel.dense_scores + metrics.rank_block (rank = # titles strictly above target,
history masked, target-in-history = miss).
"""
from __future__ import annotations

import os
import pickle
import sys
import time

import numpy as np

from pathlib import Path as _Path

HERE = _Path(__file__).resolve().parent  # this folder: caches, models and ranks are written here
REPO = HERE.parents[1]
SHARED_DATA = _Path(os.environ.get("NEXTWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "src"))
from nextwatch.datasets.readers import read_events  # noqa: E402
from nextwatch.evaluation.protocol import leave_last_out  # noqa: E402
from nextwatch.training import pair_kernels as pk  # noqa: E402

DATA = {
    "beauty": (str(SHARED_DATA / "amazon-beauty" / "Beauty.txt"), "sequences"),
    "ml100k": (str(SHARED_DATA / "ml-100k" / "u.data"), "movielens-100k"),
    "mlsmall": (str(SHARED_DATA / "ml-latest-small" / "ratings.csv"), "movielens-csv"),
}
GAMMAS = (0.7, 0.85)
GRID = [(g, back, eta) for g in range(2) for back in (0.0, 0.25, 0.5) for eta in (0.0, 0.3)]
CACHE = str(HERE / "cache")


def load_split(name):
    os.makedirs(CACHE, exist_ok=True)
    path = f"{CACHE}/{name}_split.pkl"
    if os.path.exists(path):
        return pickle.load(open(path, "rb"))
    split = leave_last_out(read_events(*DATA[name]).events)
    pickle.dump(split, open(path, "wb"))
    return split


def chunked_pair_sums(histories, gammas=GAMMAS, max_lead=10, max_user_titles=200, chunk_pairs=6_000_000):
    acc = pk.SumAccumulator()
    lengths = np.array([len(h) for h in histories])
    cost = np.cumsum(2 * lengths * max_lead + np.minimum(lengths, max_user_titles) ** 2)
    start = 0
    while start < len(histories):
        done = cost[start - 1] if start else 0
        end = max(start + 1, int(np.searchsorted(cost, done + chunk_pairs, side="right")))
        titles, offsets = pk.flatten(histories[start:end])
        acc.add(pk.pair_sums(titles, offsets, gammas, max_lead, max_user_titles, True))
        start = end
    return acc.result()


def audience(histories, n, max_user_titles=200):
    titles, offsets = pk.flatten(histories)
    kept, _ = pk.recent_distinct(titles, offsets, max_user_titles)
    return np.bincount(kept, minlength=n).astype(np.int64)


class Data:
    """Everything for one training set (validation or test): sums, audience, popularity."""

    def __init__(self, name, which):
        split = load_split(name)
        self.n = split.n_items
        if which == "val":
            self.train, self.hist, self.targets = split.validation_histories, split.validation_histories, split.validation_targets
        else:
            self.train, self.hist, self.targets = split.test_histories, split.test_histories, split.test_targets
        path = f"{CACHE}/{name}_{which}_sums.pkl"
        if os.path.exists(path):
            self.sums = pickle.load(open(path, "rb"))
        else:
            self.sums = chunked_pair_sums(self.train)
            pickle.dump(self.sums, open(path, "wb"))
        self.aud = audience(self.train, self.n)
        pop = np.bincount(np.concatenate(self.train), minlength=self.n).astype(np.float64)
        self.pop_counts = pop
        self.pop = (pop / max(pop.max(), 1.0)).astype(np.float32)
        self.a, self.b = pk.split_key(self.sums["key"])


def table_dense(d: Data, point, top_n=100):
    """Dense N (float32) of the default recipe for point (gamma index, back, eta)."""
    found = pk.top_neighbours(d.sums["key"], {k: v for k, v in d.sums.items() if k != "key"}, d.aud, [point], top_n)
    N = np.zeros((d.n, d.n), dtype=np.float32)
    N[found["a"], found["b"]] = found["score"]
    return N


def raw_scores(d: Data, point):
    """(a, b, score) of ALL pairs (no top-n cut) of the default recipe."""
    gi, back, eta = point
    co = d.sums["co"]
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(co > 0, co / np.sqrt(d.aud[d.a].astype(np.float64) * d.aud[d.b]), 0.0)
    pair = d.sums[f"f{gi}"] + back * d.sums[f"r{gi}"]
    tot = np.bincount(d.a, weights=pair, minlength=d.n)[d.a]
    with np.errstate(divide="ignore", invalid="ignore"):
        T = np.where(tot > 0, pair / np.sqrt(tot), 0.0)
    return T + eta * cos


def topn_dense(n, a, b, score, top_n):
    """Dense matrix keeping the top_n positive scores per row a (ties to lower b)."""
    pos = np.flatnonzero(score > 0)
    order = pos[np.lexsort((b[pos], -score[pos], a[pos]))]
    oa = a[order]
    starts = np.r_[0, np.flatnonzero(oa[1:] != oa[:-1]) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    kept = order[rank < top_n]
    M = np.zeros((n, n), dtype=np.float32)
    M[a[kept], b[kept]] = score[kept]
    return M


def topn_rows(M, top_n):
    """Keep the top_n largest positive entries of each row of a dense matrix."""
    if top_n >= M.shape[1]:
        return np.where(M > 0, M, 0).astype(np.float32)
    idx = np.argpartition(-M, top_n - 1, axis=1)[:, :top_n]
    out = np.zeros_like(M, dtype=np.float32)
    rows = np.arange(M.shape[0])[:, None]
    vals = M[rows, idx]
    out[rows, idx] = np.where(vals > 0, vals, 0)
    return out


def history_scores(N, hs, n, window=10, decay=0.6):
    """sum_i decay^i N[h_i] over each history's last ``window`` titles, (len(hs), n) float64."""
    w = decay ** np.arange(window)
    S = np.zeros((len(hs), n), dtype=np.float64)
    for i in range(window):
        users = np.array([u for u, h in enumerate(hs) if len(h) > i], dtype=np.int64)
        if not len(users):
            break
        items = np.array([hs[u][-1 - i] for u in users], dtype=np.int64)
        S[users] += w[i] * N[items]
    return S


def evaluate(N, d: Data, window=10, decay=0.6, pw=1e-3, hist=None, targets=None, block=1024, extra=None,
             return_ranks=False, pop=None):
    """HR@10, NDCG@10 of scores = pw*pop + sum_i decay^i N[h_i] (last `window` titles).
    extra: optional callable(block_histories) -> dense (B, n) float64 added to the scores."""
    hist = d.hist if hist is None else hist
    targets = d.targets if targets is None else targets
    pop = d.pop if pop is None else pop
    n = d.n
    ranks = np.empty(len(targets), dtype=np.int64)
    for s in range(0, len(targets), block):
        hs = hist[s:s + block]
        B = len(hs)
        S = history_scores(N, hs, n, window, decay)
        if extra is not None:
            S += extra(hs)
        S += pw * pop.astype(np.float64)
        S = S.astype(np.float32)
        rows = np.repeat(np.arange(B), [len(h) for h in hs])
        cols = np.concatenate(hs).astype(np.int64)
        watched = np.zeros((B, n), dtype=bool)
        watched[rows, cols] = True
        S[rows, cols] = -np.inf
        t = targets[s:s + B].astype(np.int64)
        tv = S[np.arange(B), t]
        r = (S > tv[:, None]).sum(axis=1)
        r[watched[np.arange(B), t]] = 10 ** 9
        ranks[s:s + B] = r
    hit = ranks < 10
    ndcg = np.where(hit, 1.0 / np.log2(np.minimum(ranks, 10 ** 6) + 2.0), 0.0)
    res = (hit.mean(), ndcg.mean())
    return (res, ranks) if return_ranks else res


def fmt(r):
    return f"{r[0]:.4f}/{r[1]:.4f}"


class Timer:
    def __init__(self, label):
        self.label = label

    def __enter__(self):
        self.t = time.time()

    def __exit__(self, *a):
        print(f"  [{self.label}: {time.time() - self.t:.1f}s]", flush=True)
