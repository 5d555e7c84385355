"""Paired standard error of the validation NDCG@10 difference: base vs last-title table (0,0,0.3)."""
from harness import *
d = Data("beauty", "val")
N = table_dense(d, (1, 0.25, 0.3)); N0 = table_dense(d, (0, 0.0, 0.3))
def f(hs):
    it = np.array([h[-1] for h in hs]); return (N0[it] - N[it]).astype(np.float64)
g = lambda r: np.where(r < 10, 1 / np.log2(np.minimum(r, 10**6) + 2.0), 0.0)
(_, ra) = evaluate(N, d, return_ranks=True); (_, rb) = evaluate(N, d, extra=f, return_ranks=True)
diff = g(rb) - g(ra)
print(f"base {g(ra).mean():.4f} variant {g(rb).mean():.4f} diff {diff.mean():.5f} paired SE {diff.std(ddof=1)/np.sqrt(len(diff)):.5f} ; SE of base NDCG {g(ra).std(ddof=1)/np.sqrt(len(ra)):.5f}")
