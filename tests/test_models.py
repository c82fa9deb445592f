"""Backbones, cells and the Transferable Memory Unit: shapes, states, gradients, equations."""

import pytest
import torch
import torch.nn.functional as F

from transmem.models import (
    BACKBONES,
    ConvLSTMCell,
    RecurrentPredictor,
    SpatioTemporalLSTMCell,
    TransferableMemory,
    patchify,
    rollout_mask,
    unpatchify,
)
from transmem.models.cells import FORGET_BIAS


def _frames(batch=2, steps=6, channels=1, size=16, seed=0):
    return torch.rand(batch, steps, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("norm", ["none", "group"])
def test_backbone_shapes_and_state_exposure(backbone, norm):
    torch.manual_seed(0)
    model = RecurrentPredictor(backbone, channels=1, hidden=[8, 8, 8], kernel=3, patch=4, norm=norm)
    frames = _frames(steps=7)
    rollout = model(
        frames, rollout_mask(2, 7, 3), record_layers=[0, 2], return_inputs=True, collect_decoupling=model.uses_decoupling
    )
    assert rollout.predictions.shape == (2, 6, 1, 16, 16)
    assert rollout.inputs.shape == (2, 6, 1, 16, 16)
    assert set(rollout.memories) == {0, 2}
    assert rollout.memories[0].shape == (2, 6, 8, 4, 4)
    assert len(rollout.decoupling) == (3 * 6 if model.uses_decoupling else 0)
    # inputs fed: truth for steps 0..2, own predictions after
    assert torch.equal(rollout.inputs[:, :3], frames[:, :3])
    assert torch.allclose(rollout.inputs[:, 3:], rollout.predictions[:, 2:5])


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_rollout_records_optional_outputs_only_when_asked(backbone):
    torch.manual_seed(0)
    layout = {1: {"source_channels": [8, 4], "source_sizes": [None, [8, 8]]}, 2: {"source_channels": [8], "use_gates": False}}
    model = RecurrentPredictor(backbone, 1, [8, 8, 8], 3, 4, transfer_layout=layout)
    frames, mask = _frames(steps=6), rollout_mask(2, 6, 3)
    bare = model(frames, mask)
    assert bare.inputs is None and bare.memories == {} and bare.hiddens == {} and bare.decoupling == []
    # always returned: D_t of every TMU / distill layer, gate means where the layer has gates
    assert {layer: d.shape for layer, d in bare.distilled.items()} == {1: (2, 5, 2, 8, 4, 4), 2: (2, 5, 1, 8, 4, 4)}
    assert {layer: g.shape for layer, g in bare.gate_means.items()} == {1: (2, 5, 2)}
    full = model(frames, mask, record_layers=[2, 0], return_inputs=True, collect_decoupling=model.uses_decoupling)
    assert torch.equal(full.predictions, bare.predictions)  # recording changes nothing
    assert list(full.memories) == list(full.hiddens) == [2, 0]  # in the caller's order
    assert all(v.shape == (2, 5, 8, 4, 4) for v in [*full.memories.values(), *full.hiddens.values()])
    assert full.inputs.shape == (2, 5, 1, 16, 16)
    if model.uses_decoupling:  # one pair per step and layer, (B, hidden, h * w)
        assert len(full.decoupling) == 5 * 3 and all(dc.shape == dm.shape == (2, 8, 16) for dc, dm in full.decoupling)
    else:
        assert full.decoupling == []
    # the recorded top hidden state is what the output head reads
    top = model.output(full.hiddens[2].flatten(0, 1)).unflatten(0, (2, 5))
    assert torch.allclose(unpatchify(top, 4), full.predictions, atol=1e-6)


def test_any_frame_size_divisible_by_patch_works_and_others_fail():
    model = RecurrentPredictor("predrnn", 1, [8], 3, 4, "group")
    assert model(torch.rand(1, 4, 1, 24, 40)).predictions.shape == (1, 3, 1, 24, 40)
    with pytest.raises(ValueError, match="not divisible by patch"):
        model(torch.rand(1, 4, 1, 18, 16))
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(1, 4, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        model(torch.rand(4, 1, 16, 16))


def test_patchify_round_trip():
    frames = _frames(batch=3, steps=4, channels=2, size=12)
    patches = patchify(frames, 3)
    assert patches.shape == (3, 4, 18, 4, 4)
    assert torch.equal(unpatchify(patches, 3), frames)
    # patch channel layout: pixel (0, 1) of the first 3x3 patch of channel 0
    assert patches[0, 0, 1, 0, 0] == frames[0, 0, 0, 0, 1]


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_gradients_reach_every_parameter(backbone):
    torch.manual_seed(0)
    layout = {0: {"source_channels": [8, 4], "source_sizes": [None, [8, 8]], "use_gates": True}}
    model = RecurrentPredictor(backbone, 1, [8, 8], 3, 4, "group", layout)
    frames = _frames()
    rollout = model(frames, torch.zeros(2, 4, dtype=torch.bool), collect_decoupling=model.uses_decoupling)
    unit = model.transfer_unit(0)
    loss = F.mse_loss(rollout.predictions, frames[:, 1:])
    loss = loss + sum(unit.project(rollout.distilled[0][:, :, n], n).square().mean() for n in range(2))
    if model.uses_decoupling:
        loss = loss + sum((dc * dm).sum(2).abs().mean() for dc, dm in rollout.decoupling)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("norm", ["none", "group"])
def test_channels_last_is_the_same_network_in_another_layout(backbone, norm):
    torch.manual_seed(0)
    layout = {0: {"source_channels": [8, 4], "source_sizes": [None, [8, 8]], "use_gates": True}}
    default = RecurrentPredictor(backbone, 1, [8, 8], 3, 4, norm, layout)
    nhwc = RecurrentPredictor(backbone, 1, [8, 8], 3, 4, norm, layout)
    nhwc.load_state_dict(default.state_dict())
    assert nhwc.use_channels_last() is nhwc and nhwc.memory_format == torch.channels_last
    convs = [m.weight for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    frames, mask = _frames(), torch.rand(2, 4, generator=torch.Generator().manual_seed(1)) > 0.5
    decouple = default.uses_decoupling
    states = []
    nhwc.cells[0].register_forward_hook(lambda cell, inputs, out: states.append(inputs[0]))  # the frame fed
    nhwc.cells[1].register_forward_hook(lambda cell, inputs, out: states.extend([inputs[1], out.hidden, out.memory]))
    a = default(frames, mask, record_layers=[1], collect_decoupling=decouple)
    b = nhwc(frames, mask, record_layers=[1], collect_decoupling=decouple)
    assert all(state.is_contiguous(memory_format=torch.channels_last) for state in states)  # the states really are NHWC
    assert torch.allclose(a.predictions, b.predictions, atol=1e-6)
    assert torch.allclose(a.memories[1], b.memories[1], atol=1e-5)
    assert torch.allclose(a.distilled[0], b.distilled[0], atol=1e-5)
    for rollout in (a, b):
        (F.mse_loss(rollout.predictions, frames[:, 1:]) + rollout.distilled[0].square().mean()).backward()
    for (name, p), q in zip(default.named_parameters(), nhwc.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        assert p.grad is None or torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name
    # the weights are the same numbers: a state dict moves between the layouts unchanged
    assert all(torch.equal(v, nhwc.state_dict()[k]) for k, v in default.state_dict().items())


def test_teacher_mask_selects_truth_or_prediction_per_sequence():
    torch.manual_seed(0)
    model = RecurrentPredictor("convlstm", 1, [4], 3, 4)
    frames = _frames(steps=5)
    mask = torch.tensor([[True, True, True], [False, False, False]])
    rollout = model(frames, mask, return_inputs=True)
    assert torch.equal(rollout.inputs[0], frames[0, :4])
    assert torch.equal(rollout.inputs[1, 0], frames[1, 0])
    assert torch.allclose(rollout.inputs[1, 1:], rollout.predictions[1, :3])
    # None = always truth
    assert torch.equal(model(frames, None, return_inputs=True).inputs, frames[:, :4])


def test_predict_matches_rollout_and_ignores_future_content():
    torch.manual_seed(0)
    model = RecurrentPredictor("predrnn", 1, [8, 8], 3, 4).eval()
    frames = _frames(steps=8)
    out = model.predict(frames[:, :3], 5)
    assert out.shape == (2, 5, 1, 16, 16)
    with torch.no_grad():
        noisy = frames.clone()
        noisy[:, 3:] = torch.rand_like(noisy[:, 3:])
        reference = model(noisy, rollout_mask(2, 8, 3)).predictions[:, 2:]
    assert torch.allclose(out, reference, atol=1e-6)


# ----------------------------------------------------------------------------- TMU equations


def reference_tmu_step(weight, bias, distiller_weights, norm_params, x, h, c, num_sources, hidden):
    """METHOD.md written out literally, loop by loop, independent of transmem's modules."""
    gates = F.conv2d(torch.cat([x, h], 1), weight, bias, padding=weight.shape[-1] // 2)
    chunks = torch.split(gates, hidden, dim=1)
    i, f, g, o = torch.sigmoid(chunks[0]), torch.sigmoid(chunks[1] + FORGET_BIAS), torch.tanh(chunks[2]), torch.sigmoid(chunks[3])
    c_candidate = f * c + i * g
    h_new = o * torch.tanh(c_candidate)
    c_new = c_candidate.clone()
    distilled = []
    for n in range(num_sources):
        d = F.conv2d(c_candidate, distiller_weights[n])
        mean = d.mean(dim=(1, 2, 3), keepdim=True)
        var = d.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        gamma, beta = norm_params[n]
        d = (d - mean) / torch.sqrt(var + 1e-5) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
        distilled.append(d)
        transfer_gate = torch.sigmoid(chunks[4 + n])
        mixed = transfer_gate * d + (1 - transfer_gate) * c_candidate
        c_new = c_new + mixed
    return h_new, c_new, distilled


@pytest.mark.parametrize("num_sources", [1, 2, 3])
def test_tmu_step_matches_independent_implementation(num_sources):
    torch.manual_seed(num_sources)
    hidden, in_channels = 6, 5
    unit = TransferableMemory(hidden, [hidden] * num_sources)
    cell = ConvLSTMCell(in_channels, hidden, kernel=3, transfer=unit)
    for distiller in unit.distillers:  # non-trivial affine parameters
        distiller[1].weight.data.uniform_(0.5, 1.5)
        distiller[1].bias.data.uniform_(-0.5, 0.5)
    x, h, c = torch.randn(2, in_channels, 7, 7), torch.randn(2, hidden, 7, 7), torch.randn(2, hidden, 7, 7)
    out = cell(x, h, c)
    expected_h, expected_c, expected_d = reference_tmu_step(
        cell.gate_conv.weight,
        cell.gate_conv.bias,
        [d[0].weight for d in unit.distillers],
        [(d[1].weight, d[1].bias) for d in unit.distillers],
        x,
        h,
        c,
        num_sources,
        hidden,
    )
    assert torch.allclose(out.hidden, expected_h, atol=1e-6)
    assert torch.allclose(out.memory, expected_c, atol=1e-6)
    for n in range(num_sources):
        assert torch.allclose(out.distilled[:, n], expected_d[n], atol=1e-6)
    gate_groups = cell.gate_conv(torch.cat([x, h], 1))[:, 4 * hidden :].view(2, num_sources, hidden, 7, 7)
    assert torch.allclose(out.gate_means, torch.sigmoid(gate_groups).mean(dim=(2, 3, 4)), atol=1e-6)


def test_release_norm_tmu_cell_follows_the_released_equations():
    """norm = "release", no forget bias: LayerNorm over (6C, h, w) on the biased gate convolution,
    each distiller a bias-free 1x1 convolution and LayerNorm over (C, h, w), per-element affine."""
    torch.manual_seed(0)
    hidden, size = 4, (5, 5)
    unit = TransferableMemory(hidden, [hidden, hidden], distiller_norm="layer", size=size)
    cell = ConvLSTMCell(3, hidden, 3, "release", unit, forget_bias=0.0, size=size)
    norms = [m for m in cell.modules() if isinstance(m, torch.nn.LayerNorm)]
    for norm in norms:  # per-element affine weights, not one per channel
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.5, 0.5)
    x, h, c = torch.randn(2, 3, *size), torch.randn(2, hidden, *size), torch.randn(2, hidden, *size)
    out = cell(x, h, c)
    conv, norm = cell.gate_conv
    assert conv.bias is not None and [tuple(n.normalized_shape) for n in norms] == [(hidden, *size)] * 2 + [(6 * hidden, *size)]
    gates = F.layer_norm(
        F.conv2d(torch.cat([x, h], 1), conv.weight, conv.bias, padding=1), norm.normalized_shape, norm.weight, norm.bias
    )
    i, f, g, o, *transfer = torch.sigmoid(gates).split(hidden, dim=1)
    candidate = f * c + i * torch.tanh(gates[:, 2 * hidden : 3 * hidden])
    memory = candidate.clone()
    for n, gate in enumerate(transfer):
        distiller_conv, distiller_norm = unit.distillers[n]
        assert distiller_conv.bias is None
        d = F.layer_norm(F.conv2d(candidate, distiller_conv.weight), (hidden, *size), distiller_norm.weight, distiller_norm.bias)
        assert torch.allclose(out.distilled[:, n], d, atol=1e-5)
        memory = memory + gate * d + (1 - gate) * candidate
    assert torch.allclose(out.hidden, o * torch.tanh(candidate), atol=1e-5)
    assert torch.allclose(out.memory, memory, atol=1e-5)


def test_release_norm_normalises_the_tmu_layer_only_and_ties_the_frame_size():
    from transmem.errors import DataError

    torch.manual_seed(0)
    layout = {0: {"source_channels": [8, 8]}}
    model = RecurrentPredictor("convlstm", 1, [8, 8], 3, 4, "release", layout, forget_bias=0.0, frame_size=16)
    assert isinstance(model.cells[1].gate_conv, torch.nn.Conv2d) and model.cells[1].gate_conv.bias is not None
    assert model.frame_size == 16 and model(_frames()).predictions.shape == (2, 5, 1, 16, 16)
    with pytest.raises(
        DataError, match="32x32 pixels: this model \\(model.norm = 'release'\\) has LayerNorm weights for 16x16 frames only"
    ):
        model(_frames(size=32))
    # without a TMU layer, "release" is "none": plain biased ConvLSTM cells, any frame size
    plain = RecurrentPredictor("convlstm", 1, [8, 8], 3, 4, "release")
    none = RecurrentPredictor("convlstm", 1, [8, 8], 3, 4, "none")
    none.load_state_dict(plain.state_dict())
    assert plain.frame_size is None and torch.equal(none(_frames(size=32)).predictions, plain(_frames(size=32)).predictions)
    with pytest.raises(ValueError, match="ties the weights to one frame size"):
        RecurrentPredictor("convlstm", 1, [8], 3, 4, "release", layout)
    with pytest.raises(ValueError, match="ConvLSTM TMU"):
        RecurrentPredictor("predrnn", 1, [8], 3, 4, "release", frame_size=16)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_forget_bias_is_added_to_every_forget_gate(backbone):
    """A model with forget_bias 0 and its forget-gate biases raised by 1 is the default model."""
    torch.manual_seed(0)
    default = RecurrentPredictor(backbone, 1, [8, 8], 3, 4)
    shifted = RecurrentPredictor(backbone, 1, [8, 8], 3, 4, forget_bias=0.0)
    shifted.load_state_dict(default.state_dict())
    frames, mask = _frames(), rollout_mask(2, 6, 3)
    decouple = default.uses_decoupling
    assert not torch.allclose(default(frames, mask, collect_decoupling=decouple).predictions, shifted(frames, mask).predictions)
    with torch.no_grad():
        for cell in shifted.cells:
            bias = cell.gate_conv.bias if backbone == "convlstm" else cell.conv_x.bias
            for group in (1,) if backbone == "convlstm" else (1, 4):  # f (ConvLSTM); f and f' (ST-LSTM)
                bias[group * 8 : (group + 1) * 8] += FORGET_BIAS
    assert torch.allclose(default(frames, mask).predictions, shifted(frames, mask).predictions, atol=1e-6)


def test_tmu_gate_extremes_follow_the_equations():
    unit = TransferableMemory(4, [4, 4])
    candidate = torch.randn(1, 4, 3, 3)
    _, distilled, _ = unit(candidate, torch.zeros(1, 8, 3, 3))
    closed, _, _ = unit(candidate, torch.full((1, 8, 3, 3), -50.0))  # T = 0: M^n = C'
    opened, _, _ = unit(candidate, torch.full((1, 8, 3, 3), 50.0))  # T = 1: M^n = D^n
    assert torch.allclose(closed, 3 * candidate, atol=1e-6)
    assert torch.allclose(opened, candidate + distilled.sum(1), atol=1e-5)


def test_mean_merge_is_the_sum_over_n_plus_one_and_keeps_the_memory_scale():
    torch.manual_seed(0)
    summed, averaged = TransferableMemory(4, [4, 4]), TransferableMemory(4, [4, 4], merge="mean")
    averaged.load_state_dict(summed.state_dict())
    candidate, gates = torch.randn(2, 4, 3, 3), torch.randn(2, 8, 3, 3)
    total, distilled, _ = summed(candidate, gates)
    mean, same_distilled, _ = averaged(candidate, gates)
    assert torch.allclose(mean, total / 3, atol=1e-6) and torch.equal(distilled, same_distilled)
    closed, _, _ = averaged(candidate, torch.full((2, 8, 3, 3), -50.0))  # T = 0: C_t = C'_t exactly
    assert torch.allclose(closed, candidate, atol=1e-6)
    # Over a sequence with the forget gate near 1, "sum" grows the memory geometrically, "mean" does not.
    sizes = {}
    for merge in ("sum", "mean"):
        unit = TransferableMemory(4, [4, 4], merge=merge)
        memory = torch.randn(1, 4, 3, 3)
        for _ in range(10):
            memory, _, _ = unit(0.95 * memory, torch.zeros(1, 8, 3, 3))
        sizes[merge] = memory.abs().mean().item()
    assert sizes["sum"] > 100 * sizes["mean"] and sizes["mean"] < 5
    with pytest.raises(ValueError, match="merge"):
        TransferableMemory(4, [4], merge="max")


def test_distill_ablation_keeps_memory_and_adds_no_gate_groups():
    unit = TransferableMemory(4, [4, 4], use_gates=False)
    assert unit.gate_groups == 0
    cell = ConvLSTMCell(3, 4, transfer=unit)
    assert cell.gate_conv.out_channels == 16
    plain = ConvLSTMCell(3, 4)
    plain.load_state_dict({k: v for k, v in cell.state_dict().items() if k.startswith("gate_conv")})
    x, h, c = torch.randn(1, 3, 5, 5), torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    assert torch.allclose(cell(x, h, c).memory, plain(x, h, c).memory)
    assert cell(x, h, c).distilled.shape == (1, 2, 4, 5, 5)


def test_stlstm_tmu_cell_transfers_temporal_memory():
    torch.manual_seed(0)
    unit = TransferableMemory(4, [4])
    cell = SpatioTemporalLSTMCell(3, 4, transfer=unit)
    x, h, c, m = (torch.randn(1, k, 5, 5) for k in (3, 4, 4, 4))
    out = cell(x, h, c, m)
    xs, hs = cell.conv_x(x), cell.conv_h(h)
    gate = torch.sigmoid(xs[:, 28:] + hs[:, 16:])
    f = torch.sigmoid(xs[:, 4:8] + hs[:, 4:8] + FORGET_BIAS)
    i, g = torch.sigmoid(xs[:, :4] + hs[:, :4]), torch.tanh(xs[:, 8:12] + hs[:, 8:12])
    candidate = f * c + i * g
    d = unit.distillers[0](candidate)
    assert torch.allclose(out.memory, candidate + gate * d + (1 - gate) * candidate, atol=1e-6)


def test_heterogeneous_source_projection_and_interpolation():
    unit = TransferableMemory(8, [8, 3], [None, (6, 6)])
    assert isinstance(unit.projections[0], torch.nn.Identity)
    distilled = torch.randn(2, 5, 8, 4, 4)
    assert unit.project(distilled, 0).shape == (2, 5, 8, 4, 4)
    assert unit.project(distilled, 1).shape == (2, 5, 3, 6, 6)


def test_tmu_layer_must_exist_and_stlstm_needs_equal_hidden():
    with pytest.raises(ValueError, match="layer 2 does not exist"):
        RecurrentPredictor("convlstm", 1, [4, 4], transfer_layout={2: {"source_channels": [4]}})
    with pytest.raises(ValueError, match="hidden sizes must be equal"):
        RecurrentPredictor("predrnn", 1, [4, 8])


# ----------------------------------------------------------------------------- Knowledge Flow


def test_knowledge_flow_mixer_equation_and_fade_out():
    from transmem.models.knowledge_flow import KnowledgeFlowMixer

    torch.manual_seed(0)
    mixer = KnowledgeFlowMixer(4, [4, 2])
    mixer.flow_logits.data = torch.tensor([0.5, -0.2, 0.1])
    hidden, t1, t2 = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6), torch.randn(1, 2, 3, 3)
    w = torch.softmax(mixer.flow_logits, 0)[1:] * 0.8
    expected = (1 - w.sum()) * hidden + w[0] * mixer.adapters[0](t1)
    expected = expected + w[1] * F.interpolate(mixer.adapters[1](t2), size=(6, 6), mode="bilinear", align_corners=False)
    assert torch.allclose(mixer(hidden, [t1, t2], 0.8), expected, atol=1e-6)
    assert torch.equal(mixer(hidden, [t1, t2], 0.0), hidden)


def test_knowledge_flow_layers_change_training_rollout_only_while_teachers_flow():
    torch.manual_seed(0)
    layout = {0: {"kind": "kflow", "source_channels": [8], "source_sizes": [None]}}
    model = RecurrentPredictor("convlstm", 1, [8, 8], 3, 4, transfer_layout=layout)
    assert model.memory_transfer_layers == [] and "0" in model.flow
    frames = _frames()
    teacher = {0: [torch.randn(2, 5, 8, 4, 4)]}
    plain = model(frames).predictions
    assert torch.equal(model(frames, teacher_hidden=teacher, flow_scale=0.0).predictions, plain)
    assert not torch.allclose(model(frames, teacher_hidden=teacher, flow_scale=1.0).predictions, plain)
