"""Test-bed search for the CPU-scale evidence (issue 17): does pre-training beat random init?

One process, one thread, the project's own model (repro.models.backbones), augmentations
(repro.data.augment.two_view_transforms), schedules and training step (repro.train.step.train_step);
5-fold cross-validated kNN (repro.train.probe, k=20, T=0.07) on the teacher's features of every
image, at step 0 (the random-init control: running statistics as built) and at --evals points.
``knn_batchbn`` is the same probe with BN normalising by the probe batch's statistics instead.
Each run prints its evaluations and a last JSON line; results/testbed/ holds the lines of the
runs that chose the cpu-mnist profile (tables/profiles.yaml).

    python bench/testbed_search.py --data mnist --epochs 30 --lr 0.1 --crop 0.08
"""
import argparse, json, time
import torch
from repro.models.backbones import build_student_teacher
from repro.data.augment import two_view_transforms
from repro.core import schedules
from repro.train.step import train_step
from repro.train.probe import cv_folds, cv_knn_top1, cv_linear_top1
from repro.core.lars import LARS

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="mnist"); ap.add_argument("--size", type=int, default=28)
ap.add_argument("--stem", default="std"); ap.add_argument("--width", type=int, default=32)
ap.add_argument("--lr", type=float, default=0.1); ap.add_argument("--wd", type=float, default=1e-4)
ap.add_argument("--opt", default="sgd"); ap.add_argument("--epochs", type=float, default=10)
ap.add_argument("--batch", type=int, default=32); ap.add_argument("--mbase", type=float, default=0.02)
ap.add_argument("--crop", type=float, default=0.25); ap.add_argument("--tn", default="bn"); ap.add_argument("--sn", default="bn")
ap.add_argument("--seed", type=int, default=0); ap.add_argument("--evals", type=int, default=4)
ap.add_argument("--hidden", type=int, default=None); ap.add_argument("--proj", type=int, default=None)
ap.add_argument("--warm", type=float, default=1.0); ap.add_argument("--linear", type=int, default=0)
a = ap.parse_args()
torch.set_num_threads(1); torch.manual_seed(a.seed)
from repro.data.datasets import digits, mnist5k
data = mnist5k(a.size) if a.data == "mnist" else digits(a.size)
imgs, labels = data.images, data.labels
mean = imgs.float().mean().item() / 255; std = imgs.float().std().item() / 255
t1, t2 = two_view_transforms(a.size, crop_scale=(a.crop, 1.0), hflip=False, normalize_mean=(mean,)*3, normalize_std=(std,)*3)
m = build_student_teacher("resnet18", student_norm=a.sn, teacher_norm=a.tn, width=a.width, small_stem=a.stem == "small", hidden_dim=a.hidden, projection_dim=a.proj)
n = len(labels); spe = n // a.batch; total = int(a.epochs * spe)
peak = schedules.scaled_lr(a.lr, a.batch)
if a.opt == "sgd":
    opt = torch.optim.SGD([p for p in m.student.parameters()], lr=peak, momentum=0.9, weight_decay=a.wd)
else:
    from repro.core.lars import lars_param_groups
    opt = LARS(lars_param_groups(m.student, a.wd, lars_exclude_wd=True), lr=peak)
fold = cv_folds(labels, 5)
normed = ((imgs.float() / 255) - mean) / std
def probe():
    enc = m.teacher.encoder
    enc.eval(); 
    with torch.no_grad():
        f = torch.cat([enc(normed[i:i+500]) for i in range(0, n, 500)])
    enc.train()
    out = {"knn": round(cv_knn_top1(f, labels, fold, k=20, temperature=0.07, classes=10), 2)}
    import copy
    e2 = copy.deepcopy(enc).train()
    with torch.no_grad():
        f2 = torch.cat([e2(normed[i:i+500]) for i in range(0, n, 500)])
    out["knn_batchbn"] = round(cv_knn_top1(f2, labels, fold, k=20, temperature=0.07, classes=10), 2)
    if a.linear: out["lin"] = round(cv_linear_top1(f, labels, fold, max_iter=200, c=1.0)[0], 2)
    return out
res = {"args": vars(a), "evals": []}
t0 = time.time(); r = probe(); res["evals"].append({"step": 0, **r}); print(0, r, flush=True)
evsteps = {round(total * (i + 1) / a.evals) for i in range(a.evals)}
g = torch.Generator().manual_seed(a.seed); step = 0; ttrain = 0
while step < total:
    perm = torch.randperm(n, generator=g)
    for b in range(spe):
        if step >= total: break
        tb = time.time()
        idx = perm[b*a.batch:(b+1)*a.batch]
        v1 = torch.stack([t1(imgs[i]) for i in idx]); v2_ = torch.stack([t2(imgs[i]) for i in idx])
        lr = schedules.lr_at(step, total, peak_lr=peak, warmup_steps=int(a.warm*spe), warmup_start_lr=peak*1e-3)
        tau = schedules.tau_at(step, total, a.mbase); alpha = schedules.alpha_at(step, total, 1.0, None)
        loss = train_step(m, opt, v1, v2_, lr=lr, tau=tau, alpha=alpha)
        ttrain += time.time() - tb
        step += 1
        if step in evsteps:
            r = probe(); r.update(step=step, loss=round(loss.item(), 3), sec_step=round(ttrain/step, 4)); res["evals"].append(r); print(r, flush=True)
res["wall"] = time.time() - t0
print(json.dumps(res))
