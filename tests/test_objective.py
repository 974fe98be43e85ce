"""harness/core/objective.py against hand computations, the exact KL of a small categorical distribution, and the
micro-batch and data-parallel invariance that harness/core/train.py's gradient accumulation needs (no model involved).
The rank-aware path runs each rank in a thread whose `sum_over_ranks` is an all-reduce among the threads (a
simulated process group); tests/test_invariance.py runs a real 2-process one."""
import math
import threading

import pytest
import torch

from harness.core.objective import (AGGREGATIONS, aggregate, batch_mean_var, check_choice, clipped_surrogate,
                               count_share, gae, group_advantages, kl_loss, kl_per_token, local, masked_mean,
                               masked_token_mean, max_over_ranks, reward_to_go, scope, sum_norm_length, token_share,
                               whiten)

# --- KL estimators ---------------------------------------------------------------------------------------------------


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([-1.0, -2.0, 0.0]), torch.tensor([-1.5, -1.0, 0.0])  # log r = ref - logp = -0.5, 1, 0
    assert torch.allclose(kl_per_token(logp, ref, "k1"), torch.tensor([0.5, -1.0, 0.0]))
    assert torch.allclose(kl_per_token(logp, ref, "k2"), torch.tensor([0.125, 0.5, 0.0]))
    expected = torch.tensor([math.exp(-0.5) + 0.5 - 1, math.e - 1 - 1, 0.0])
    assert torch.allclose(kl_per_token(logp, ref, "k3"), expected)
    with pytest.raises(ValueError):
        kl_per_token(logp, ref, "k4")


def _categorical(scale):
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
    q = torch.softmax(p.log() + scale * torch.tensor([1.0, -0.5, 0.3, 0.8, -1.2], dtype=torch.float64), 0)
    return p, q


@pytest.mark.parametrize("scale", [0.3, 1.5])
def test_kl_estimators_bias_against_the_exact_kl_of_a_categorical(scale):
    p, q = _categorical(scale)
    exact = (p * (p.log() - q.log())).sum()
    logp, logq = p.log(), q.log()  # the estimators are functions of the sampled outcome: their exact expectations
    mean = {k: (p * kl_per_token(logp, logq, k)).sum() for k in ("k1", "k2", "k3")}
    assert torch.isclose(mean["k1"], exact) and torch.isclose(mean["k3"], exact)  # unbiased, exactly
    # k2 = E[0.5 log^2 r] is biased: its bias is E[0.5 log^2 r] - E[-log r], second order in the log-ratio
    # (E_pi[r] = 1 gives KL = E[r - 1 - log r] = E[d^2/2 + d^3/6 + ...] with d = log r: bias = -E[d^3]/6 - ...)
    bias, d = (mean["k2"] - exact).item(), logq - logp
    third = (p * d**3).sum().item()
    assert bias > 0 and third < 0  # here k2 overestimates, in the direction -E[d^3] says
    if scale < 1:
        assert math.isclose(bias, -third / 6, rel_tol=0.25)  # near pi_ref the third-order term is the bias
    assert (bias / exact < 0.1) if scale < 1 else (bias / exact > 0.5)  # small near pi_ref, large far from it
    var_k1 = (p * (logp - logq) ** 2).sum() - exact**2  # exact variance of k1
    # Monte Carlo from samples of pi: k1 and k3 within 4 standard errors of the exact KL, k2 off by its bias
    n = 200_000
    idx = torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(0))
    for k in ("k1", "k2", "k3"):
        samples = kl_per_token(logp[idx], logq[idx], k)
        se = samples.std() / math.sqrt(n)
        assert abs(samples.mean() - mean[k]) < 4 * se, k
    k3 = kl_per_token(logp[idx], logq[idx], "k3")
    k1 = kl_per_token(logp[idx], logq[idx], "k1")
    assert (k3 >= 0).all() and (k1 < 0).any()  # k3 never negative, k1 often
    if scale < 1:
        assert math.isclose(k1.var().item(), var_k1.item(), rel_tol=0.02)
        assert k3.var() < 0.5 * k1.var()  # near pi_ref k3 has the much lower variance (Schulman)


