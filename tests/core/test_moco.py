"""MoCo v2 (Table 3): shuffling BN across real gloo processes, the queue, InfoNCE, the MBN teacher."""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from repro.core.momentum_bn import MomentumBatchNorm1d, MomentumBatchNorm2d
from repro.core.moco import MoCo, info_nce, moco_head, shuffled_forward

# ---- shuffling BN across two processes -------------------------------------------------

GLOBAL_X = torch.randn(8, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 1
SHUFFLE_SEED = 3  # its permutation of 8 mixes the two halves (asserted below)


def bn_net(train: bool) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
    with torch.no_grad():  # non-trivial eval statistics and affine
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-1, 1)
    return net.train(train)


def _shuffle_worker(rank, world_size):
    x = GLOBAL_X.view(world_size, -1, 5)[rank]
    out = {}
    for mode, train in (("eval", False), ("train", True)):
        own, everyone = shuffled_forward(bn_net(train), x, torch.Generator().manual_seed(SHUFFLE_SEED))
        out[mode] = {"own": own, "all": everyone, "unshuffled": bn_net(train)(x).detach()}
    return out


def test_shuffling_bn_undoes_its_permutation_across_two_processes(distributed):
    ranks = distributed(_shuffle_worker, 2)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(SHUFFLE_SEED))
    assert set(perm[:4].tolist()) != {0, 1, 2, 3}  # the shuffle really mixes the processes

    # Eval-equivalent setting (BN with running statistics: per-sample outputs): each process
    # receives exactly the outputs of its own samples, and everyone sees the global batch.
    whole_eval = bn_net(False)(GLOBAL_X).detach()
    for r, got in enumerate(ranks):
        assert_close(got["eval"]["own"], got["eval"]["unshuffled"])
        assert_close(got["eval"]["own"], whole_eval[4 * r : 4 * r + 4])
        assert_close(got["eval"]["all"], whole_eval)

    # Training mode: process r normalised with the statistics of shard perm[4r:4r+4]; one
    # process simulating both shards and undoing the permutation gives the same outputs.
    permuted = torch.cat([bn_net(True)(GLOBAL_X[perm[4 * r : 4 * r + 4]]).detach() for r in range(2)])
    expected = torch.empty_like(permuted)
    expected[perm] = permuted
    for r, got in enumerate(ranks):
        assert_close(got["train"]["own"], expected[4 * r : 4 * r + 4])
        assert_close(got["train"]["all"], expected)
        # ... and differ from the unshuffled per-process BN: the BN batches really changed.
        assert (got["train"]["own"] - got["train"]["unshuffled"]).abs().max() > 1e-3


# ---- the model, two processes: queue order and loss --------------------------------------

PER_RANK, QUEUE_SIZE, STEPS = 2, 8, 3  # global batch 4: the queue holds two steps


def tiny_moco(teacher_norm="shuffle", *, queue_size=QUEUE_SIZE, encoder_bn=True, seed=0) -> MoCo:
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 6)] + ([nn.BatchNorm1d(6)] if encoder_bn else []) + [nn.ReLU()]
    return MoCo(nn.Sequential(*layers), moco_head(6, 6, 4), teacher_norm=teacher_norm,
                queue_size=queue_size, shuffle_seed=1).double()


def step_views(step):
    g = torch.Generator().manual_seed(100 + step)
    return tuple(torch.randn(2 * PER_RANK, 5, generator=g, dtype=torch.float64) for _ in range(2))


def _moco_worker(rank, world_size):
    # Encoder without BN: per-sample teacher outputs, so the queue content is predictable.
    model = tiny_moco(encoder_bn=False)
    out = {"queue0": model.queue.clone(), "losses": [], "queues": [], "ptrs": []}
    for step in range(STEPS):
        v1, v2 = (v[rank * PER_RANK : (rank + 1) * PER_RANK] for v in step_views(step))
        out["losses"].append(model(v1, v2).detach())
        out["queues"].append(model.queue.clone())
        out["ptrs"].append(int(model.queue_ptr))
    return out


