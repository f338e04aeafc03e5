"""Frozen-feature probes of the teacher backbone: linear (SPEC §4) and kNN.

FIDELITY: the backbone is the teacher's, in eval mode, so Momentum BN normalises with its
history (the reference code's "byol" evaluation setting). The linear classifier is
Linear(d -> classes) FOLLOWED by BN1d(classes), SGD momentum 0.9, no weight decay,
cosine decay. The final epoch is THE result; the best of the periodic evaluations
(the reference code's number) is reported separately and marked as such.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import PretrainConfig
from ..core import schedules
from ..data.augment import Transformed, probe_train_transform
from ..data.datasets import build_dataset, dataset_stats, num_classes, split_for
from .loop import eval_transform_for, set_lr, topk_accuracy


@torch.no_grad()
def features(encoder: nn.Module, dataset: Dataset, transform, device, *, workers=0, batch=256, generator=None):
    """(features, labels) of ``dataset`` through ``encoder`` (eval mode, no gradient)."""
    encoder.eval()
    loader = DataLoader(Transformed(dataset, transform), batch_size=batch, num_workers=workers,
                        shuffle=generator is not None, generator=generator)
    feats, labels = [], []
    for x, y in loader:
        feats.append(encoder(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels)


def knn_top1(train_f, train_y, test_f, test_y, *, k: int, temperature: float, classes: int) -> float:
    """Weighted kNN on cosine similarity (votes exp(sim / T), as in InstDisc / DINO)."""
    train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    correct = 0
    for start in range(0, len(test_f), 1024):
        sim = test_f[start : start + 1024] @ train_f.T
        top_sim, top_idx = sim.topk(min(k, len(train_f)), dim=1)
        votes = torch.zeros(len(top_sim), classes)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        correct += (votes.argmax(1) == test_y[start : start + 1024]).sum().item()
    return 100.0 * correct / len(test_f)


def linear_head(dim: int, classes: int) -> nn.Sequential:
    """Linear(dim -> classes) -> BN1d(classes), the probe's trained head (SPEC §4).

    FIDELITY: the authors' linear_eval_exp.py initialises the Linear with N(0, 0.01) weights
    and a zero bias (torch's default is uniform in +-1/sqrt(dim)).
    """
    head = nn.Sequential(nn.Linear(dim, classes), nn.BatchNorm1d(classes))
    nn.init.normal_(head[0].weight, mean=0.0, std=0.01)
    nn.init.zeros_(head[0].bias)
    return head


def linear_probe(encoder, train_set, plain_train, test, cfg: PretrainConfig, device, *, classes: int) -> dict:
    """Train Linear -> BN1d on frozen features; ``plain_train`` / ``test`` are (features, labels)."""
    p = cfg.probe
    mean, std = dataset_stats(cfg.data.dataset)
    train_tf = probe_train_transform(cfg.data.image_size, hflip=cfg.data.hflip, normalize_mean=mean,
                                     normalize_std=std)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    head = linear_head(plain_train[0].shape[1], classes)
    lr = schedules.scaled_lr(p.linear_lr_per_256, p.linear_batch_size)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    n_train = len(plain_train[1])
    steps_per_epoch = schedules.steps_per_epoch(n_train, min(p.linear_batch_size, n_train))
    total = schedules.total_steps(p.linear_epochs, steps_per_epoch)
    step, history = 0, []
    for epoch in range(p.linear_epochs):
        if p.augment:  # the paper's protocol: features of freshly augmented crops
            train_f, train_y = features(encoder, train_set, train_tf, device, workers=cfg.data.workers, generator=gen)
        else:
            order = torch.randperm(n_train, generator=gen)
            train_f, train_y = plain_train[0][order], plain_train[1][order]
        head.train()
        for i in range(steps_per_epoch):
            sl = slice(i * p.linear_batch_size, (i + 1) * p.linear_batch_size)
            set_lr(opt, lr * schedules.cosine_ramp(step, total))
            loss = F.cross_entropy(head(train_f[sl]), train_y[sl])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if (epoch + 1) % p.eval_every == 0 or epoch + 1 == p.linear_epochs:
            head.eval()
            with torch.no_grad():
                history.append((epoch + 1, *topk_accuracy(head(test[0]), test[1])))
    final_epoch, top1, top5 = history[-1]
    best = max(history, key=lambda h: h[1])
    return {"top1": top1, "top5": top5, "best_top1": best[1], "best_epoch": best[0], "probe_epochs": final_epoch}


def evaluate(model, cfg: PretrainConfig, device) -> dict:
    """Linear and kNN probes of the frozen encoder (``probe.encoder``) on the probe splits
    (``probe.protocol: cv``: cross-validated over both, :func:`evaluate_cv`)."""
    if cfg.probe.protocol == "cv":
        return evaluate_cv(model, cfg, device)
    name, root, size = cfg.data.dataset, cfg.data.root, cfg.data.image_size
    train_set = build_dataset(name, root, split_for(name, "probe_train"), size)
    test_set = build_dataset(name, root, split_for(name, "probe_test"), size)
    return evaluate_on(model, cfg, device, train_set, test_set)


def evaluate_on(model, cfg: PretrainConfig, device, train_set: Dataset, test_set: Dataset) -> dict:
    """The linear and kNN probes (protocol "paper") on the given probe-train and probe-test sets."""
    encoder, classes = getattr(model, cfg.probe.encoder).encoder, num_classes(cfg.data.dataset)
    plain = eval_transform_for(cfg)
    train = features(encoder, train_set, plain, device, workers=cfg.data.workers)
    test = features(encoder, test_set, plain, device, workers=cfg.data.workers)
    result = linear_probe(encoder, train_set, train, test, cfg, device, classes=classes)
    result["knn_top1"] = knn_top1(*train, *test, k=cfg.probe.knn_k, temperature=cfg.probe.knn_temperature,
                                  classes=classes)
    return result


# --------------------------------------------------------------------------- cross-validated probes
# DEVIATION (reduced scales, SPEC §8): probes that add no noise of their own. Every labelled
# image is a test image once (k folds over the probe splits together); the linear probe is a
# convex, deterministic fit. The paper's protocol (SGD on augmented crops) stays "paper".


def cv_folds(labels: torch.Tensor, folds: int) -> torch.Tensor:
    """The fold of each image: stratified, by a fixed permutation (never the run's seed, so
    runs of every seed are probed on the same folds and pair exactly)."""
    fold = torch.empty(len(labels), dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    for c in labels.unique():
        members = order[labels[order] == c]  # this class's images, in the fixed order
        fold[members] = torch.arange(len(members)) % folds
    return fold


def cv_knn_top1(feats, labels, fold, *, k: int, temperature: float, classes: int) -> float:
    """kNN top-1 (%) over all images, each predicted from the other folds."""
    correct = 0
    for f in range(int(fold.max()) + 1):
        test, train = fold == f, fold != f
        acc = knn_top1(feats[train], labels[train], feats[test], labels[test], k=k, temperature=temperature,
                       classes=classes)
        correct += acc * int(test.sum()) / 100.0
    return 100.0 * correct / len(labels)


def cv_linear_top1(feats, labels, fold, *, max_iter: int, c: float) -> tuple[float, float]:
    """(top-1, top-5) (%) of multinomial logistic regression on features standardised with
    the training folds' statistics, L-BFGS from zero (scikit-learn's lbfgs): deterministic."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x, y = feats.double().numpy(), labels.numpy()
    top1 = top5 = 0
    for f in range(int(fold.max()) + 1):
        test, train = (fold == f).numpy(), (fold != f).numpy()
        mean, std = x[train].mean(0), x[train].std(0)
        std[std == 0] = 1.0  # constant features (dead ReLUs) stay zero
        clf = LogisticRegression(C=c, max_iter=max_iter, solver="lbfgs")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed max_iter is the protocol
            clf.fit((x[train] - mean) / std, y[train])
        scores = clf.decision_function((x[test] - mean) / std)
        ranked = clf.classes_[np.argsort(-scores, axis=1)]
        top1 += int((ranked[:, 0] == y[test]).sum())
        top5 += int((ranked[:, :5] == y[test][:, None]).any(1).sum())
    return 100.0 * top1 / len(y), 100.0 * top5 / len(y)


def evaluate_cv(model, cfg: PretrainConfig, device) -> dict:
    """Cross-validated linear and kNN probes of the frozen encoder over the probe splits together."""
    name, root, size, p = cfg.data.dataset, cfg.data.root, cfg.data.image_size, cfg.probe
    encoder, classes = getattr(model, p.encoder).encoder, num_classes(name)
    plain = eval_transform_for(cfg)
    parts = [features(encoder, build_dataset(name, root, split_for(name, role), size), plain, device,
                      workers=cfg.data.workers) for role in ("probe_train", "probe_test")]
    feats, labels = torch.cat([f for f, _ in parts]), torch.cat([y for _, y in parts])
    fold = cv_folds(labels, p.cv_folds)
    top1, top5 = cv_linear_top1(feats, labels, fold, max_iter=p.cv_max_iter, c=p.cv_l2)
    knn = cv_knn_top1(feats, labels, fold, k=p.knn_k, temperature=p.knn_temperature, classes=classes)
    return {"top1": top1, "top5": top5, "knn_top1": knn, "probe_protocol": "cv", "probe_images": len(labels),
            "cv_folds": p.cv_folds}
