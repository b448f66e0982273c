"""The substrate's quantizer, STE, correctors, placement, accumulator and recovery metrics."""
import math

import pytest
import torch

from workloads.substrate.correction import (Corrector, FloatTap, Point, QuantTap, build_correctors,
                                            calibrate_correctors, corrector_keys, set_corrector_quant)
from workloads.substrate.quant import Calibrator, absmax_scale, fake_quant, int_range
from workloads.substrate.rows import is_reliable, recovery_pct, summary

torch.set_num_threads(1)


@pytest.mark.parametrize("bits,lo,hi", [(2, -2, 1), (4, -8, 7), (8, -128, 127)])
def test_int_ranges(bits, lo, hi):
    assert int_range(bits) == (lo, hi)
    x = torch.linspace(-1000, 1000, 4001)
    levels = torch.unique(fake_quant(x, 1.0, bits))
    assert levels.min().item() == lo and levels.max().item() == hi
    assert len(levels) == 2 ** bits


def test_two_bit_grid_clips_positive_values_at_one_scale():
    s = absmax_scale(3.0, 2)  # qmax = 1
    assert s == 3.0
    x = torch.tensor([-3.0, -2.9, -1.6, 0.2, 1.4, 1.6, 3.0])
    q = fake_quant(x, s, 2)
    assert set(q.tolist()) <= {-6.0, -3.0, 0.0, 3.0}
    assert q[-1].item() == 3.0 and q[0].item() == -3.0 and q[3].item() == 0.0


def test_absmax_calibration_and_zero_tensor():
    cal = Calibrator()
    cal.observe("a", torch.tensor([[0.5, -7.0], [3.0, 1.0]]))
    cal.observe("a", torch.tensor([2.0]))  # running max over several batches
    cal.observe("z", torch.zeros(3))
    sc = cal.scales(4)
    assert sc["a"] == pytest.approx(1.0)  # 7 / 7
    assert sc["z"] == 1.0
    assert cal.scales(8)["a"] == pytest.approx(7.0 / 127)


def test_round_half_to_even():
    q = fake_quant(torch.tensor([0.5, 1.5, 2.5, -0.5]), 1.0, 4)
    assert q.tolist() == [0.0, 2.0, 2.0, -0.0]


def test_ste_gradient_is_one_inside_and_zero_on_saturation():
    x = torch.tensor([-20.0, -8.4, -7.4, -3.3, 0.2, 6.4, 6.6, 30.0], requires_grad=True)
    fake_quant(x, 1.0, 4).sum().backward()
    # Round passes the gradient straight through; torch.clamp after it gives zero gradient to every
    # element whose rounded value reaches qmin/qmax (-8.4 -> -8 and 6.6 -> 7 count as saturated).
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_quant_error_is_bounded_by_half_a_step_inside_range():
    torch.manual_seed(0)
    x = torch.randn(1000) * 2
    s = absmax_scale(float(x.abs().max()), 4)
    err = x - fake_quant(x, s, 4)
    inside = x.abs() <= 7 * s
    assert err[inside].abs().max() <= s / 2 + 1e-6


@pytest.mark.parametrize("depth", [4, 6, 8])
@pytest.mark.parametrize("every", [1, 2, 4, 999])
def test_mlp_placement_counts(depth, every):
    pts = [Point(str(i), "hidden", 16) for i in range(depth)]
    keys = corrector_keys(pts, every)
    assert len(keys) == depth // every
    assert keys == [str(j) for j in range(depth) if (j + 1) % every == 0]


def test_placement_runs_per_group_and_skips_non_correctable():
    pts = [Point("enc0", "enc", 8), Point("enc1", "enc", 4), Point("latent", "latent", 2, False),
           Point("dec0", "dec", 4), Point("dec1", "dec", 8)]
    assert corrector_keys(pts, 1) == ["enc0", "enc1", "dec0", "dec1"]
    assert corrector_keys(pts, 2) == ["enc1", "dec1"]
    assert corrector_keys(pts, 4) == []


def _identity_correctors(keys, dim):
    """Correctors that output exactly the accumulated error they receive."""
    mods = torch.nn.ModuleDict({k: Corrector(dim, 0) for k in keys})
    with torch.no_grad():
        for m in mods.values():
            m.fc.weight.copy_(torch.eye(dim))
            m.fc.bias.zero_()
    return mods


def test_accumulated_error_and_reset():
    torch.manual_seed(1)
    xs = [torch.randn(5, 3) for _ in range(4)]
    scales = {str(i): 0.7 for i in range(4)}
    errs = [x - fake_quant(x, 0.7, 2) for x in xs]
    # every=2: correctors at points 1 and 3, each receiving e_{j-1} + e_j (reset after point 1).
    tap = QuantTap(2, scales, _identity_correctors(["1", "3"], 3))
    outs = [tap(str(i), "g", x) for i, x in enumerate(xs)]
    assert torch.allclose(outs[0], fake_quant(xs[0], 0.7, 2))
    assert torch.allclose(outs[1], fake_quant(xs[1], 0.7, 2) + errs[0] + errs[1])
    assert torch.allclose(outs[3], fake_quant(xs[3], 0.7, 2) + errs[2] + errs[3])
    # every=1 with identity correctors restores the input exactly.
    tap = QuantTap(2, scales, _identity_correctors(list(scales), 3))
    assert all(torch.allclose(tap(str(i), "g", x), x, atol=1e-6) for i, x in enumerate(xs))


