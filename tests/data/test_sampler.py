"""The training data order: a permutation per (seed, epoch), each rank's share of it under DDP, resumed exactly in
the middle of an epoch on one process and on two, and named in the checkpoint so a resume cannot switch it."""

from pathlib import Path

import pytest
import torch
from helpers import run_ddp_script

from p4lightning._validation import ConfigurationError
from p4lightning.data.sampler import EpochSeededSampler, seeded_train_loader


def test_one_process_draws_the_seeded_permutation_and_resumes_mid_epoch():
    full = EpochSeededSampler(20, seed=3, batch_size=4)
    full.set_epoch(2)
    order = list(full)
    assert order == torch.randperm(20, generator=torch.Generator().manual_seed(3 + 2)).tolist()
    resumed = EpochSeededSampler(20, seed=3, batch_size=4)
    resumed.resume(2, 3)
    assert list(resumed) == order[12:]
    assert list(resumed) == order  # skipping happens once


@pytest.mark.parametrize("n", [20, 21])
def test_ranks_share_the_permutation_padded_like_distributed_sampler(n):
    ranks = [EpochSeededSampler(n, seed=1, batch_size=2, num_replicas=3, rank=r) for r in range(3)]
    for s in ranks:
        s.set_epoch(4)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1 + 4)).tolist()
    padded = (order * 2)[: 3 * -(-n // 3)]
    assert [list(s) for s in ranks] == [padded[r::3] for r in range(3)]
    assert all(len(s) == len(padded) // 3 for s in ranks)
    ranks[1].resume(4, 2)  # each rank skips its own first batches
    assert list(ranks[1]) == padded[1::3][4:]


def test_the_checkpointed_order_is_checked_on_resume():
    data = torch.zeros(40, 2)
    loader = seeded_train_loader(data, 8, seed=0, trainer=None)
    state = loader.state_dict()
    assert state == {"seed": 0, "frames": 40, "batch_size": 8, "num_replicas": 1}
    loader.load_state_dict(state)
    with pytest.raises(ConfigurationError, match="seed 0; this run's is seed 5"):
        seeded_train_loader(data, 8, seed=5, trainer=None).load_state_dict(state)
    with pytest.raises(ConfigurationError, match="frames 40, batch_size 8; this run's is frames 30, batch_size 10"):
        seeded_train_loader(data[:30], 10, seed=0, trainer=None).load_state_dict(state)
    with pytest.warns(UserWarning, match="trained on 2 processes on 1"):
        loader.load_state_dict({**state, "num_replicas": 2})


def test_ddp_resume_mid_epoch_sees_the_same_batches_and_ends_with_the_same_model(tmp_path):
    r0, r1 = run_ddp_script(Path(__file__).with_name("ddp_resume_run.py"), tmp_path, timeout=400)
    for rank in (r0, r1):
        assert rank["full"]["world_size"] == 2
        full = dict(rank["full"]["batches"])
        seen = rank["cut"]["batches"] + rank["resumed"]["batches"]
        assert [step for step, _ in seen] == list(range(25))  # steps 0-12, then 13-24 after the resume
        assert all(torch.equal(full[step], batch) for step, batch in seen)
        a, b = rank["full"]["state"], rank["resumed"]["state"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(r0["full"]["batches"][0][1], r1["full"]["batches"][0][1])  # each rank its own share
