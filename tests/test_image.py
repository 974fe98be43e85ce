"""The image task (issue 31, docs/image.md): the denoising step's Gaussian log-probability against a hand computation,
the trajectory losses against the language losses and hand values, per-prompt statistics, the rewards, LoRA-only
training, and a run end to end on a very small stand-in. Every test takes seconds."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from algorithms.rebel import Rebel
from algorithms.trajectory import TrajectoryPPO, TrajectoryRebel, make
from harness.core.diffusion import PerPromptStats
from harness.core.batch import Batch, PolicyOutput
from harness.core.diffusion import (DiffusionPolicy, boundary_scalings, gaussian_logp, lcm_timesteps,
                                    sample, scaled_linear_alphas_cumprod, trajectory_logp)
from harness.core.errors import UserError
from harness.tasks.image_rewards import brightness, colourfulness, compressibility


class AffineUNet(nn.Module):
    """out = w * x + b elementwise: a denoiser whose output a hand computation can follow."""

    def __init__(self, w: float, b: float):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.tensor(w)), nn.Parameter(torch.tensor(b))

    def forward(self, x, t, encoder_hidden_states=None):
        return type("Out", (), {"sample": self.w * x + self.b})()


def affine_policy(prediction="epsilon", reduce="mean"):
    return DiffusionPolicy(AffineUNet(0.5, 0.1), [999, 499, 139], scaled_linear_alphas_cumprod(),
                           encode=lambda prompts: torch.zeros(len(prompts), 1, 2), decode=lambda x: (x + 1) / 2,
                           latent_shape=(1, 1, 2), logp_reduce=reduce, prediction=prediction)


def hand_step_logp(x: list[float], x_next: list[float], t: int, t_next: int, reduce: str) -> float:
    """The step's density written out with floats: betas linear in sqrt space, alphas_cumprod their product."""
    betas = [(0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) * i / 999) ** 2 for i in range(1000)]
    prod, alphas = 1.0, []
    for beta in betas:
        prod *= 1 - beta
        alphas.append(prod)
    a_t, a_n = alphas[t], alphas[t_next]
    s = 10.0 * t
    c_skip, c_out = 0.25 / (s * s + 0.25), s / math.sqrt(s * s + 0.25)
    terms = []
    for xi, yi in zip(x, x_next):
        eps = 0.5 * xi + 0.1
        x0 = (xi - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        mean = math.sqrt(a_n) * (c_out * x0 + c_skip * xi)
        var = 1 - a_n
        terms.append(-(yi - mean) ** 2 / (2 * var) - 0.5 * math.log(var) - 0.5 * math.log(2 * math.pi))
    return sum(terms) / len(terms) if reduce == "mean" else sum(terms)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_step_logp_is_the_gaussian_density_by_hand(reduce):
    policy = affine_policy(reduce=reduce)
    x = torch.tensor([[[[0.3, -1.2]]]], dtype=torch.float64)
    y = torch.tensor([[[[0.1, 0.4]]]], dtype=torch.float64)
    policy.unet.double()
    cond = torch.zeros(1, 1, 2, dtype=torch.float64)
    for i, (t, t_next) in enumerate([(999, 499), (499, 139), (139, 139)]):  # the last step noised at t itself
        got = policy.step_logp(x, y, i, cond).item()
        assert got == pytest.approx(hand_step_logp([0.3, -1.2], [0.1, 0.4], t, t_next, reduce), rel=1e-7)


def test_gaussian_logp_and_schedule_by_hand():
    # N(1; 0, 2^2) per dimension: -1/8 - log 2 - log(2 pi)/2; mean and sum over two equal dimensions
    one = -1 / 8 - math.log(2) - 0.5 * math.log(2 * math.pi)
    x, m = torch.ones(1, 2), torch.zeros(1, 2)
    assert gaussian_logp(x, m, 2.0, "mean").item() == pytest.approx(one)
    assert gaussian_logp(x, m, 2.0, "sum").item() == pytest.approx(2 * one)
    # RLCM's schedule: training timesteps 19, 39, ..., 999; every 6th from the end, 8 of them
    assert lcm_timesteps(8) == [999, 879, 759, 639, 519, 399, 279, 159]
    assert lcm_timesteps(4) == [999, 759, 519, 279]
    c_skip, c_out = boundary_scalings(2)  # scaled t = 20: 0.25 / 400.25 and 20 / sqrt(400.25)
    assert (c_skip, c_out) == (pytest.approx(0.25 / 400.25), pytest.approx(20 / math.sqrt(400.25)))


def test_sampled_logps_are_the_recomputed_ones_and_the_chain_is_recorded():
    policy = affine_policy(prediction="sample")
    traj = sample(policy, ["cat", "dog", "cat"], torch.Generator().manual_seed(0))
    assert traj.latents.shape == (3, 4, 1, 1, 2) and traj.logp.shape == (3, 3)
    with torch.no_grad():
        again = trajectory_logp(policy, traj)
    torch.testing.assert_close(again, traj.logp)  # ratio one at the start of an update
    # the image is the last step's denoised prediction (x0 itself for an x0-predicting model), not the noised action
    x_last = traj.latents[:, -2]
    with torch.no_grad():
        denoised = policy.unet(x_last, None).sample * boundary_scalings(139)[1] + boundary_scalings(139)[0] * x_last
    torch.testing.assert_close(traj.images, ((denoised + 1) / 2).clamp(0, 1))


def test_rebel_trajectory_loss_is_the_language_loss_on_summed_logps():
    g = torch.Generator().manual_seed(1)
    new, old = torch.randn(3, 2, 8, generator=g), torch.randn(3, 2, 8, generator=g)
    reward = torch.randn(3, 2, generator=g)
    mine, _ = TrajectoryRebel(eta=0.7).loss(new, old, reward, None)
    # the language REBEL on a batch whose "tokens" are the 8 steps
    batch = Batch(query=torch.zeros(3, 1, dtype=torch.long), response=torch.zeros(3, 2, 8, dtype=torch.long),
                  mask=torch.ones(3, 2, 8, dtype=torch.bool), logp_old=old, logp_ref=old, reward=reward)
    language, _ = Rebel(eta=0.7).loss(batch, PolicyOutput(new))
    torch.testing.assert_close(mine, language)
    # one pair by hand: ((1.5 - 0.5) - (0.25 - 1)) - 2 * (3 - 1) = 1.75 - 4 = -2.25, squared
    hand, _ = TrajectoryRebel(eta=2.0).loss(torch.tensor([[[1.0, 0.5], [0.0, 0.25]]]),
                                            torch.tensor([[[0.25, 0.25], [0.5, 0.5]]]), torch.tensor([[3.0, 1.0]]),
                                            None)
    assert hand.item() == pytest.approx(2.25**2)
    # target advantage: the standardised rewards replace the rewards
    adv = TrajectoryRebel(target="advantage").loss(new, old, reward, 2 * reward)[0]
    torch.testing.assert_close(adv, Rebel(eta=1.0).loss(
        Batch(query=batch.query, response=batch.response, mask=batch.mask, logp_old=old, logp_ref=old,
              reward=2 * reward), PolicyOutput(new))[0])


def test_clipped_objective_at_ratio_one_and_beyond_the_clip():
    algo = TrajectoryPPO(clip=0.1, adv_clip=2.0)
    old = torch.tensor([[[0.3, -0.2]], [[1.0, 0.0]]])  # [P=2, K=1, T=2]
    adv = torch.tensor([[1.5], [-4.0]])  # the second clipped to -2
    new = old.clone().requires_grad_(True)
    loss, stats = algo.loss(new, old, torch.zeros(2, 1), adv)
    # ratio one: -mean(A) over 4 (trajectory, step) cells = -(1.5 + 1.5 - 2 - 2) / 4
    assert loss.item() == pytest.approx(0.25) and stats["ppo/clipfrac"] == 0.0
    loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([[[-0.375, -0.375]], [[0.5, 0.5]]]))  # -A rho / 4
    # ratio e^0.5 > 1.1 with A > 0: the clipped branch, constant: -1.5 * 1.1, no gradient
    far = (old + torch.tensor([[[0.5, 0.5]], [[0.0, 0.0]]])).requires_grad_(True)
    loss, stats = algo.loss(far, old, torch.zeros(2, 1), adv)
    assert loss.item() == pytest.approx((-1.5 * 1.1 * 2 + 2 + 2) / 4) and stats["ppo/clipfrac"] == 0.5
    loss.backward()
    assert far.grad[0].abs().sum() == 0


