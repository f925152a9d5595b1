"""Fine-tuning after drift: what each member's batches are made of."""

from __future__ import annotations

import torch

from tasks.training.data import TrainingSet, concatenate
from tasks.training.finetune import BATCH, REPLAY_SHARE, member_pools, replay_samples_for, twin_samples_for
from tasks.training.train import _step_batches


def _parts(sizes: dict[str, int]) -> dict[str, TrainingSet]:
    return {
        name: TrainingSet(torch.zeros((n, 1, 1, 1)), torch.zeros((n, 5, 1, 1))) for name, n in sizes.items()
    }


def test_every_batch_replays_the_members_regime_in_the_same_share_whatever_the_budget() -> None:
    # A long fine-tune forgot the conditions production was made for when its 80 replay samples
    # were pooled with the matched ones (a third of each batch at 120 steps, 1.3 % at 6000).
    regimes = ["reference", "reference", "low-dose", "blur"]
    k = round(REPLAY_SHARE * BATCH)
    assert k > 0
    for steps in (120, 1500, 6000):
        replay_n = replay_samples_for(steps)
        parts = {"matched": twin_samples_for(steps), "pseudo": 12} | {
            f"replay {r}": replay_n for r in dict.fromkeys(regimes)
        }
        data, index = concatenate(_parts(parts))
        new = set(torch.cat([index["matched"], index["pseudo"]]).tolist())
        for member, pool in enumerate(member_pools(index, regimes)):
            own = set(index[f"replay {regimes[member]}"].tolist())
            gen = torch.Generator().manual_seed(member)
            batches = _step_batches(len(data), steps, BATCH, gen, pool)
            assert len(batches) == steps
            drawn = torch.cat(batches)
            for b in batches:
                ids = b.tolist()
                assert len(ids) == BATCH
                assert sum(i in own for i in ids) == k, (steps, member)
                assert sum(i in new for i in ids) == BATCH - k  # nothing of another regime
            # Each replay sample drawn about as often as a matched one (~8 times), not learnt by
            # heart from a handful: the replay set grows with the budget.
            counts = torch.bincount(drawn, minlength=len(data))[index[f"replay {regimes[member]}"]]
            assert int(counts.max()) <= 9 and int(counts.min()) >= 1


def test_no_replay_share_trains_on_the_new_samples_alone() -> None:
    data, index = concatenate(_parts({"matched": 160, "pseudo": 0}))
    (pool,) = member_pools(index, ["reference"], share=0.0)
    batches = _step_batches(len(data), 50, BATCH, torch.Generator().manual_seed(0), pool)
    assert torch.cat(batches).max() < 160 and replay_samples_for(50, 0.0) == 0


def test_a_plain_pool_draws_shuffled_epochs_as_one_stratum() -> None:
    # train_ensemble's members pass index tensors: one stratum of the whole batch, every sample
    # drawn once per epoch.
    pool = torch.arange(10, 30)
    batches = _step_batches(40, 5, 8, torch.Generator().manual_seed(3), pool)
    first_epoch = torch.cat(batches)[:20]
    assert sorted(first_epoch.tolist()) == list(range(10, 30))