# --- advantages and the clipped surrogate ----------------------------------------------------------------------------

def test_group_advantages_by_hand():
    r = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    # group 1: mean 2, Bessel std sqrt(2); group 2: all equal -> 0 (std 0, divided by eps only)
    assert torch.allclose(group_advantages(r, "group"), torch.tensor([[-1, 1], [0, 0]]) / (math.sqrt(2) + 1e-4))
    assert torch.allclose(group_advantages(r, "none"), torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))
    std = torch.tensor([1.0, 3.0, 2.0, 2.0]).std()
    assert torch.allclose(group_advantages(r, "batch"), torch.tensor([[-1.0, 1.0], [0.0, 0.0]]) / (std + 1e-4))
    with pytest.raises(ValueError):
        group_advantages(r, "prompt")


def test_asymmetric_clip_by_hand():
    ratio, adv = torch.tensor([1.5, 1.5, 0.5, 0.5]), torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, clipped = clipped_surrogate(ratio, adv, 0.2, 0.28)
    # max(-A rho, -A clip(rho, 0.8, 1.28)): -1.28 (clipped), 1.5, -0.5, 0.8 (clipped)
    assert torch.allclose(loss, torch.tensor([-1.28, 1.5, -0.5, 0.8]))
    assert clipped.tolist() == [True, False, False, True]


def test_check_choice_raises_value_error():
    check_choice("x", "a", ("a", "b"))
    with pytest.raises(ValueError, match="x must be one of 'a', 'b'"):
        check_choice("x", "c", ("a", "b"))


# --- aggregation -----------------------------------------------------------------------------------------------------

LOSS = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 0.0, 0.0]]])  # [P=1, K=2, Lr=4]
MASK = torch.tensor([[[1, 1, 1, 0], [1, 0, 0, 0]]], dtype=torch.bool)  # lengths 3 and 1


@pytest.mark.parametrize("mode,expected", [
    ("token_mean", (1 + 2 + 3 + 5) / 4),
    ("seq_mean_token_mean", (6 / 3 + 5 / 1) / 2),
    ("seq_mean_token_sum", (6 + 5) / 2),
    ("seq_mean_token_sum_norm", (6 + 5) / 2 / 4),  # L = Lr = 4
])
def test_aggregation_modes_by_hand(mode, expected):
    assert math.isclose(aggregate(LOSS, MASK, mode).item(), expected, rel_tol=1e-6)


def test_aggregation_normalisers_by_hand():
    assert math.isclose(aggregate(LOSS, MASK, "seq_mean_token_sum_norm", length=10).item(), 11 / 2 / 10,
                        rel_tol=1e-6)
    # token_mean with the batch's share: this prompt carries 5 of the batch's tokens, not its own 4
    assert math.isclose(aggregate(LOSS, MASK, "token_mean", tokens=torch.tensor([5.0])).item(), 11 / 5, rel_tol=1e-6)
    assert torch.equal(token_share(torch.ones(4, 2, 2, dtype=torch.bool)), torch.full((4,), 4.0))
    with pytest.raises(ValueError):
        aggregate(LOSS, MASK, "sum")


# --- micro-batch invariance under harness/core/train.py's accumulation ----------------------------------------------------
# train.py, per minibatch `mb` (prompt indices): for part in mb.split(micro): (loss(part) * len(part) / len(mb))
# .backward(); one step. Each micro-batch's loss is weighted by its share of the minibatch's PROMPTS.

P, K, L = 6, 3, 5


def _data():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, L + 1, (P, K), generator=g)
    lengths[0] = L  # uneven token counts across micro-batches
    mask = torch.arange(L) < lengths[..., None]
    return torch.randn(P, K, L, generator=g), torch.randn(P, K, 1, generator=g), mask


def _loss(theta, adv, mask, mode, tokens=None):
    return aggregate(-adv * theta, mask, mode, tokens=tokens)  # any per-token loss differentiable in theta


def _accumulate(x, adv, mask, mode, micro, tokens=None, weight="prompts"):
    theta = x.clone().requires_grad_()
    total = 0.0
    for part in torch.arange(P).split(micro):
        w = len(part) / P if weight == "prompts" else mask[part].sum() / mask.sum()
        loss = _loss(theta[part], adv[part], mask[part], mode, None if tokens is None else tokens[part]) * w
        loss.backward()
        total += loss.item()
    return total, theta.grad