def test_per_prompt_statistics_by_hand():
    stats = PerPromptStats(buffer=3, min_count=2)
    # first batch: "a" has one reward (< min_count): standardised by the whole batch [1, 3, 5] (mean 3, population
    # std sqrt(8/3)); "b" has two: by its own [3, 5] (mean 4, std 1)
    out = stats.update(["a", "b", "b"], torch.tensor([1.0, 3.0, 5.0]))
    sd = math.sqrt(8 / 3)
    assert out.tolist() == pytest.approx([-2 / sd, -1.0, 1.0], rel=1e-5)
    # second: "a" now has [1, 2] (mean 1.5, std 0.5): (2 - 1.5) / 0.5 = 1; "b"'s buffer keeps the last 3: [3, 5, 7]
    out = stats.update(["a", "b"], torch.tensor([2.0, 7.0]))
    assert out.tolist() == pytest.approx([1.0, (7 - 5) / math.sqrt(8 / 3)], rel=1e-5)
    stats.update(["b"], torch.tensor([9.0]))
    assert stats.state()["b"] == [5.0, 7.0, 9.0]


def test_rewards_by_hand():
    grey = torch.full((1, 3, 4, 4), 0.5)
    assert colourfulness(grey).item() == pytest.approx(0.0, abs=1e-7)
    # half pure red, half pure green: rg = +1 / -1 (sd 1, mean 0); yb = 0.5 everywhere (sd 0, mean 0.5)
    img = torch.zeros(1, 3, 2, 2)
    img[0, 0, 0], img[0, 1, 1] = 1.0, 1.0
    assert colourfulness(img).item() == pytest.approx(1.0 + 0.3 * 0.5)
    assert brightness(img).item() == pytest.approx(4 / 12)  # four of the twelve values are 1
    flat, noisy = compressibility(grey), compressibility(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert flat.item() > noisy.item()  # a flat image compresses better


def test_guidance_embedding_is_diffusers_lcm_embedding():
    from diffusers import LatentConsistencyModelPipeline

    from harness.tasks.image import guidance_embedding

    w = torch.tensor([7.0, 2.5])  # RLCM passes guidance_scale - 1
    ours, theirs = guidance_embedding(w, 256), LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, 256)
    torch.testing.assert_close(ours, theirs)


