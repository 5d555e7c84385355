import sys
from harness import *
name = sys.argv[1]
res = {}
with Timer("load val"):
    dv = Data(name, "val")
print(name, "items", dv.n, "users", len(dv.targets))
for p in GRID:
    N = table_dense(dv, p)
    res[p] = evaluate(N, dv)
    print("val", p, fmt(res[p]), flush=True)
best = max(res, key=lambda p: res[p][1])
print("best", best, fmt(res[best]))
if len(sys.argv) > 2:
    # cross-check against project's scorer
    from nextwatch.model.next_title import NextTitleModel, PositionWeights
    from nextwatch.evaluation.ranking_metrics import evaluate_scorer
    found = pk.top_neighbours(dv.sums["key"], {k: v for k, v in dv.sums.items() if k != "key"}, dv.aud, [best], 100)
    order = np.lexsort((found["rank"], found["a"]))
    offs = np.r_[0, np.cumsum(np.bincount(found["a"], minlength=dv.n))]
    m = NextTitleModel(dv.pop, offs, found["b"][order], found["score"][order], weights=PositionWeights(10, 0.6), popularity_weight=1e-3)
    print("project scorer", evaluate_scorer(m.dense_scores, dv.hist, dv.targets, dv.n))
with Timer("load test"):
    dt = Data(name, "test")
print("test", best, fmt(evaluate(table_dense(dt, best), dt)))
