"""Rectified-flow objective: σ sampling, noising, masks, modes."""
from __future__ import annotations

import pytest
import torch

from trainer_core import objective as ob


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_shift_grows_with_tokens_and_is_capped():
    assert ob.shift_for_tokens(1024) == pytest.approx(0.95)
    assert ob.shift_for_tokens(4096) == pytest.approx(2.05)
    assert ob.shift_for_tokens(2048) > ob.shift_for_tokens(1024)
    assert ob.shift_for_tokens(100000) == pytest.approx(2.05)


def test_sigmas_in_range_shifted_up_with_tokens_and_repeatable():
    small = ob.sample_sigmas(20000, 256, g(1))
    big = ob.sample_sigmas(20000, 16000, g(1))
    for s in (small, big):
        assert s.min() >= 0 and s.max() <= 1
    assert big.mean() > small.mean() + 0.05  # more tokens -> noisier σ on average
    assert torch.equal(ob.sample_sigmas(8, 1000, g(3)), ob.sample_sigmas(8, 1000, g(3)))
    assert not torch.equal(ob.sample_sigmas(8, 1000, g(3)), ob.sample_sigmas(8, 1000, g(4)))
    u = ob.sample_sigmas(20000, 1000, g(2), kind="uniform")
    assert abs(u.mean().item() - 0.5) < 0.02
    with pytest.raises(ValueError):
        ob.sample_sigmas(2, 10, g(), kind="nope")


def test_noise_generated_modality_follows_rectified_flow():
    x0 = torch.randn(2, 12, 4, generator=g(5))
    gen = g(6)
    n = ob.noise_modality(x0, ob.GENERATED, gen)
    # recover ε from the target and check x_t
    eps = n.target + x0
    s = n.sigma[..., None]
    assert torch.allclose(n.x_t, (1 - s) * x0 + s * eps, atol=1e-6)
    assert n.loss_mask.all()
    assert torch.allclose(n.sigma, n.sample_sigma[:, None].expand(2, 12))


def test_condition_tokens_are_clean_zero_sigma_and_excluded():
    x0 = torch.randn(3, 2 * 6, 4, generator=g(0))
    cond = ob.first_frame_mask(3, 2, 2, 3, prob=1.0, generator=g(1))
    assert cond[:, :6].all() and not cond[:, 6:].any()
    n = ob.noise_modality(x0, ob.GENERATED, g(2), cond_tokens=cond)
    assert torch.equal(n.x_t[:, :6], x0[:, :6])
    assert (n.sigma[:, :6] == 0).all() and (n.sigma[:, 6:] > 0).all()
    assert not n.loss_mask[:, :6].any() and n.loss_mask[:, 6:].all()
    # the loss ignores whatever is predicted on conditioning tokens
    pred = n.target.clone()
    pred[:, :6] += 100.0
    assert torch.allclose(ob.masked_mse(pred, n.target, n.loss_mask), torch.zeros(3), atol=1e-10)


def test_first_frame_probability_is_per_sample():
    m = ob.first_frame_mask(4000, 3, 1, 1, prob=0.3, generator=g(9))
    frac = m[:, 0].float().mean().item()
    assert 0.27 < frac < 0.33
    assert ob.first_frame_mask(4, 3, 1, 1, prob=0.0, generator=g(9)) is None


def test_masked_mse_normalised_by_masked_fraction():
    pred = torch.zeros(1, 4, 2)
    tgt = torch.ones(1, 4, 2)
    mask = torch.tensor([[True, True, False, False]])
    assert ob.masked_mse(pred, tgt, mask).item() == pytest.approx(1.0)
    tgt[:, 2:] = 5.0  # masked-out tokens do not count
    assert ob.masked_mse(pred, tgt, mask).item() == pytest.approx(1.0)


def test_condition_role_and_combined_loss():
    x0 = torch.randn(2, 5, 3)
    n = ob.noise_modality(x0, ob.CONDITION, g())
    assert torch.equal(n.x_t, x0) and n.target is None and (n.sigma == 0).all()
    v, a = torch.tensor([1.0, 3.0]), torch.tensor([4.0, 4.0])
    assert ob.combine_losses(v, a, audio_weight=0.25).item() == pytest.approx(2.0 + 1.0)
    assert ob.combine_losses(None, a).item() == pytest.approx(4.0)
    with pytest.raises(ValueError):
        ob.combine_losses(None, None)


def test_modes():
    assert ob.get_mode("video_to_audio").video == ob.CONDITION
    assert ob.get_mode("audio_to_video").audio == ob.CONDITION
    assert ob.get_mode("image_to_video", first_frame_prob=0.9).first_frame_prob == 0.9
    assert ob.get_mode("image_to_video", audio=False).audio == ob.ABSENT
    assert not ob.get_mode("audio_only").needs_video
    with pytest.raises(ValueError, match="choose one of"):
        ob.get_mode("t2v")