def _whole(x, adv, mask, mode, tokens=None):
    theta = x.clone().requires_grad_()
    loss = _loss(theta, adv, mask, mode, tokens)
    loss.backward()
    return loss.item(), theta.grad


@pytest.mark.parametrize("mode", [m for m in AGGREGATIONS if m != "token_mean"])
@pytest.mark.parametrize("micro", [1, 2, 4])
def test_sequence_mean_modes_are_invariant_under_train_py_accumulation(mode, micro):
    x, adv, mask = _data()
    whole, grad = _whole(x, adv, mask, mode)
    acc, acc_grad = _accumulate(x, adv, mask, mode, micro)
    assert math.isclose(acc, whole, rel_tol=1e-5) and torch.allclose(acc_grad, grad, atol=1e-6)


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_token_mean_needs_the_batch_normaliser_under_train_py_accumulation(micro):
    x, adv, mask = _data()
    whole, grad = _whole(x, adv, mask, "token_mean")
    # the local token count per micro-batch: NOT the batch's token mean under train.py's prompt weights
    acc, acc_grad = _accumulate(x, adv, mask, "token_mean", micro)
    assert not torch.allclose(acc_grad, grad, atol=1e-4)
    # what train.py would need for a local-count token mean: weigh each micro-batch by its share of the TOKENS
    acc, acc_grad = _accumulate(x, adv, mask, "token_mean", micro, weight="tokens")
    assert math.isclose(acc, whole, rel_tol=1e-5) and torch.allclose(acc_grad, grad, atol=1e-6)
    # what the optimizers do under today's train.py: a per-prompt share of the batch's tokens (prepared over the
    # whole batch, travelling with it) as the denominator
    tokens = token_share(mask)
    assert torch.allclose(_whole(x, adv, mask, "token_mean", tokens)[1], grad)
    acc, acc_grad = _accumulate(x, adv, mask, "token_mean", micro, tokens=tokens)
    assert math.isclose(acc, whole, rel_tol=1e-5) and torch.allclose(acc_grad, grad, atol=1e-6)


# --- data parallelism: each rank holds a shard; gradients are averaged over ranks (harness/core/distributed.py) ----------

def on_ranks(world: int, work):
    """work(rank, sum_over_ranks) run by `world` threads whose sum_over_ranks is an all-reduce among them (sums in
    rank order, detached, as Runtime.sum_tensors); the results in rank order."""
    barrier, slots, results, errors = threading.Barrier(world), [None] * world, [None] * world, []

    def reduce_for(rank):
        def reduce(parts):
            slots[rank] = parts
            barrier.wait()
            out = tuple(sum(slots[r][i].detach().float() for r in range(world)) for i in range(len(parts)))
            barrier.wait()
            return out
        return reduce

    def run(rank):
        try:
            results[rank] = work(rank, reduce_for(rank))
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the other ranks are released
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_simulated_all_reduce_sums_what_every_rank_contributes():
    out = on_ranks(3, lambda r, reduce: reduce((torch.tensor(float(r)), torch.tensor(1.0))))
    assert [tuple(x.item() for x in o) for o in out] == [(3.0, 3.0)] * 3


SHARDS = [torch.arange(0, 2), torch.arange(2, P)]  # uneven: 2 and 4 prompts


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_every_aggregation_is_invariant_to_two_data_parallel_ranks(mode):
    x, adv, mask = _data()
    whole, grad = _whole(x, adv, mask, mode, token_share(mask) if mode == "token_mean" else None)
    shards = [torch.arange(0, 3), torch.arange(3, P)]  # equal shards (harness/core/distributed.py splits evenly)
    shares = on_ranks(2, lambda r, reduce: token_share(mask[shards[r]], reduce))
    assert torch.allclose(sum(share.sum() for share in shares), mask.sum().float())  # the batch's token count
    theta = x.clone().requires_grad_()
    for s, share in zip(shards, shares):  # each rank's loss on its shard, the gradients averaged over the 2 ranks
        (_loss(theta[s], adv[s], mask[s], mode, share if mode == "token_mean" else None) / 2).backward()
    if mode == "seq_mean_token_sum_norm":  # Lr is the padded width, the same on both shards here (else: the widest
        assert mask[shards[0]].shape[-1] == mask[shards[1]].shape[-1]  # rank's, `sum_norm_length`)
    assert torch.allclose(theta.grad, grad, atol=1e-6), mode


