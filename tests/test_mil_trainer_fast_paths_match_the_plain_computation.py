"""The trainer's fast paths compute what the plain computation does.

- Standardisation folded into the first layer (or applied to an input smaller
  than the weights) equals standardising the input, in outputs and in
  gradients, and checkpoints that kept ``mean``/``std`` on the
  model (before the fold) still load.
- The byte-mask dropout keeps ``1 − p`` of the values, scaled so the mean is
  unchanged, and is the identity in eval mode.
- Size-bucketed batches hold every bag once per epoch, with far less padding
  than random batches of heavy-tailed bags.
- Batched inference gives the predictions and scores of one-bag-at-a-time inference.
- ABMIL runs a padded batch's encoder and attention on its real rows only, with
  the outputs and gradients of each bag run alone.
- Under bfloat16 autocast the first layer standardises before its product, so raw
  features far from 0 keep their differences; ``amp`` on the CPU turns bfloat16 on
  only for big steps: small bags train exactly as in float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mil_fixtures import one_torch_thread, witness_table  # noqa: F401 (autouse)

from mil.models import create_head
from mil.models.base import Dropout
from mil.tasks import create_task
from mil.train import (
    CPU_AMP_VALUES,
    MILModel,
    TrainConfig,
    _autocast_step,
    _epoch_batches,
    fit,
    predict_bags,
)


@pytest.mark.parametrize(("bags", "rows"), [(3, 7), (1, 3)], ids=["folded", "small-input"])
def test_folded_standardisation_equals_standardising_the_input(bags, rows):
    torch.manual_seed(0)
    x = torch.randn(bags, rows, 12) * 5 + 2
    mean, std = x.reshape(-1, 12).mean(0), x.reshape(-1, 12).std(0)
    folded = MILModel(create_head("abmil", in_dim=12, n_out=2, hidden_dim=8, dropout=0.0))
    plain = MILModel(create_head("abmil", in_dim=12, n_out=2, hidden_dim=8, dropout=0.0))
    plain.load_state_dict(folded.state_dict())
    with torch.no_grad():
        folded.mean.copy_(mean)
        folded.std.copy_(std)
    out_folded = folded(x).logits
    out_plain = plain((x - mean) / std).logits
    torch.testing.assert_close(out_folded, out_plain, rtol=1e-5, atol=1e-5)
    out_folded.sum().backward()
    out_plain.sum().backward()
    first = "head.encoder.0.weight"
    grads = {n: p.grad for n, p in folded.named_parameters()}
    torch.testing.assert_close(grads[first], dict(plain.named_parameters())[first].grad)


def test_checkpoints_with_the_standardisation_on_the_model_still_load():
    model = MILModel(create_head("abmil", in_dim=6, n_out=2, hidden_dim=4))
    state = model.state_dict()
    legacy = {k: v for k, v in state.items() if not k.startswith("head.encoder.0.m")}
    legacy = {k: v for k, v in legacy.items() if k != "head.encoder.0.std"}
    legacy["mean"], legacy["std"] = torch.full((6,), 3.0), torch.full((6,), 2.0)
    fresh = MILModel(create_head("abmil", in_dim=6, n_out=2, hidden_dim=4))
    fresh.load_state_dict(legacy, strict=True)
    assert torch.equal(fresh.mean, torch.full((6,), 3.0))
    assert torch.equal(fresh.std, torch.full((6,), 2.0))


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_byte_mask_dropout_keeps_one_minus_p_and_the_mean(p):
    torch.manual_seed(1)
    layer = Dropout(p)
    x = torch.ones(400, 500)
    y = layer(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(1 - layer.threshold / 256, abs=0.005)
    assert abs(layer.threshold / 256 - p) <= 1 / 512
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    layer.eval()
    assert layer(x) is x


def test_bucketed_batches_cover_every_bag_once_with_little_padding():
    rng = np.random.default_rng(0)
    sizes = np.maximum(1, rng.lognormal(3.0, 1.2, 400).astype(int))
    targets = np.zeros(400, dtype=np.int64)
    task = create_task("classification", [0, 1])
    config = TrainConfig(epochs=1, batch_size=16)
    batches = _epoch_batches(targets, sizes, task, config, np.random.default_rng(1))
    assert sorted(i for b in batches for i in b) == list(range(400))

    def padded(groups: list[list[int]]) -> int:
        return sum(len(b) * sizes[b].max() for b in groups)

    order = np.random.default_rng(1).permutation(400)
    random_batches = [order[i : i + 16].tolist() for i in range(0, 400, 16)]
    assert padded(batches) < 0.5 * padded(random_batches)


def test_batched_inference_equals_one_bag_at_a_time():
    table = witness_table(30, instances=(3, 80))
    task = create_task("classification", table.labels)
    torch.manual_seed(0)
    for name in ("abmil", "clam_sb", "dsmil", "transmil", "max"):
        kwargs = {"hidden_dim": 16} if name != "transmil" else {"hidden_dim": 16, "heads": 2}
        model = MILModel(create_head(name, in_dim=table.dim, n_out=2, **kwargs))
        batched, logits, scores = predict_bags(model, task, table)
        single, logits_one, scores_one = predict_bags(model, task, table, max_rows=1)
        torch.testing.assert_close(logits, logits_one, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-6)
        for a, b in zip(scores, scores_one, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_autocast_first_layer_keeps_the_differences_of_features_far_from_zero():
    torch.manual_seed(0)
    offset = torch.linspace(-3e4, 3e4, 64)  # raw features 10^4 σ from 0, as in Fox
    x = torch.randn(2, 50, 64) + offset
    model = MILModel(create_head("abmil", in_dim=64, n_out=2, hidden_dim=32, dropout=0.0))
    with torch.no_grad():
        model.mean.copy_(offset)
    plain = model(x).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(x).logits.float()
    # bfloat16 keeps ~3 digits of the standardised values; folded into the weights it
    # would keep ~3 digits of 3·10^4 and lose the features altogether.
    torch.testing.assert_close(mixed, plain, atol=0.05, rtol=0.05)


def test_cpu_amp_runs_only_big_steps_in_bfloat16():
    cpu = torch.device("cpu")
    small, big = torch.zeros(4, 300, 166), torch.zeros(1, CPU_AMP_VALUES // 1024, 1024)
    assert not _autocast_step(cpu, small, amp=True)
    assert _autocast_step(cpu, big, amp=True)
    assert not _autocast_step(cpu, big, amp=False)
    table = witness_table(16)
    task = create_task("classification", table.labels)
    trained = []
    for amp in (True, False):
        torch.manual_seed(0)
        model = MILModel(create_head("abmil", in_dim=table.dim, n_out=2, hidden_dim=16))
        config = TrainConfig(epochs=2, batch_size=4, patience=None, standardize=True, amp=amp)
        fit(model, task, table, None, config)
        trained.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(trained[0], trained[1])


@pytest.mark.parametrize("name", ["abmil", "gated_abmil"])
def test_abmil_on_the_real_rows_of_a_padded_batch_equals_each_bag_alone(name):
    torch.manual_seed(0)
    sizes = [9, 2, 5]
    head = create_head(name, in_dim=12, n_out=2, hidden_dim=8, dropout=0.0)
    bags = [torch.randn(n, 12) for n in sizes]
    x = torch.nn.utils.rnn.pad_sequence(bags, batch_first=True)
    mask = torch.arange(max(sizes))[None] < torch.tensor(sizes)[:, None]
    packed = head(x, mask)
    packed.logits.sum().backward()
    grads = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    alone = [head(bag[None]) for bag in bags]
    sum(out.logits.sum() for out in alone).backward()
    torch.testing.assert_close(packed.logits, torch.cat([out.logits for out in alone]))
    for row, (n, out) in enumerate(zip(sizes, alone, strict=True)):
        torch.testing.assert_close(packed.scores[row, :n], out.scores[0])
        assert torch.all(packed.scores[row, n:] == 0)
    for got, want in zip(grads, (p.grad for p in head.parameters()), strict=True):
        torch.testing.assert_close(got, want)