def test_image_presets_resolve_with_the_papers_settings():
    from harness.app.image_config import is_image_preset, preset_names, resolve

    assert {"image-tiny", "image-lcm-dreamshaper"} <= set(preset_names()) and not is_image_preset("tiny")
    rebel, ppo = resolve("image-lcm-dreamshaper", {"algo": "rebel"}), resolve("image-lcm-dreamshaper", {"algo": "ppo"})
    assert (rebel.model.name, rebel.model.lora_r, rebel.model.lora_alpha, rebel.model.steps) == \
        ("SimianLuo/LCM_Dreamshaper_v7", 8, 8, 8)
    assert rebel.train.lr == 3e-4 and make("rebel", rebel.algo_args) == TrajectoryRebel(
        eta=1.0, epochs=1, minibatch=1, target="advantage")
    assert ppo.train.lr == 1e-4 and ppo.train.max_grad_norm == 5.0
    assert make("ppo", ppo.algo_args) == TrajectoryPPO(clip=1e-4, adv_clip=10.0, epochs=2, minibatch=8, stat_buffer=32,
                                                       stat_min_count=16)
    assert rebel.task.reward == "aesthetic" and rebel.task.prompts == "animals"
    with pytest.raises(UserError, match="has no setting"):
        resolve("image-tiny", {"algo": "rebel", "algo_args": {"clip": 0.2}})


def test_paper_preset_dry_run_says_it_needs_a_gpu(capsys):
    from harness.app.image_run import command

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the dry run has no device problem to report")
    assert command("image-lcm-dreamshaper", {"algo": "ppo"}, None, dry_run=True) == 1
    out = capsys.readouterr().out
    assert "PROBLEM    model.device cuda: no CUDA device here" in out
    assert "trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth" in out and "LoRA ~1.6M parameters" in out