def test_queue_enqueues_all_processes_in_rank_order(distributed):
    ranks = distributed(_moco_worker, 2)
    ref = tiny_moco(encoder_bn=False)
    queue0 = ref.queue.clone()
    for got in ranks:  # same seed: the same initial queue everywhere
        assert torch.equal(got["queue0"], queue0)
    with torch.no_grad():
        teacher = [F.normalize(ref.teacher(step_views(s)[1]), dim=1) for s in range(STEPS)]
        student = [F.normalize(ref.student(step_views(s)[0]), dim=1) for s in range(STEPS)]
    # Ring buffer of 8 rows, global batch 4 (rank 0's 2 rows, then rank 1's):
    expected_queues = [
        torch.cat([teacher[0], queue0[4:]]),  # step 0 fills rows 0-3
        torch.cat([teacher[0], teacher[1]]),  # step 1 fills rows 4-7
        torch.cat([teacher[2], teacher[1]]),  # step 2 overwrites the oldest: rows 0-3
    ]
    queues_before = [queue0] + expected_queues[:-1]
    for r, got in enumerate(ranks):
        assert got["ptrs"] == [4, 0, 4]
        rows = slice(r * PER_RANK, (r + 1) * PER_RANK)
        for s in range(STEPS):
            assert got["queues"][s].shape == (QUEUE_SIZE, 4)
            assert_close(got["queues"][s], expected_queues[s])
            # The loss sees the queue from BEFORE this step's enqueue; the positive is the
            # teacher embedding of the process's own samples.
            assert_close(got["losses"][s], info_nce(student[s][rows], teacher[s][rows], queues_before[s], 0.2))


# ---- single process --------------------------------------------------------------------


def test_info_nce_hand_built():
    e = torch.eye(3, dtype=torch.float64)
    K, T = 4, 0.2
    # Positive similarity 1, negatives 0: logits [5, 0, 0, 0, 0] -> log(1 + 4 e^-5).
    loss = info_nce(e[:1], e[:1], e[2:3].repeat(K, 1), T)
    assert_close(loss, torch.tensor(math.log(1 + K * math.exp(-5)), dtype=torch.float64))
    # All similarities equal (here all 0): log(K + 1).
    loss = info_nce(e[2:3], e[:1], e[1:2].repeat(K, 1), T)
    assert_close(loss, torch.tensor(math.log(K + 1), dtype=torch.float64))
    # The positive is at index 0: a queue row equal to the student is a NEGATIVE.
    queue = torch.cat([e[:1], e[1:2].repeat(K - 1, 1)])
    loss = info_nce(e[:1], e[2:3], queue, T)  # logits [0, 5, 0, 0, 0]
    assert_close(loss, torch.tensor(math.log(K + math.exp(5)), dtype=torch.float64))


def test_queue_is_a_ring_buffer_that_overwrites_the_oldest_first():
    model = tiny_moco(queue_size=6)
    queue0 = model.queue.clone()
    batches = [torch.full((2, 4), float(i), dtype=torch.float64) for i in range(1, 5)]
    model.enqueue(batches[0])
    assert int(model.queue_ptr) == 2
    assert torch.equal(model.queue, torch.cat([batches[0], queue0[2:]]))
    model.enqueue(batches[1])
    model.enqueue(batches[2])
    assert int(model.queue_ptr) == 0  # full: wraps around
    model.enqueue(batches[3])  # overwrites batch 1, the oldest
    assert torch.equal(model.queue, torch.cat([batches[3], batches[1], batches[2]]))
    assert model.queue.shape == (6, 4) and int(model.queue_ptr) == 2
    with pytest.raises(ValueError, match="multiple of the global batch"):
        model.enqueue(torch.zeros(4, 4, dtype=torch.float64))


def test_eval_forward_leaves_the_queue_alone():
    model = tiny_moco().eval()
    queue0 = model.queue.clone()
    v1, v2 = step_views(0)
    model(v1, v2)
    assert torch.equal(model.queue, queue0) and int(model.queue_ptr) == 0


