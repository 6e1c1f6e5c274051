"""Specs round-trip and validate; counts from the spec equal the built model; the seed zoo is exact."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from space import ArchSpec, ConvBlock, DenseLayer, ModelSpec, SpecError, build, flops, param_count, summary, zoo
from space.sample import SPACES, sample
from space.spec import ACTIVATIONS, BN_PLACES, HEADS, POOLS, TTAS

conv_blocks = st.builds(
    ConvBlock, filters=st.integers(1, 12), kernel=st.sampled_from([1, 3, 5]),
    padding=st.sampled_from(["same", "valid"]), reduce=st.sampled_from([0, 0, 2, 5]),
    bn=st.sampled_from(BN_PLACES), activation=st.sampled_from(ACTIVATIONS),
    pool=st.sampled_from(POOLS), dropout=st.sampled_from([0.0, 0.3]), skip=st.sampled_from([0, 0, 1, 2, 3]))
dense_layers = st.builds(DenseLayer, units=st.integers(1, 20), dropout=st.sampled_from([0.0, 0.2]),
                         bn=st.sampled_from(BN_PLACES), activation=st.sampled_from(ACTIVATIONS))


@st.composite
def arch_specs(draw) -> ArchSpec:
    try:
        return ArchSpec(convs=tuple(draw(st.lists(conv_blocks, max_size=6))),
                        dense=tuple(draw(st.lists(dense_layers, max_size=2))),
                        input_pad=draw(st.integers(0, 2)), input_bn=draw(st.booleans()),
                        head=draw(st.sampled_from(HEADS)), num_classes=draw(st.integers(2, 12)),
                        tta=draw(st.sampled_from(TTAS)))
    except SpecError:
        assume(False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(arch_specs())
def test_param_count_and_flops_equal_the_built_model(arch):
    model = build(arch).eval()
    assert param_count(arch) == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        out = model(torch.zeros(1, 1, 28, 28))
    assert out.shape == (1, arch.num_classes)
    assert flops(arch) == counter.get_total_flops()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(arch_specs())
def test_json_round_trip(arch):
    spec = ModelSpec(arch)
    assert ModelSpec.from_json(spec.to_json()) == spec


def test_same_spec_builds_the_same_model():
    arch = zoo.get("seed004-lenet5").arch
    a, b = build(arch), build(arch)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(build(arch, seed=1)[1].weight, a[1].weight)


EXACT = {"seed004-cnn1": 693_962, "seed004-lenet5": 136_586, "seed004-cnn4": 1_219_754,
         "seed004-cnn4-same": 3_382_442, "seed003": 484_172}


@pytest.mark.parametrize("name, count", sorted(EXACT.items()))
def test_exact_seed_models_have_the_seeds_parameter_count(name, count):
    p = zoo.preset(name)
    assert p.exact and p.params == count == p.reported_params and p.gap == 0
    assert sum(t.numel() for t in build(p.spec.arch).parameters()) == count


def test_every_preset_round_trips_and_states_its_reference():
    assert len(zoo.names()) == len(set(zoo.names())) == 17
    for p in zoo.PRESETS:
        assert ModelSpec.from_json(p.spec.to_json()) == p.spec
        assert p.reported_acc is not None and p.reported_split
        if p.reported_params is not None and not p.exact:
            assert abs(p.gap) <= 0.03 * p.reported_params, p.name  # fitted within the seed's rounding
            assert p.note


def test_lenet_pads_to_32():
    model = build(zoo.get("seed004-lenet5").arch)
    assert model[1](model[0](torch.zeros(1, 1, 28, 28))).shape == (1, 6, 32, 32)


@pytest.mark.parametrize("data, expected", [
    ({"convs": [{"filters": 0}]}, "convs[0].filters: must be >= 1, got 0"),
    ({"convs": [{"filters": 8, "bn": "sideways"}]}, "convs[0].bn: must be one of"),
    ({"convs": [{"filters": 8, "colour": 1}]}, "convs[0]: unknown field 'colour'"),
    ({"convs": [], "dense": [{"units": -3}]}, "dense[0].units: must be >= 1"),
    ({"convs": [], "wings": 2}, "unknown field 'wings'"),
    ({"convs": [{"filters": 4, "pool": "max"}] * 5}, "convs[4].pool: pooling a 1x1 feature map"),
    ({"convs": [{"filters": 4, "kernel": 7, "padding": "valid", "pool": "max"}] * 2 +
      [{"filters": 4, "kernel": 7, "padding": "valid"}]}, "convs[2].kernel"),
    ({"convs": [{"filters": 2.5}]}, "convs[0].filters: expected an integer"),
    ({"convs": "many"}, "convs: expected a list"),
])
def test_invalid_arch_names_the_field(data, expected):
    import json
    with pytest.raises(SpecError) as e:
        ModelSpec.from_json(json.dumps({"arch": data}))
    assert expected in str(e.value)


@pytest.mark.parametrize("change, expected", [
    ({"optimizer": "lion"}, "optimizer: must be one of"), ({"lr": 0}, "lr: must be > 0"),
    ({"epochs": 0}, "epochs: must be >= 1"), ({"augment": {"rotate": 90}}, "augment.rotate: must be <= 45"),
    ({"augment": {"flip": "yes"}}, "augment.flip: expected true or false"),
])
def test_invalid_train_spec_names_the_field(change, expected):
    import json
    data = {"arch": {"convs": [{"filters": 4}]}, "train": change}
    with pytest.raises(SpecError) as e:
        ModelSpec.from_json(json.dumps(data))
    assert expected in str(e.value)


def test_direct_construction_validates_too():
    with pytest.raises(SpecError, match="filters"):
        ConvBlock(filters=True)
    with pytest.raises(SpecError, match="convs"):
        ArchSpec(convs=[ConvBlock(4)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        ConvBlock(4).filters = 5


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(SpecError, match="seed003"):
        zoo.get("seed999")


@pytest.mark.parametrize("space", SPACES)
def test_a_thousand_samples_are_all_valid(space):
    import optuna
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11), directions=["maximize", "minimize"])
    specs = [sample(study.ask(), 1, space) for _ in range(1000)]  # raises SpecError on an invalid one
    assert len({s.to_json() for s in specs}) > 900
    if space == "stages":
        assert all(c.padding == "same" for s in specs for c in s.arch.convs)


def test_residual_spans_count_exactly_and_join_by_identity_or_projection():
    from space.spec import shortcuts
    arch = ArchSpec(convs=(
        ConvBlock(8, bn="before"),
        ConvBlock(8, bn="before"), ConvBlock(8, bn="before", skip=2),                  # identity
        ConvBlock(16, bn="after"), ConvBlock(16, bn="after", pool="max", skip=2),   # projection: width
        ConvBlock(16, pool="max"), ConvBlock(24, skip=2)),                          # projection: size and width
        head="gap")
    spans = shortcuts(arch)
    assert [(s.first, s.last, s.pool, s.project) for s in spans.values()] == [(1, 2, 1, False), (3, 4, 1, True),
                                                                          (5, 6, 2, True)]
    model = build(arch)
    assert param_count(arch) == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 1, 28, 28))
    assert flops(arch) == counter.get_total_flops()
    assert "[3x3x8+3x3x8]" in summary(arch)
    # In a spec file, round trip: the same spec builds the same model
    text = ModelSpec(arch).to_json()
    assert '"skip": 2' in text and ModelSpec.from_json(text).arch == arch
    a, b = build(ModelSpec.from_json(text).arch, seed=3), build(arch, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_skip_that_cannot_join_is_refused_naming_the_block():
    with pytest.raises(SpecError, match=r"convs\[1\].skip: spans 3 blocks"):
        ArchSpec(convs=(ConvBlock(8), ConvBlock(8, skip=3)))
    with pytest.raises(SpecError, match=r"convs\[2\].skip: the shortcut from convs\[1\]'s 28x28 input cannot be pooled"):
        ArchSpec(convs=(ConvBlock(8), ConvBlock(8, padding="valid"), ConvBlock(8, skip=2)))
    with pytest.raises(SpecError, match=r"convs\[3\].skip: overlaps"):
        ArchSpec(convs=(ConvBlock(8), ConvBlock(8, skip=2), ConvBlock(8), ConvBlock(8, skip=3)))


def test_networks_without_skips_keep_the_layout_of_their_weights_files():
    """Weights written before residual spans existed still load: a plain network is one flat Sequential."""
    for p in zoo.PRESETS:
        keys = list(build(p.spec.arch).state_dict())
        assert keys and all(k.split(".")[0].isdigit() and k.count(".") == 1 for k in keys), p.name


def test_the_stages_space_samples_residual_networks_that_count_exactly():
    import optuna
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    residual = 0
    for _ in range(300):
        spec = sample(study.ask(), 1, "stages")
        residual += any(b.skip for b in spec.arch.convs)
        assert ModelSpec.from_json(spec.to_json()) == spec
    assert residual > 50
    from space.sample import WARM_STARTS, fixed
    sizes = [param_count(fixed(w).arch) for w in WARM_STARTS]
    assert any(150_000 <= n <= 500_000 and any(b.skip for b in fixed(w).arch.convs) for n, w in zip(sizes, WARM_STARTS))


def test_a_residual_net_chooses_its_28x28_stage_blocks_apart_and_counts_exactly():
    import optuna

    from space.sample import WARM_STARTS, fixed
    from space.spec import feature_shapes

    def convs_per_side(arch: ArchSpec) -> dict[int, int]:
        sides = [side for _, side in feature_shapes(arch)[:len(arch.convs)]]  # each conv's input
        return {side: sides.count(side) for side in sides}

    light = fixed(WARM_STARTS[6]).arch  # a stem, one block at 28x28, two at 14x14 and at 7x7
    assert convs_per_side(light) == {28: 3, 14: 4, 7: 4} and param_count(light) == 170_826
    heavy = fixed({**WARM_STARTS[6], "first_blocks": 3, "blocks": 1}).arch
    assert convs_per_side(heavy) == {28: 7, 14: 2, 7: 2}
    for arch in (light, heavy):
        model = build(arch).eval()
        assert param_count(arch) == sum(p.numel() for p in model.parameters())
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 1, 28, 28))
        assert flops(arch) == counter.get_total_flops()
    # Only where it means something: a one-stage residual net has only its "blocks"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    seen = set()
    for _ in range(200):
        trial = study.ask()
        sample(trial, 1, "stages")
        p = trial.params
        assert ("first_blocks" in p) == (p["residual"] and p["stages"] > 1)
        seen.add((p["stages"], p["residual"], "first_blocks" in p))
    assert (1, True, False) in seen and (3, True, True) in seen


def test_flip_tta_predicts_the_mean_over_the_mirror_and_trains_on_one_pass():
    from space import pass_flops
    from space.sample import WARM_STARTS, fixed
    plain = dataclasses.replace(fixed(WARM_STARTS[3]).arch, tta="none")
    arch = dataclasses.replace(plain, tta="flip")
    net = build(arch, seed=3)
    inner = torch.nn.Sequential(*list(net)[1:-1])  # the same layers, the same weights, without the flips
    assert all(torch.equal(a, b) for a, b in zip(inner.state_dict().values(), build(plain, seed=3).state_dict().values()))
    x = torch.randn(5, 1, 28, 28)
    net.eval(), inner.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), (inner(x) + inner(x.flip(-1))) / 2, atol=1e-5)
        assert net(x).shape == (5, 10)
        net.train(), inner.train()
        assert torch.equal(net(x), inner(x))  # training pays one pass an image
    assert param_count(arch) == param_count(plain) == sum(p.numel() for p in net.parameters())
    with FlopCounterMode(display=False) as counter:
        net.eval()(torch.zeros(1, 1, 28, 28))
    assert flops(arch) == counter.get_total_flops() == 2 * pass_flops(arch) == 2 * flops(plain)
    # Stated in the spec file and the summary; a spec written before the field reads as none
    text = ModelSpec(arch).to_json()
    assert '"tta": "flip"' in text and ModelSpec.from_json(text).arch == arch
    assert '"tta"' not in ModelSpec(plain).to_json(compact=True) and summary(arch).endswith("flip_tta")
    with pytest.raises(SpecError, match="tta"):
        dataclasses.replace(plain, tta="rotate")


def test_flip_shift_tta_predicts_the_mean_over_ten_views_filled_with_black():
    """The image and its mirror, each as it is and moved one pixel each way, the edge black as
    training's shifts leave it: computed here on the uint8 images, apart from the model's code."""
    from fmnist.augment import to_input
    from space import pass_flops
    from space.network import with_tta, without_tta
    from space.sample import WARM_STARTS, fixed
    flip = fixed(WARM_STARTS[3]).arch
    arch = dataclasses.replace(flip, tta="flip-shift")
    net = build(arch, seed=4)
    core = without_tta(net).eval()
    assert all(torch.equal(a, b) for a, b in zip(core.state_dict().values(), build(flip, seed=4).state_dict().values()))
    assert list(with_tta(core, "flip-shift").state_dict()) == list(net.state_dict())
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    moved = [padded[:, 1 + dy:29 + dy, 1 + dx:29 + dx] for dy, dx in ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))]
    views = [v for m in moved for v in (m, m.flip(-1))]
    assert moved[1][:, :, -1].eq(0).all() and moved[1][:, :, :-1].equal(images[:, :, 1:])
    with torch.no_grad():
        expected = torch.stack([core(to_input(v)) for v in views]).mean(0)
        assert torch.allclose(net.eval()(to_input(images)), expected, atol=1e-5)
        net.train(), core.train()
        assert torch.equal(net(to_input(images)), core(to_input(images)))  # training pays one pass an image
    with FlopCounterMode(display=False) as counter:
        net.eval()(torch.zeros(1, 1, 28, 28))
    assert flops(arch) == counter.get_total_flops() == 10 * pass_flops(arch)
    assert param_count(arch) == param_count(flip)
    text = ModelSpec(arch).to_json()
    assert '"tta": "flip-shift"' in text and ModelSpec.from_json(text).arch == arch
    assert summary(arch).endswith("flip-shift_tta")


def test_tta_choices_follow_the_training_augmentation():
    from space.spec import tta_choices
    from space.sample import WARM_STARTS, fixed
    assert tta_choices(fixed(WARM_STARTS[0]).train) == ("none",)  # no flips, no shifts
    trained = fixed(WARM_STARTS[3]).train
    assert trained.augment.flip and trained.augment.shift and tta_choices(trained) == ("none", "flip", "flip-shift")
    no_shift = dataclasses.replace(trained, augment=dataclasses.replace(trained.augment, shift=0))
    assert tta_choices(no_shift) == ("none", "flip")


def test_flip_tta_is_offered_only_to_nets_trained_on_flips():
    import optuna
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    specs = []
    for _ in range(200):
        trial = study.ask()
        spec = sample(trial, 1, "stages")
        assert ("tta_flip" in trial.params) == spec.train.augment.flip
        specs.append(spec)
    assert {s.arch.tta for s in specs if s.train.augment.flip} == {"none", "flip"}
    assert all(s.arch.tta == "none" for s in specs if not s.train.augment.flip)
