import torch

from harness.core.batch import Advantages, Batch


def _batch(P=5, K=2, L=3):
    # response[p, k, :] = 10 * p + k marks which prompt and which sample each sequence is
    marks = (10 * torch.arange(P)[:, None] + torch.arange(K)[None, :]).float()
    return Batch(query=torch.arange(P)[:, None].repeat(1, 4), response=marks[..., None].repeat(1, 1, L).long(),
                 mask=torch.ones(P, K, L, dtype=torch.bool), logp_old=marks[..., None].repeat(1, 1, L),
                 logp_ref=torch.zeros(P, K, L), score=marks, kl=marks, reward=marks,
                 extras=Advantages(marks, length=3.0))


def test_pairs_survive_shuffling():
    batch = _batch()
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(3))
    sub = batch.select(perm)
    for row, p in enumerate(perm.tolist()):
        assert sub.query[row, 0].item() == p
        assert sub.response[row, :, 0].tolist() == [10 * p, 10 * p + 1]  # both samples of prompt p, in order
        assert sub.reward[row].tolist() == [10 * p, 10 * p + 1]
        assert sub.extras.advantages[row].tolist() == [10 * p, 10 * p + 1]  # prepared values travel along
    assert sub.prepared(Advantages).length == 3.0  # a whole-batch value stays as it is


def test_flat_repeats_each_query_per_sample():
    batch = _batch(P=2, K=3)
    assert batch.flat("query")[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert batch.flat("response")[:, 0].tolist() == [0, 1, 2, 10, 11, 12]