def test_batch_statistics_are_over_every_ranks_shard():
    g = torch.Generator().manual_seed(1)
    reward, values = torch.randn(P, K, generator=g), torch.randn(P, K, L, generator=g)
    _, _, mask = _data()

    def split(work):  # each rank's result on its shard, concatenated in rank order
        return torch.cat(on_ranks(2, lambda r, reduce: work(SHARDS[r], reduce)))

    # group_advantages(scale="batch"): counts and sums, then squared deviations about the global mean
    assert torch.allclose(split(lambda s, reduce: group_advantages(reward[s], "batch", sum_over_ranks=reduce)),
                          group_advantages(reward, "batch"), atol=1e-6)
    # whitening (PPO, REINFORCE++): the mean and population std of the counted tokens of every rank
    for eps_on in ("var", "std"):
        shards = split(lambda s, reduce: whiten(values[s], mask[s], eps_on=eps_on, sum_over_ranks=reduce))
        assert torch.allclose(shards, whiten(values, mask, eps_on=eps_on), atol=1e-5)
    # REINFORCE's mean reward; a masked mean over every rank
    means = on_ranks(2, lambda r, reduce: masked_mean(reward[SHARDS[r]], sum_over_ranks=reduce))
    assert all(torch.isclose(m, reward.mean()) for m in means)
    # per_process: each rank's own
    means = on_ranks(2, lambda r, reduce: masked_mean(reward[SHARDS[r]], sum_over_ranks=scope("per_process", reduce)))
    assert [m.item() for m in means] == pytest.approx([reward[s].mean().item() for s in SHARDS])
    # a count spread over the prompts: summed over a rank's prompts, its part of the batch's count
    shares = on_ranks(2, lambda r, reduce: count_share(mask[SHARDS[r]], reduce))
    assert torch.allclose(torch.cat(shares), torch.full((P,), mask.sum().item() / P))


# --- the shared math by hand -----------------------------------------------------------------------------------------

