"""Ablation: a radial log-power spectrum (128 bins) + logistic regression on the same hash split.

Run: .venv/bin/python scripts/spectral_baseline.py   (prints validation accuracy and ROC-AUC per C)
"""
import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from realitycheck.intake.data import discover, split_items

items = list(discover('../shared/data/faces-140k-sample'))
sp = split_items(items, seed=0)
def feat(p):
    g = np.asarray(Image.open(p).convert('L'), dtype=np.float32)
    g = g - g.mean()
    F = np.fft.fftshift(np.abs(np.fft.fft2(g)))
    F = np.log(F + 1e-3)
    h, w = F.shape; y, x = np.indices(F.shape); r = np.hypot(y - h/2, x - w/2).astype(int)
    prof = np.bincount(r.ravel(), F.ravel()) / np.bincount(r.ravel())
    prof = prof[:128]
    # also residual stats
    return prof
X = {k: np.stack([feat(p) for p, _ in v]) for k, v in sp.items()}
Y = {k: np.array([l == 'fake' for _, l in v]) for k, v in sp.items()}
sc = StandardScaler().fit(X['train'])
for C in [0.01, 0.1, 1]:
    m = LogisticRegression(C=C, max_iter=5000).fit(sc.transform(X['train']), Y['train'])
    for k in ['val']:
        p = m.predict_proba(sc.transform(X[k]))[:, 1]
        print(C, k, accuracy_score(Y[k], p > .5), roc_auc_score(Y[k], p))
