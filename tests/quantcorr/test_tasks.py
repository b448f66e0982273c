"""Transformer and autoencoder tasks: placement, the legacy residual switch, short runs."""
import math

import pytest
import torch

from orchestrator.study.contract import LocalContext
from workloads.quantcorr import Autoencoder, Transformer
from workloads.quantcorr.autoencoder import MLPAutoencoder
from workloads.quantcorr.classification import MLPClassifier
from workloads.substrate.char_transformer import CharTransformer
from workloads.substrate.correction import FloatTap, build_correctors, corrector_keys
from workloads.substrate.lambda_schedule import train_correctors_lambda
from workloads.substrate.quant import Calibrator

torch.set_num_threads(1)
PANGRAM = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("OVERNIGHT_OFFLINE", "1")


def ctx_with_text(tmp_path, text=PANGRAM * 40):
    (tmp_path / "input.txt").write_text(text)
    return LocalContext(data_root=tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("n_layers,every,expected", [(2, 1, 4), (2, 2, 2), (2, 4, 1), (4, 1, 8), (4, 2, 4),
                                                     (4, 4, 2), (6, 1, 12), (6, 2, 6), (6, 4, 3), (2, 999, 0)])
def test_transformer_points_and_placement(n_layers, every, expected):
    m = CharTransformer(10, 16, 2, n_layers, 32)
    keys = [p.key for p in m.points]
    assert keys == [f"{b}_{s}" for b in range(n_layers) for s in ("attn", "ffn")]
    seen = []
    m(torch.zeros(1, 5, dtype=torch.long), lambda k, g, x: seen.append(k) or x)
    assert seen == keys
    assert len(corrector_keys(m.points, every)) == expected


@pytest.mark.parametrize("hidden,every,expected", [([256, 128], 1, ["enc0", "enc1", "dec0", "dec1"]),
                                                   ([256, 128], 2, ["enc1", "dec1"]), ([256, 128], 4, []),
                                                   ([512, 256, 128], 1, ["enc0", "enc1", "enc2", "dec0", "dec1", "dec2"]),
                                                   ([512, 256, 128], 2, ["enc1", "dec1"]), ([512, 256, 128], 4, []),
                                                   ([128, 64], 2, ["enc1", "dec1"])])
def test_autoencoder_points_and_placement(hidden, every, expected):
    m = MLPAutoencoder(20, hidden, 8)
    seen = []
    m(torch.rand(2, 20), lambda k, g, x: seen.append((k, x.shape[1])) or x)
    n = len(hidden)
    assert [k for k, _ in seen] == [f"enc{i}" for i in range(n)] + ["latent"] + [f"dec{i}" for i in range(n)]
    assert [d for _, d in seen] == hidden + [8] + hidden[::-1]
    assert corrector_keys(m.points, every) == expected


class _LegacyIdentityTap:
    """Records nothing, changes nothing, but asks the blocks for the legacy residual."""
    legacy_residual = True

    def __call__(self, key, group, x):
        return x


def test_legacy_residual_formula():
    torch.manual_seed(0)
    m = CharTransformer(10, 16, 2, 1, 32).eval()
    idx = torch.randint(0, 10, (2, 6))
    blk = m.blocks[0]
    with torch.no_grad():
        h = m.tok(idx) + m.pos(torch.arange(6))
        h = blk.ln1(h)
        h = h + blk.attn(h)  # h <- LN(h); h <- h + f(h)
        h = blk.ln2(h)
        h = h + blk.ffn(h)
        expected = m.head(m.ln_f(h))
        assert torch.allclose(m(idx, _LegacyIdentityTap()), expected, atol=1e-6)
        assert not torch.allclose(m(idx), expected, atol=1e-3)


def test_legacy_switch_changes_only_the_quantized_only_path(tmp_path):
    cfg = dict(protocol="grid", seed=3, bits=4, d_model=32, n_heads=4, n_layers=2,
               d_ff=64, correct_every=1, correction_hidden=0, data="real", seq_len=32, batch_size=8,
               float_epochs=1, correction_epochs=1, max_chars=2000)
    ok = Transformer().run(Transformer.Params.model_validate({**cfg, "legacy_prenorm_residual_bug": False}), ctx_with_text(tmp_path))
    bug = Transformer().run(Transformer.Params.model_validate({**cfg, "legacy_prenorm_residual_bug": True}), ctx_with_text(tmp_path))
    assert ok["data_source"] == "tinyshakespeare"  # input.txt in the data root, the real format
    assert ok["loss_float"] == bug["loss_float"]
    assert ok["loss_corrected"] == bug["loss_corrected"]
    assert ok["loss_quant"] != bug["loss_quant"]
    assert ok["loss_quant"] == ok["loss_quant_correct_residual"] == bug["loss_quant_correct_residual"]
    assert bug["loss_quant"] == bug["loss_quant_legacy_residual"]


def test_transformer_run_rows(tmp_path):
    cfg = dict(protocol="hydra", seed=0, bits=2, d_model=32, n_heads=4, n_layers=2,
               d_ff=64, correct_every=2, correction_hidden=32, data="real", seq_len=32, batch_size=8,
               float_epochs=2, correction_epochs=1, max_chars=3000)
    ctx = ctx_with_text(tmp_path)
    row = Transformer().run(Transformer.Params.model_validate(cfg), ctx)
    assert not set(row) & set(cfg)
    assert row["num_correction_layers"] == 2 and row["num_quant_points"] == 4
    assert row["ppl_float"] == pytest.approx(math.exp(row["loss_float"]))
    assert row["f"] == row["loss_float"] and row["q"] == row["loss_quant"] and row["c"] == row["loss_corrected"]
    assert row["gap"] == pytest.approx(row["loss_quant"] - row["loss_float"])
    assert row["quant_degradation_pct"] == pytest.approx(100 * row["gap"] / row["loss_float"])
    assert row["loss_quant"] > row["loss_float"]  # 2 bits hurts
    n_chunks = 3000 // 33
    assert row["n_train_sequences"] == int(n_chunks * 0.9) and row["n_test_sequences"] == n_chunks - int(n_chunks * 0.9)
    assert row["vocab_size"] == len(set(PANGRAM))
    assert [h["phase"] for h in ctx.history].count("float") == 2


def test_transformer_stage_cache_is_bit_identical(tmp_path):
    cfg = dict(protocol="grid", seed=1, bits=4, d_model=32, n_heads=4, n_layers=1,
               d_ff=64, correct_every=1, correction_hidden=0, data="real", seq_len=32, batch_size=8,
               float_epochs=1, correction_epochs=1, max_chars=1500)
    a = Transformer().run(Transformer.Params.model_validate({**cfg, "stage_cache": True}), ctx_with_text(tmp_path))
    b = Transformer().run(Transformer.Params.model_validate({**cfg, "stage_cache": False}), ctx_with_text(tmp_path))
    for k in ("loss_float", "loss_quant", "loss_corrected"):
        assert a[k] == b[k], k


def test_transformer_lambda_protocol_runs(tmp_path):
    cfg = dict(protocol="lambda", seed=0, bits=4, d_model=32, n_heads=4, n_layers=2,
               d_ff=64, correct_every=2, correction_hidden=0, data="real", seq_len=32, batch_size=8,
               float_epochs=1, correction_sequences=8, correction_steps=8, lam=0.5, max_chars=1500,
               correction_init="zero", guard="lambda")
    row = Transformer().run(Transformer.Params.model_validate(cfg), ctx_with_text(tmp_path))
    assert row["num_correction_layers"] == 2 and math.isfinite(row["recovery_pct"])


def test_autoencoder_standin_run(tmp_path):
    cfg = dict(seed=0, hidden=[64, 32], latent=8, bits=2, correct_every=1,
               correction_hidden=0, data="auto", float_epochs=20, correction_epochs=5, batch_size=128)
    row = Autoencoder().run(Autoencoder.Params.model_validate(cfg), LocalContext(data_root=tmp_path, cache_dir=tmp_path / "c"))
    assert row["data_source"] == "standin:sklearn_digits"
    assert row["image_dim"] == 64 and row["n_test_images"] == 256
    assert row["num_correction_layers"] == 4
    assert row["mse_quant"] > row["mse_float"]
    assert row["mse_corrected"] < row["mse_quant"]  # distillation on the float output helps at 2 bits
    assert row["recovery_pct"] == pytest.approx(100 * (row["q"] - row["c"]) / (row["q"] - row["f"]))


def test_autoencoder_skip_rule_and_lambda(tmp_path):
    ctx = LocalContext(data_root=tmp_path, cache_dir=tmp_path / "c")
    base = dict(seed=0, hidden=[32, 16], latent=8, bits=4, correction_hidden=0,
                data="standin", float_epochs=3, max_train_images=256)
    skip = Autoencoder().run(Autoencoder.Params.model_validate({**base, "correct_every": 4, "correction_epochs": 1}), ctx)
    assert skip["num_correction_layers"] == 0 and skip["recovery_pct"] == 0.0 and skip["c"] == skip["q"]
    lam = Autoencoder().run(Autoencoder.Params.model_validate({**base, "protocol": "lambda", "correct_every": 1, "lam": 1.0,
                           "correction_steps": 8, "correction_images": 128, "guard": "lambda"}), ctx)
    assert lam["num_correction_layers"] == 4 and math.isfinite(lam["recovery_pct"])


def test_lambda_training_leaves_correctors_quantized_and_legacy_h0_float():
    torch.manual_seed(0)
    net = MLPClassifier(5, 12, 4).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    X = torch.randn(64, 5)
    cal = Calibrator()
    net(X, FloatTap(cal))
    scales = cal.scales(4)
    ctx = LocalContext()
    for legacy in (False, True):
        cs = build_correctors(net.points, 2, 0, "zero", seed=0)  # linear correctors at points 1 and 3
        train_correctors_lambda(net, cs, X, 4, scales, steps=60, lr=1e-3, lam=0.5,
                                legacy_h0_unquantized=legacy, ctx=ctx)
        assert all(c.scale_out is not None for c in cs.values())
        assert all(c.quantize is (not legacy) for c in cs.values())
        with torch.no_grad():
            out = cs["1"](torch.randn(7, 12))
        levels = len(torch.unique(out))
        assert (levels <= 16) if not legacy else (levels > 16)


class _KilledInCorrection(LocalContext):
    """A worker killed while reporting the second correction epoch (before its checkpoint)."""

    def report(self, step, **metrics):
        super().report(step, **metrics)
        if metrics.get("phase") == "correction" and step == 2 and not getattr(self, "killed", False):
            self.killed = True
            raise KeyboardInterrupt


def test_transformer_trial_killed_in_the_correction_phase_resumes_to_the_same_row(tmp_path):
    cfg = dict(protocol="hydra", seed=2, bits=2, d_model=32, n_heads=4, n_layers=1, d_ff=64, correct_every=1,
               data="real", seq_len=32, batch_size=8, float_epochs=2, correction_epochs=3, max_chars=2000,
               stage_cache=False)
    whole = Transformer().run(Transformer.Params.model_validate(cfg), ctx_with_text(tmp_path))
    ctx = _KilledInCorrection(data_root=tmp_path, cache_dir=tmp_path / "cache")  # input.txt is there
    with pytest.raises(KeyboardInterrupt):
        Transformer().run(Transformer.Params.model_validate(cfg), ctx)
    torch.manual_seed(99)  # a restarted worker's RNG is anything
    resumed = Transformer().run(Transformer.Params.model_validate(cfg), ctx)
    steps = [(h["phase"], h["step"]) for h in ctx.history]
    assert steps == [("float", 1), ("float", 2), ("correction", 1), ("correction", 2), ("correction", 2), ("correction", 3)]
    for k in ("loss_float", "loss_quant", "loss_corrected", "correction_final_loss"):
        assert resumed[k] == whole[k], k
