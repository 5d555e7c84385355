"""Per-request cost: one user, last 50 titles, full 12,101-item scoring, one core."""
import sys, time, pickle, numpy as np, torch
import sasrec
torch.set_num_threads(1)
split = pickle.load(open(sasrec.HERE / "cache" / "beauty_split.pkl", "rb"))
m = sasrec.SASRec(split.n_items); m.load_state_dict(torch.load(sys.argv[1])); m.eval()
hs = [h for h in split.validation_histories if len(h) >= 50][:20] + [h for h in split.validation_histories if len(h) < 10][:20]
for name, grp in (("len>=50 (L=50)", hs[:20]), ("len<10", hs[20:])):
    for h in grp[:3]: sasrec.seq_scores(m, [h])
    t = time.time(); R = 5
    for _ in range(R):
        for h in grp: sasrec.seq_scores(m, [h])
    print(f"{name}: {1000 * (time.time() - t) / (R * len(grp)):.2f} ms/request (forward + 12,101 dot products)")
print("params", sum(p.numel() for p in m.parameters()))