def test_masked_mean_by_hand():
    x = torch.tensor([[1.0, 2.0, 30.0], [4.0, 50.0, 60.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert masked_mean(x, mask).item() == pytest.approx(7 / 3)
    assert masked_mean(x).item() == pytest.approx(147 / 6)  # no mask: every element
    assert masked_mean(x, mask, dim=-1).tolist() == pytest.approx([1.5, 4.0])  # per sequence
    assert masked_mean(x, mask, count=torch.tensor(14.0)).item() == pytest.approx(0.5)  # the batch's count
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0  # nothing counted: 0, not nan
    assert masked_mean(x, torch.zeros_like(mask), dim=-1).tolist() == [0.0, 0.0]
    assert masked_token_mean(x, mask) == pytest.approx(7 / 3)
    # over ranks: the sums and counts of both (the other rank holds 10 at 2 counted places)
    assert masked_mean(x, mask, sum_over_ranks=lambda parts: (parts[0] + 20, parts[1] + 2)).item() == \
        pytest.approx(27 / 5)


def test_batch_mean_var_and_whitening_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([True, True, True, False])
    mean, var = batch_mean_var(x, mask)
    assert (mean.item(), var.item()) == pytest.approx((2.0, 1.0))  # Bessel: 2 / 2
    assert batch_mean_var(x, mask, unbiased=False)[1].item() == pytest.approx(2 / 3)
    std = math.sqrt(2 / 3)  # population std of 1, 2, 3
    out = whiten(x, mask)
    assert out.tolist() == pytest.approx([-1 / std, 0.0, 1 / std, 0.0], abs=1e-5)  # zero where not counted
    assert whiten(x, mask, shift_mean=False).tolist() == pytest.approx([2 - 1 / std, 2.0, 2 + 1 / std, 0.0], abs=1e-5)
    assert whiten(x[:3]).tolist() == pytest.approx(out[:3].tolist(), abs=1e-6)  # no mask: every element
    # eps inside the square root (TRL, the REBEL authors) or added to the std (REINFORCE++ here)
    assert whiten(x, mask, eps=1.0)[2].item() == pytest.approx(1 / math.sqrt(2 / 3 + 1))
    assert whiten(x, mask, eps=1.0, eps_on="std")[2].item() == pytest.approx(1 / (std + 1))

    def other(parts):  # the other rank holds 4 and 5: the mean and population variance of 1..5 are 3 and 2
        extra = (2.0, 9.0) if len(parts) == 2 else (((4 - 3) ** 2 + (5 - 3) ** 2),)
        return tuple(p + e for p, e in zip(parts, extra))

    assert whiten(x, mask, sum_over_ranks=other)[:3].tolist() == pytest.approx([-2 / 2**0.5, -1 / 2**0.5, 0.0])


def test_count_share_by_hand():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)  # 3 counted, 2 prompts
    assert count_share(mask).tolist() == [1.5, 1.5]
    assert token_share is count_share
    # over ranks: the other rank holds 2 prompts with 5 counted -> 8 over 4 prompts
    assert count_share(mask, lambda parts: (parts[0] + 5, parts[1] + 2)).tolist() == [2.0, 2.0]


def test_reward_to_go_and_gae_by_hand():
    rewards, values = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.5, 0.2, 0.1]])
    assert reward_to_go(rewards)[0].tolist() == pytest.approx([3.0, 2.0, 2.0])
    assert reward_to_go(rewards, 0.5)[0].tolist() == pytest.approx([1.5, 1.0, 2.0])  # 1 + 0.5 * (0 + 0.5 * 2)
    # t=2: 2 + 0 - 0.1 = 1.9 ; t=1: (0 + 0.1 - 0.2) + 0.95 * 1.9 = 1.705 ; t=0: (1 + 0.2 - 0.5) + 0.95 * 1.705
    assert torch.allclose(gae(rewards, values, gamma=1.0, lam=0.95), torch.tensor([[0.7 + 0.95 * 1.705, 1.705, 1.9]]))
    # lambda 1, gamma 1: A_t = reward-to-go - V_t (Monte Carlo)
    assert torch.allclose(gae(rewards, values, 1.0, 1.0), reward_to_go(rewards) - values)


def test_normaliser_length_and_maxima_without_other_ranks():
    assert sum_norm_length("seq_mean_token_sum_norm", None, 5) == 5.0  # Lr
    assert sum_norm_length("seq_mean_token_sum_norm", 8.0, 5) == 8.0  # the setting
    assert sum_norm_length("token_mean", None, 5) is None  # not a mode that has one
    assert max_over_ranks(torch.tensor(3.0)).item() == 3.0
    # a sum over ranks with no process group (one process): nothing to reduce; 2 processes: tests/test_invariance.py
    assert max_over_ranks(torch.tensor(3.0), lambda parts: parts).item() == 3.0
    def reduce(parts):
        return parts

    assert scope("global", reduce) is reduce and scope("per_process", reduce) is local


def test_kl_loss_term_by_hand_and_its_ratio_correction():
    logp = torch.tensor([[[-1.0, -2.0]]], requires_grad=True)
    old, ref = torch.tensor([[[-1.2, -2.0]]]), torch.tensor([[[-1.5, -1.0]]])
    mask = torch.ones(1, 1, 2, dtype=torch.bool)
    term, kl_mean = kl_loss(logp, old, ref, mask, 0.1, "k1", "seq_mean_token_sum")
    assert math.isclose(term.item(), 0.1 * (0.5 - 1.0), rel_tol=1e-6) and math.isclose(kl_mean, -0.25, rel_tol=1e-6)
    term, _ = kl_loss(logp, old, ref, mask, 0.1, "k3", "token_mean", ratio_correction=True)
    k3 = [math.exp(-0.5) + 0.5 - 1, math.e - 2]
    assert math.isclose(term.item(), 0.1 * (math.exp(0.2) * k3[0] + 1.0 * k3[1]) / 2, rel_tol=1e-6)