def test_trajectory_optimizers_reject_bad_settings():
    with pytest.raises(UserError, match="has no setting"):
        make("rebel", {"clip": 0.1})
    with pytest.raises(UserError, match="the image task trains with"):
        make("dpo")
    with pytest.raises(UserError, match="target"):
        make("rebel", {"target": "logits"})


def tiny_cfg(tmp_path, algo: str, **train):
    from harness.app.image_config import resolve

    return resolve("image-tiny", {"algo": algo, "output_dir": str(tmp_path / "runs"), "seed": 0,
                                  "model": {"cache_dir": str(tmp_path / "cache"), "steps": 3,
                                            "tiny": {"size": 8, "pretrain_steps": 3, "pretrain_batch": 4}},
                                  "train": {"iterations": 2, "prompts_per_iteration": 2, **train},
                                  "eval": {"prompts": 3, "every": 1}})


@pytest.mark.parametrize("algo", ["rebel", "ppo"])
def test_an_update_changes_the_lora_weights_only(tmp_path, algo):
    from harness.app.image_run import load_policy, update
    from harness.core.experience import Budget

    cfg = tiny_cfg(tmp_path, algo)
    policy, params = load_policy(cfg, ["cat", "dog"], log=lambda *a: None)
    named = dict(policy.unet.named_parameters())
    assert params and all("lora_" in n for n, p in named.items() if p.requires_grad)
    before = {n: p.detach().clone() for n, p in named.items()}
    algorithm = make(algo, {"minibatch": 2})
    prompts = ["cat", "dog"] * algorithm.samples_per_prompt
    traj = sample(policy, sorted(prompts), torch.Generator().manual_seed(0))
    reward = torch.tensor([0.0, 1.0, 0.5, 2.0][: len(prompts)])
    budget = Budget()
    update(policy, algorithm, traj, reward, reward - reward.mean(), torch.optim.SGD(params, lr=1.0), params, budget,
           torch.Generator().manual_seed(0), None)
    assert budget.optimizer_steps == algorithm.epochs
    changed = {n for n, p in named.items() if not torch.equal(p.detach(), before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)


def test_image_run_end_to_end_writes_the_run_format(tmp_path):
    from harness.app.image_run import run

    out = run(tiny_cfg(tmp_path, "ppo"), log=lambda *a: None)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 2] and lines[-1]["final"]
    assert lines[0]["rm_queries"] == 2 and lines[1]["rm_queries"] == 4 and lines[1]["optimizer_steps"] == 4
    assert "eval/score" in lines[0] and "ppo/clipfrac" in lines[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["suite"] == "image" and summary["algorithm"] == "ppo" and summary["status"] == "completed"
    assert summary["eval"]["n"] == 3 and summary["budget"]["responses"] == 4
    assert summary["eval"]["score"] == lines[-1]["eval/score"]
    assert (out / "images" / "before.png").is_file() and (out / "images" / "after.png").is_file()
    assert (out / "checkpoints" / "final" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "evals" / "image.json").read_text())["score"] == summary["eval"]["score"]


def test_harness_list_shows_the_image_task_and_presets(capsys):
    from harness.cli import main

    with pytest.raises(SystemExit):
        main(["list"])
    listed = capsys.readouterr().out
    assert "image-tiny" in listed and "image-lcm-dreamshaper" in listed and "(suite image)" in listed


def test_image_curves_take_the_iqm_over_seeds_at_each_evaluation_point():
    import numpy as np

    from evals.image_plots import curve_stats, eval_curve

    runs = [{"summary": {"sft": {"score": 1.0}}, "lines": [{"rm_queries": 16, "eval/score": y},
                                                           {"rm_queries": 32}, {"rm_queries": 48, "eval/score": z}]}
            for y, z in ((2.0, 3.0), (4.0, 6.0), (6.0, 9.0))]
    xs, ys = eval_curve(runs[0])
    assert xs.tolist() == [0.0, 16.0, 48.0] and ys.tolist() == [1.0, 2.0, 3.0]  # the base policy at 0 queries
    stats = curve_stats([eval_curve(r) for r in runs])
    # three seeds: a 25% trim removes none (scipy's trim_mean), so the IQM is the mean: 1, 4, 6
    np.testing.assert_allclose(stats[:, :2], [[0, 1], [16, 4], [48, 6]])
    assert (stats[1:, 2] <= stats[1:, 1]).all() and (stats[1:, 1] <= stats[1:, 3]).all()
