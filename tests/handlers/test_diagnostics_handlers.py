# SPDX-License-Identifier: Apache-2.0
"""The per-level diagnostics handlers on MONAI's own trainer and evaluator with a tiny CoverNet (fast)."""

from __future__ import annotations

import json

import pytest
import torch

from monai_cover.ddf import overlap_mask
from monai_cover.engines import CoverPrepareBatch
from monai_cover.handlers import GradientShareHandler, LevelEPEHandler
from monai_cover.losses import CoverLoss
from monai_cover.metrics import LevelEPEMetric


def tiny_net(**kwargs):
    from monai.networks.nets import BasicUNet

    from monai_cover.networks import CoverNet, FeaturePyramid

    torch.manual_seed(0)
    return CoverNet(FeaturePyramid(BasicUNet(2, 1, 1, features=(4, 4, 8, 8, 16, 4))), levels=3, **kwargs)


def batches(count=4):
    g = torch.Generator().manual_seed(1)
    items = []
    for _ in range(count):
        ddf = torch.randn(2, 2, 1, 1, generator=g).expand(2, 2, 32, 32).clone() * 2
        items.append({"view_a": torch.rand(2, 1, 32, 32, generator=g), "view_b": torch.rand(2, 1, 32, 32, generator=g),
                      "ddf": ddf, "overlap": overlap_mask(ddf)})
    return items


def train(handler=None, iterations=4):
    from monai.engines import SupervisedTrainer

    net = tiny_net()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, epoch_length=iterations, train_data_loader=batches(iterations),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=CoverLoss(),
        prepare_batch=CoverPrepareBatch(), decollate=False,
    )  # fmt: skip
    if handler is not None:
        handler.attach(trainer)
    torch.manual_seed(5)  # the spread term draws its voxels from the global RNG
    trainer.run()
    return net


def test_gradient_shares_every_interval_without_changing_training(tmp_path):
    path = tmp_path / "logs" / "gradient_shares.jsonl"
    handler = GradientShareHandler(interval=2, filename=path)
    trained = train(handler)
    assert [r["iteration"] for r in handler.history] == [2, 4]
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["iteration"] for r in records] == [2, 4]
    for record in records:
        assert sorted(record["shares"]) == ["consistency", "spread", "vector"]
        for term, shares in record["shares"].items():
            assert "upcat_1" in shares and sum(shares.values()) == pytest.approx(1.0)
            assert record["norms"][term]["upcat_1"] > 0
        # L_con and the spread term act on the finest features: upcat_1 gets more of theirs than of L_vec's
        assert record["shares"]["consistency"]["upcat_1"] > record["shares"]["vector"]["upcat_1"]
    # the extra passes restore the RNG and leave .grad alone: training is the same as without the handler
    plain = train(None)
    for (name, a), (_, b) in zip(trained.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name


def test_gradient_share_handler_by_terms_and_errors():
    handler = GradientShareHandler(interval=4, over="terms")
    train(handler)
    (record,) = handler.history
    assert sum(record["shares"]["upcat_1"].values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="interval"):
        GradientShareHandler(interval=0)
    with pytest.raises(ValueError, match="over"):
        GradientShareHandler(over="levels")


def test_level_epe_handler_switches_fields_on_for_the_evaluation():
    from monai.engines import SupervisedEvaluator

    net = tiny_net()
    data = batches(3)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=data, network=net,
                                    prepare_batch=CoverPrepareBatch(), decollate=False)
    handler = LevelEPEHandler(network=net)
    handler.attach(evaluator)
    evaluator.run()
    assert net.return_fields is False  # switched back: training pays nothing
    metrics = evaluator.state.metrics
    expected = LevelEPEMetric()
    net.return_fields = True
    with torch.no_grad():
        for b in data:
            expected(net(b["view_a"], b["view_b"]), {"ddf": b["ddf"], "overlap": b["overlap"]})
    ratios = [metrics[f"level_epe_{i}"] for i in range(3)]
    assert ratios == pytest.approx([float(v) for v in expected.aggregate()])
    assert handler.last["ratios"] == pytest.approx(ratios)
    gains = [metrics[f"level_epe_gain_{i}"] for i in range(3)]
    if ratios[-1] < 1:
        assert sum(gains) == pytest.approx(1.0)
    # without the network argument, the output must carry the fields already
    plain = tiny_net()
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=data, network=plain,
                                    prepare_batch=CoverPrepareBatch(), decollate=False)
    LevelEPEHandler().attach(evaluator)
    with pytest.raises(KeyError, match="return_fields"):
        evaluator.run()
