"""The DDPM schedule against the closed-form table of docs/method.md §4.1, and the reverse step with fake models."""

import pytest
import torch

from restorex_core.scheduler import DDPMScheduler

# docs/method.md §4.1 (DiffIR: T = 4, sqrt-linear betas 0.1 -> 0.99)
TABLE = {
    "betas": [0.1000, 0.2943, 0.5910, 0.9900],
    "alphas_cumprod": [0.9, 0.63514, 0.25980, 0.00260],
}
POSTERIOR = {  # (coef1, coef2, variance) of eqs. 4-5 with all T steps
    0: (1.0000, 0.0000, 0.0), 1: (0.7652, 0.2302, 0.0807), 2: (0.6363, 0.3153, 0.2913), 3: (0.5059, 0.0742, 0.7347),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_tables_match_method_md(name):
    got = getattr(DDPMScheduler(), name)
    assert torch.allclose(got, torch.tensor(TABLE[name], dtype=torch.float64), atol=6e-5), got


def test_posterior_coefficients_match_method_md():
    s = DDPMScheduler()
    for t, expected in POSTERIOR.items():
        assert s.coefficients(t) == pytest.approx(expected, abs=6e-5), t


def test_add_noise_takes_one_timestep_per_sample():
    s = DDPMScheduler()
    x0, noise = torch.randn(4, 2, 6), torch.randn(4, 2, 6)
    t = torch.tensor([3, 0, 2, 1])
    batched = s.add_noise(x0, noise, t)
    for b in range(4):
        ab = float(s.alphas_cumprod[int(t[b])])
        assert torch.allclose(batched[b], ab**0.5 * x0[b] + (1 - ab) ** 0.5 * noise[b], atol=1e-6)
    assert torch.equal(s.add_noise(x0, noise, 2), s.add_noise(x0, noise, torch.full((4,), 2)))
    with pytest.raises(ValueError, match="one per sample"):
        s.add_noise(x0, noise, torch.tensor([1, 2]))


def test_scheduler_from_ffedm_config_and_objective_names():
    from restorex_core.arch.prior_diffusion import FFEDMConfig

    for former in ("x0", "eps"):  # the names before v0.2 are refused, with the two accepted ones
        with pytest.raises(ValueError, match="'sample'.*'epsilon'"):
            FFEDMConfig(objective=former)
    s = DDPMScheduler.from_config(FFEDMConfig(objective="epsilon", timesteps=6))
    assert (s.prediction_type, s.stochastic, s.num_train_timesteps) == ("epsilon", True, 6)
    with pytest.raises(ValueError, match="'sample'.*'epsilon'"):
        FFEDMConfig(objective="v_prediction")


def test_sqrt_alphas_match_method_md():
    s = DDPMScheduler()
    f64 = torch.float64
    assert torch.allclose(s.alphas_cumprod.sqrt(), torch.tensor([0.9487, 0.7970, 0.5097, 0.0510], dtype=f64), atol=1e-4)
    assert torch.allclose((1 - s.alphas_cumprod).sqrt(), torch.tensor([0.3162, 0.6040, 0.8603, 0.9987], dtype=f64),
                          atol=1e-4)


def test_full_chain_with_fake_x0_model_is_closed_form():
    """With x0_hat = a constant c, the chain ends exactly at c (coef1[0] = 1, coef2[0] = 0)."""
    s = DDPMScheduler()
    c = torch.randn(3, 2, 10)
    x = torch.randn(3, 2, 10)
    trace = []
    for t in s.timesteps.tolist():
        out = s.step(c, t, x)
        coef1, coef2, _ = s.coefficients(t)
        expected = coef1 * c + coef2 * x
        assert torch.allclose(out.prev_sample, expected.float(), atol=1e-6)
        x = out.prev_sample
        trace.append(x)
    assert torch.allclose(trace[-1], c, atol=1e-6)
    assert s.timesteps.tolist() == [3, 2, 1, 0]


def test_fake_model_sample_times_t_regression():
    """diffusers-style: model(x, t) = x * t / (t + 1), deterministic, full-loop numeric value."""
    s = DDPMScheduler()
    x = torch.linspace(-1, 1, 8, dtype=torch.float64)
    for t in s.timesteps.tolist():
        x = s.step(x * t / (t + 1), t, x).prev_sample
    # at t = 0 the model outputs 0 and coef1 = 1, so the chain must end at exactly 0
    assert torch.equal(x, torch.zeros_like(x))


def test_eps_prediction_inverts_add_noise():
    s = DDPMScheduler(prediction_type="epsilon")
    x0, eps = torch.randn(4, 6), torch.randn(4, 6)
    for t in range(4):
        xt = s.add_noise(x0, eps, t)
        out = s.step(eps, t, xt)
        assert torch.allclose(out.pred_original_sample, x0, atol=1e-3 if t == 3 else 1e-5)


def test_respaced_steps_end_at_t0_and_keep_coefficients_consistent():
    s = DDPMScheduler()
    s.set_timesteps(2)
    assert s.timesteps.tolist() == [3, 0]
    c1, c2, _ = s.coefficients(3)
    ab3, ab0 = s.alphas_cumprod[3].item(), s.alphas_cumprod[0].item()
    assert c1 == pytest.approx(ab0**0.5 * (1 - ab3 / ab0) / (1 - ab3))
    assert c2 == pytest.approx((ab3 / ab0) ** 0.5 * (1 - ab0) / (1 - ab3))
    with pytest.raises(ValueError, match="steps must be in 1..4"):
        s.set_timesteps(5)


def test_stochastic_sampling_is_seeded():
    s = DDPMScheduler(prediction_type="epsilon", stochastic=True)
    x = torch.randn(2, 5)
    a = s.step(torch.zeros(2, 5), 2, x, generator=torch.Generator().manual_seed(1)).prev_sample
    b = s.step(torch.zeros(2, 5), 2, x, generator=torch.Generator().manual_seed(1)).prev_sample
    c = s.step(torch.zeros(2, 5), 2, x, generator=torch.Generator().manual_seed(2)).prev_sample
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the last step adds no noise
    assert torch.equal(s.step(torch.zeros(2, 5), 0, x).prev_sample, s.step(torch.zeros(2, 5), 0, x).prev_sample)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        DDPMScheduler(prediction_type="v_prediction")
    with pytest.raises(ValueError, match="beta_schedule"):
        DDPMScheduler(beta_schedule="cosine")


def test_step_is_differentiable():
    s = DDPMScheduler()
    out = torch.randn(2, 4, requires_grad=True)
    x = torch.randn(2, 4, requires_grad=True)
    s.step(out, 2, x).prev_sample.sum().backward()
    assert out.grad is not None and x.grad is not None
