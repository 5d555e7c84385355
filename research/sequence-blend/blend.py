"""Blend the default item-table scores with SASRec scores: s = z(table) + lam * z(seq).

usage: blend.py val MODEL.pt            -> all lambdas on full validation, paired SEs
       blend.py test MODEL.pt LAM       -> base and chosen lambda on test
"""
import os
import sys
import time

import numpy as np
import torch

from pathlib import Path as _Path

HERE = _Path(__file__).resolve().parent  # this folder: caches, models and ranks are written here
REPO = HERE.parents[1]
SHARED_DATA = _Path(os.environ.get("NEXTWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "src"))
import types  # noqa: E402
import nextwatch  # noqa: E402
_tr = types.ModuleType("nextwatch.training")  # skip package __init__ (pulls pyspark); kernels are numpy only
_tr.__path__ = [str(REPO / "src" / "nextwatch" / "training")]
sys.modules["nextwatch.training"] = _tr
from harness import Data, history_scores, table_dense  # noqa: E402
import sasrec  # noqa: E402

torch.set_num_threads(1)
POINT = (1, 0.25, 0.3)
LAMS = [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0]


def table_block(N, d, hs, window=10, decay=0.6, pw=1e-3):
    """Exactly the harness scoring (before masking), float32."""
    return (history_scores(N, hs, d.n, window, decay) + pw * d.pop.astype(np.float64)).astype(np.float32)


def znorm(S, watched):
    X = S.astype(np.float64)
    M = np.where(watched, np.nan, X)
    mu = np.nanmean(M, axis=1, keepdims=True)
    sd = np.nanstd(M, axis=1, keepdims=True)
    return (X - mu) / np.maximum(sd, 1e-12)


def rnorm(S):
    """Rank normalisation in [0,1] (ties share the average rank)."""
    from scipy.stats import rankdata
    return rankdata(S, axis=1, method="average") / S.shape[1]


def ndcg_of(r):
    return np.where(r < 10, 1.0 / np.log2(np.minimum(r, 10 ** 6) + 2.0), 0.0)


def run(which, model_path, lams, do_rank=True, block=1024):
    d = Data("beauty", which)
    N = table_dense(d, POINT)
    model = sasrec.SASRec(d.n)
    model.load_state_dict(torch.load(model_path))
    model.eval()
    import os
    lim = int(os.environ.get('LIMIT', '0')) or len(d.targets)
    hist, targets = d.hist[:lim], d.targets[:lim]
    U = len(targets)
    keys = [("z", l) for l in lams] + [("seq", None)] + ([("rank", l) for l in lams if l > 0] if do_rank else [])
    ranks = {k: np.empty(U, dtype=np.int64) for k in keys}
    t_seq = 0.0
    for s in range(0, U, block):
        hs = hist[s:s + block]
        t = targets[s:s + block]
        B = len(hs)
        S = table_block(N, d, hs)
        t0 = time.time()
        Q = sasrec.seq_scores(model, hs)
        t_seq += time.time() - t0
        rows = np.repeat(np.arange(B), [len(h) for h in hs])
        cols = np.concatenate(hs).astype(np.int64)
        watched = np.zeros((B, d.n), dtype=bool)
        watched[rows, cols] = True
        zS, zQ = znorm(S, watched), znorm(Q, watched)
        for l in lams:
            ranks[("z", l)][s:s + B] = sasrec.rank_eval(S if l == 0 else (zS + l * zQ), hs, t)
        ranks[("seq", None)][s:s + B] = sasrec.rank_eval(Q, hs, t)
        if do_rank:
            rS, rQ = rnorm(S), rnorm(Q)
            for l in lams:
                if l > 0:
                    ranks[("rank", l)][s:s + B] = sasrec.rank_eval(rS + l * rQ, hs, t)
    base = ndcg_of(ranks[("z", 0.0)])
    print(f"{which}: users {U}; seq-model scoring {t_seq:.1f}s total = {1000 * t_seq / U:.2f} ms/user (batched 512)")
    for k in keys:
        r = ranks[k]
        g = ndcg_of(r)
        diff = g - base
        print(f"{which} {k[0]:5s} lam={k[1]}: HR@10 {np.mean(r < 10):.4f} NDCG@10 {g.mean():.4f} "
              f"diff vs base {diff.mean():+.5f} paired SE {diff.std(ddof=1) / np.sqrt(U):.5f}", flush=True)
    np.savez(f"{HERE}/ranks_{which}{os.environ.get('TAG', '')}.npz", **{f"{a}_{b}": v for (a, b), v in ranks.items()})


if __name__ == "__main__":
    which, mp = sys.argv[1], sys.argv[2]
    lams = LAMS if which == "val" else [0.0] + [float(x) for x in sys.argv[3].split(",")]
    import os
    if os.environ.get("LAMS"):
        lams = [0.0] + [float(x) for x in os.environ["LAMS"].split(",")]
    run(which, mp, lams, do_rank=len(sys.argv) > 4 and sys.argv[4] == "rank")