def test_accumulator_resets_on_group_or_dimension_change():
    x0, x1, x2 = torch.randn(2, 4), torch.randn(2, 3), torch.randn(2, 3)
    sc = {"a": 0.3, "b": 0.3, "c": 0.3}
    tap = QuantTap(2, sc, _identity_correctors(["b", "c"], 3))
    tap("a", "enc", x0)  # 4-dim error; next point has 3 dims -> reset
    out_b = tap("b", "enc", x1)
    assert torch.allclose(out_b, x1, atol=1e-6)
    tap = QuantTap(2, sc, _identity_correctors(["c"], 3))
    tap("b", "enc", x1)  # same dim, other group -> reset
    out_c = tap("c", "dec", x2)
    assert torch.allclose(out_c, x2, atol=1e-6)


def test_corrector_forms_and_init():
    assert sum(p.numel() for p in Corrector(8, 0).parameters()) == 8 * 8 + 8
    assert sum(p.numel() for p in Corrector(8, 32).parameters()) == 8 * 32 + 32 + 32 * 8 + 8
    e = torch.randn(4, 8)
    assert torch.count_nonzero(Corrector(8, 32, "zero")(e)) == 0
    assert torch.count_nonzero(Corrector(8, 0, "zero")(e)) == 0
    assert torch.count_nonzero(Corrector(8, 0, "default")(e)) > 0
    with pytest.raises(ValueError):
        Corrector(8, 0, "ones")


def test_build_correctors_leaves_global_rng_untouched_and_is_seeded():
    pts = [Point(str(i), "h", 8) for i in range(4)]
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    a = build_correctors(pts, 2, 0, "default", seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = build_correctors(pts, 2, 0, "default", seed=5)
    assert list(a.keys()) == ["1", "3"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_corrector_qat_scales_and_legacy_h0_switch():
    pts = [Point("0", "h", 6), Point("1", "h", 6)]
    mods = build_correctors(pts, 1, 0, "default", seed=0)
    mods.update({"m": Corrector(6, 4)})
    x = torch.randn(10, 6)
    calibrate_correctors(mods, 4, lambda: [m(x) for m in mods.values()])
    assert mods["m"].scale_hidden is not None and mods["0"].scale_hidden is None
    for m in mods.values():
        with torch.no_grad():
            assert m.scale_out == pytest.approx(float(m(x).abs().max()) / 7, rel=1e-5)
    set_corrector_quant(mods, True)
    assert all(m.quantize for m in mods.values())
    assert len(torch.unique(mods["0"](x))) <= 16
    set_corrector_quant(mods, True, legacy_h0_unquantized=True)
    assert not mods["0"].quantize and mods["m"].quantize


def test_float_tap_records_and_calibrates():
    cal = Calibrator()
    tap = FloatTap(cal, record=True)
    x = torch.tensor([1.0, -4.0])
    assert tap("k", "g", x) is x
    assert cal.absmax["k"] == 4.0 and tap.acts["k"] is x


def test_recovery_lower_is_better_both_guards():
    assert recovery_pct(2.0, 3.0, 2.5, higher_is_better=False) == pytest.approx(50.0)
    assert recovery_pct(2.0, 3.0, 1.9, higher_is_better=False) == pytest.approx(110.0)
    # Negative gap (q better than f): hydra reports 0, lambda flips the sign.
    assert recovery_pct(3.0, 2.0, 2.5, higher_is_better=False, guard="hydra") == 0.0
    assert recovery_pct(3.0, 2.0, 2.5, higher_is_better=False, guard="lambda") == pytest.approx(50.0)
    assert recovery_pct(3.0, 2.0, 1.5, higher_is_better=False, guard="lambda") == pytest.approx(-50.0)
    assert recovery_pct(2.0, 2.0, 1.0, higher_is_better=False, guard="lambda") == 0.0
    assert recovery_pct(2.0, 2.0, 1.0, higher_is_better=False, guard="hydra") == 0.0


def test_recovery_higher_is_better_both_guards():
    assert recovery_pct(0.9, 0.5, 0.8, higher_is_better=True) == pytest.approx(75.0)
    assert recovery_pct(0.9, 0.5, 0.4, higher_is_better=True) == pytest.approx(-25.0)
    assert recovery_pct(0.5, 0.6, 0.7, higher_is_better=True, guard="hydra") == 0.0
    assert recovery_pct(0.5, 0.6, 0.7, higher_is_better=True, guard="lambda") == pytest.approx(-100.0)
    with pytest.raises(ValueError):
        recovery_pct(1, 0, 1, higher_is_better=True, guard="other")


def test_reliability_flag_and_summary_columns():
    assert not is_reliable(2.4903, 2.4904, higher_is_better=False)  # 8-bit: gap 1e-4 nats
    assert is_reliable(2.4903, 2.5151, higher_is_better=False)
    row = summary(2.0, 3.0, 2.5, higher_is_better=False, guard="hydra")
    assert row == {"f": 2.0, "q": 3.0, "c": 2.5, "gap": 1.0, "gap_abs": 1.0,
                   "recovery_pct": 50.0, "recovery_reliable": True}
    assert math.isclose(summary(0.9, 0.5, 0.7, higher_is_better=True, guard="hydra")["gap"], 0.4)
