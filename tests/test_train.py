"""The trainer on synthetic data: it learns, reports, is seeded, stops on a non-finite loss."""
from __future__ import annotations

import pytest
import torch

import fmnist
from fmnist import AugmentSpec, TrainSpec, make_splits
from space import ArchSpec, ConvBlock, DenseLayer, build

# Flatten head: the synthetic classes differ by where a band sits, which global pooling would erase.
TINY = ArchSpec(convs=(ConvBlock(8, pool="max", bn="before"), ConvBlock(16, pool="max")),
                dense=(DenseLayer(16),))


@pytest.fixture(scope="module")
def splits(synth_dir):
    return make_splits(fmnist.load(synth_dir, download=False), val_size=100, seed=0)


def _train(splits, spec=TrainSpec(epochs=4, batch_size=50, lr=5e-3), **kw):
    return fmnist.train(build(TINY), splits, spec, **kw)


def test_learns_the_synthetic_task_and_reports_everything(splits):
    reports = []
    result = _train(splits, on_report=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3, 4] == [r.epoch for r in result.curve]
    assert reports[-1].images_seen == result.images_seen == 4 * 500
    assert result.val_acc > 0.6 and result.test_acc > 0.6  # chance is 0.1
    assert result.test_top5 >= result.test_acc
    assert result.images_per_s > 0 and result.device == "cpu" and result.stop_reason is None
    assert reports[-1].train_loss < reports[0].train_loss


def test_checkpoints_report_inside_an_epoch(splits):
    result = _train(splits, spec=TrainSpec(epochs=2, batch_size=50), checkpoints=[100, 600])
    assert [r.images_seen for r in result.curve] == [100, 500, 600, 1000]
    assert result.curve[0].epoch == 0.2
    # Each report names the checkpoints it serves, as asked (before rounding to whole batches).
    odd = _train(splits, spec=TrainSpec(epochs=2, batch_size=50), checkpoints=[90, 95, 610], every_epoch=False)
    assert [(r.images_seen, r.checkpoints) for r in odd.curve] == [(100, (90, 95)), (650, (610,)), (1000, ())]


def test_same_seed_same_run_different_seed_different_run(splits):
    spec = TrainSpec(epochs=1, batch_size=50, augment=AugmentSpec(shift=2, flip=True, rotate=10, erase=0.3))
    a, b = _train(splits, spec, seed=3, precision="fp32"), _train(splits, spec, seed=3, precision="fp32")
    c = _train(splits, spec, seed=4, precision="fp32")
    assert a.curve[0].train_loss == b.curve[0].train_loss != c.curve[0].train_loss


def test_a_non_finite_loss_stops_with_the_reason(splits):
    model = build(TINY)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    result = fmnist.train(model, splits, TrainSpec(epochs=3, batch_size=50))
    assert result.stop_reason and "non-finite loss" in result.stop_reason
    assert result.images_seen < 3 * 500 and result.test_acc is None


def test_an_exception_from_on_report_stops_training(splits):
    class Stop(Exception):
        pass

    def stop_after_first(report):
        raise Stop(report.epoch)

    with pytest.raises(Stop):
        _train(splits, on_report=stop_after_first)


def test_every_optimizer_and_schedule_trains(splits):
    for opt, sched in (("sgd", "cosine"), ("adam", "constant"), ("adamw", "onecycle")):
        r = _train(splits, TrainSpec(optimizer=opt, schedule=sched, epochs=1, batch_size=100, lr=0.01,
                                     label_smoothing=0.1))
        assert r.stop_reason is None and r.val_acc is not None


def test_device_and_precision_choices():
    assert fmnist.pick_device("cpu") == torch.device("cpu")
    assert fmnist.pick_precision(torch.device("cpu"), "fp32") is None
    assert fmnist.pick_precision(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(fmnist.UsageError, match="^device: must be one of"):
        fmnist.pick_device("tpu")
    with pytest.raises(fmnist.UsageError, match="^precision: must be one of"):
        fmnist.pick_precision(torch.device("cpu"), "fp8")
    if not torch.cuda.is_available():
        with pytest.raises(fmnist.UsageError, match="no CUDA GPU"):
            fmnist.pick_device("cuda")


def test_no_validation_split_trains_without_val_acc(synth_dir):
    data = make_splits(fmnist.load(synth_dir, download=False), val_size=0)
    r = fmnist.train(build(TINY), data, TrainSpec(epochs=1, batch_size=100))
    assert r.val_acc is None and r.curve[0].val_acc is None and r.test_acc is not None


def test_a_reason_returned_by_on_report_stops_with_the_partial_curve(splits):
    result = _train(splits, checkpoints=[200], on_report=lambda r: "enough" if r.images_seen >= 200 else None)
    assert result.stop_reason == "enough" and result.images_seen == 200
    assert [r.images_seen for r in result.curve] == [200] and result.test_acc is None


def test_evaluation_at_checkpoints_on_their_own_subsets_and_at_the_end_on_the_whole_split(splits):
    quick = splits.val_subset(20)
    assert len(quick) == 20 and splits.val_subset(20).images.equal(quick.images)  # fixed: the same images
    assert sorted(quick.labels.tolist()) == sorted(list(range(10)) * 2)  # stratified
    seven = splits.val_subset(7)  # accuracy on 7 images is a multiple of 1/7, on 100 of 1/100
    seen = []
    result = _train(splits, spec=TrainSpec(epochs=2, batch_size=50), checkpoints={100: seven, 600: None},
                    every_epoch=False, on_report=lambda r: seen.append(r.images_seen))
    assert [r.images_seen for r in result.curve] == [100, 600, 1000]  # no epoch-end evaluations
    assert seen == [100, 600, 1000]  # the end is reported too, for observers
    for report, n in zip(result.curve, (7, 100, 100)):
        assert abs(report.val_acc * n - round(report.val_acc * n)) < 1e-4
    assert result.val_acc == result.curve[-1].val_acc and result.test_acc is not None


def test_the_warm_up_is_short_whatever_the_length_of_training():
    from fmnist.trainer import WARMUP_IMAGES, lr_factor
    steps = 200 * 60  # 60 epochs of 200 batches
    warm = WARMUP_IMAGES // 256
    assert lr_factor("onecycle", warm - 1, steps, 256) == 1.0 and lr_factor("onecycle", 0, steps, 256) < 0.2
    assert lr_factor("onecycle", 9, 100, 256) == 1.0  # a short run keeps a tenth