def _train_steps(model, opt, steps):
    losses = []
    for s in steps:
        model.update_teacher(0.9)
        model.set_alpha(0.064)
        v1, v2 = step_views(s)
        loss = model(v1, v2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


@pytest.mark.parametrize("teacher_norm", ["shuffle", "mbn", "bn"])
def test_state_dict_resumes_exactly(teacher_norm):
    model = tiny_moco(teacher_norm)
    opt = torch.optim.SGD(model.student.parameters(), lr=0.1, momentum=0.9)
    _train_steps(model, opt, [0, 1])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    expected = _train_steps(model, opt, [2, 3])

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = tiny_moco(teacher_norm, seed=7)  # different weights and queue until loaded
    opt2 = torch.optim.SGD(resumed.student.parameters(), lr=0.1, momentum=0.9)
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    assert int(resumed.queue_ptr) == 0  # 2 steps of 4 rows in a queue of 8
    got = _train_steps(resumed, opt2, [2, 3])
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    if teacher_norm == "shuffle":  # the generator advanced and its state resumed
        assert not torch.equal(saved["model"]["shuffle_rng_state"], model.shuffle_rng_state)


def test_shuffle_with_one_process_is_plain_bn():
    v1, v2 = step_views(0)
    shuffled, plain = tiny_moco("shuffle"), tiny_moco("bn")
    assert_close(shuffled(v1, v2), plain(v1, v2))
    assert_close(shuffled.queue, plain.queue)


def test_mbn_teacher_fixed_alpha_normalises_with_the_old_history_and_commits_once():
    model = tiny_moco("mbn", queue_size=4)
    bn = model.teacher.encoder[1]
    assert isinstance(bn, MomentumBatchNorm1d)
    assert type(model.student.encoder[1]) is nn.BatchNorm1d
    alpha = 0.064
    model.set_alpha(alpha)
    with torch.no_grad():
        bn.running_mean.copy_(torch.linspace(-1, 1, 6))
        bn.running_var.copy_(torch.linspace(0.5, 2, 6))
    old_mean, old_var = bn.running_mean.clone(), bn.running_var.clone()
    queue0 = model.queue.clone()
    v1, v2 = step_views(0)

    with torch.no_grad():  # by hand: Momentum BN with the reference variance, n = 4
        h = model.teacher.encoder[0](v2)
        mean_b = h.mean(0)
        var_b = h.var(0, correction=0) * (4 / 3) ** 2
        mean = alpha * mean_b + (1 - alpha) * old_mean
        var = alpha * var_b + (1 - alpha) * old_var
        y = torch.relu((h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias)
        teacher = F.normalize(model.teacher.projector(y), dim=1)
        student = F.normalize(model.student(v1), dim=1)

    loss = model(v1, v2)
    assert_close(loss, info_nce(student, teacher, queue0, 0.2))
    assert_close(model.queue, teacher)  # the enqueued embeddings used the OLD history
    # One commit of this step's statistics (a second one would move R again).
    assert_close(bn.running_mean, alpha * mean_b + (1 - alpha) * old_mean)
    assert_close(bn.running_var, alpha * var_b + (1 - alpha) * old_var)
    assert int(bn.pending_count) == 0 and float(bn.alpha) == pytest.approx(alpha)


@pytest.mark.parametrize("teacher_norm", ["shuffle", "mbn"])
def test_teacher_starts_as_an_exact_copy_and_gets_no_gradient(teacher_norm):
    # Imported here: the spawned workers of this module need not import torchvision.
    from repro.models.backbones import resnet

    torch.manual_seed(0)
    encoder = resnet("resnet18", width=8, small_stem=True)
    # variance "biased" (the paper's Eq. 1): at alpha 1 Momentum BN is then plain BN.
    model = MoCo(encoder, moco_head(encoder.out_dim, 16, 8), teacher_norm=teacher_norm, queue_size=8,
                 variance="biased")
    s = dict(model.student.named_parameters())
    for name, p in model.teacher.named_parameters():
        assert torch.equal(p, s[name]) and not p.requires_grad, name
    if teacher_norm == "mbn":  # every BN of the teacher, none of the student
        assert isinstance(model.teacher.encoder.bn1, MomentumBatchNorm2d)
        assert not any(type(m) is nn.BatchNorm2d for m in model.teacher.modules())
        assert type(model.student.encoder.bn1) is nn.BatchNorm2d
        model.set_alpha(1.0)  # alpha 1: Momentum BN is plain BN

    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    queue0 = model.queue.clone()
    loss = model(x, x)
    # Same view, identical weights and BN batches: the teacher embedding equals the student's.
    z = F.normalize(model.student(x), dim=1).detach()
    assert_close(loss, info_nce(z, z, queue0, 0.2))
    loss.backward()
    assert all(p.grad is not None for p in model.student.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())

    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in model.teacher.named_parameters()}
    model.update_teacher(0.75)
    for name, p in model.teacher.named_parameters():
        assert_close(p, 0.75 * before[name] + 0.25 * s[name]), name


def test_unknown_teacher_norm_is_refused():
    with pytest.raises(ValueError, match="teacher_norm"):
        tiny_moco("syncbn")
