"""One image run end to end (REBEL paper section 4.3): config -> diffusion policy with LoRA -> iterations of
(sample trajectories, reward them, update on them) -> evaluation -> a run directory in the language runs' format
(config.json, metrics.jsonl, samples.jsonl, summary.json, evals/image.json; docs/run_format.md, docs/image.md).

The shared backbone for both optimizers: sampling (harness/core/diffusion.py), rewards, the budget counters
(prompts, responses = trajectories, rm_queries = reward queries, optimizer_steps) and the update loop below; the
optimizers' losses are algorithms/trajectory.py. No resume: a killed run starts again (its directory is reused).
"""
from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path

import torch

from algorithms.trajectory import hyperparameters, make
from harness.core.diffusion import PerPromptStats
from harness.app.image_config import ImageRunConfig
from harness.core.diffusion import DiffusionPolicy, Trajectories, sample, trajectory_logp
from harness.core.errors import UserError
from harness.core.experience import Budget, Timer
from harness.core.models import peak_memory_mb
from harness.core.store import RunDir, cache_root, code_version, config_hash, read_json, write_json, write_jsonl


def load_policy(cfg: ImageRunConfig, prompts: list[str], log=print) -> tuple[DiffusionPolicy, list]:
    from harness.tasks import image

    m = cfg.model
    if m.kind == "tiny":
        recipe = {**m.tiny.model_dump(), "steps": m.steps, "prompts": prompts}
        return image.tiny_policy(recipe, cache_root(m.cache_dir), lora_r=m.lora_r, lora_alpha=m.lora_alpha,
                                 logp_reduce=m.logp_reduce, log=log)
    return image.lcm_policy(m.name, lora_r=m.lora_r, lora_alpha=m.lora_alpha, steps=m.steps,
                            original_steps=m.original_steps, guidance_scale=m.guidance_scale, resolution=m.resolution,
                            max_prompt_tokens=m.max_prompt_tokens, logp_reduce=m.logp_reduce, device=m.device,
                            dtype=getattr(torch, m.dtype))


def update(policy: DiffusionPolicy, algo, traj: Trajectories, reward: torch.Tensor, advantage: torch.Tensor | None,
           optimizer, params: list, budget: Budget, generator: torch.Generator, max_grad_norm: float | None) -> dict:
    """algo.epochs passes over the iteration's prompts in minibatches (a prompt's K trajectories stay together);
    one optimizer step per minibatch. Per-step optimizers (ppo) backpropagate each step's loss in turn (gradients
    accumulated over the T steps, in a shuffled order, as RLCM), the others the whole trajectory's at once."""
    k, horizon = algo.samples_per_prompt, policy.horizon
    n_prompts = reward.numel() // k
    old = traj.logp.view(n_prompts, k, horizon)
    rewards = reward.view(n_prompts, k)
    advantages = None if advantage is None else advantage.view(n_prompts, k)
    per_prompt_mb = algo.minibatch  # prompts: pairs for rebel, trajectories for ppo (K = 1)
    stats: dict[str, list[float]] = {}
    for _ in range(algo.epochs):
        for chunk in torch.randperm(n_prompts, generator=generator).split(per_prompt_mb):
            flat = (chunk[:, None] * k + torch.arange(k)).flatten()
            sub = traj.select(flat)
            adv = None if advantages is None else advantages[chunk]
            optimizer.zero_grad(set_to_none=True)
            if algo.per_step:
                for j in torch.randperm(horizon, generator=generator).tolist():
                    lp = trajectory_logp(policy, sub, [j]).view(len(chunk), k, 1)
                    loss, s = algo.loss(lp, old[chunk][..., j:j + 1], rewards[chunk], adv)
                    (loss / horizon).backward()
                    for key, v in {"loss": loss.item() / horizon, **s}.items():
                        stats.setdefault(key, []).append(v)
            else:
                lp = trajectory_logp(policy, sub).view(len(chunk), k, horizon)
                loss, s = algo.loss(lp, old[chunk], rewards[chunk], adv)
                loss.backward()
                for key, v in {"loss": loss.item(), **s}.items():
                    stats.setdefault(key, []).append(v)
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            budget.optimizer_steps += 1
    out = {key: sum(v) / len(v) for key, v in stats.items()}
    if algo.per_step:  # `loss` is the per-step mean's sum over the steps of each minibatch
        out["loss"] *= horizon
    return out


def evaluate(policy: DiffusionPolicy, reward_fn, prompts: list[str], n: int, seed: int) -> tuple[dict, Trajectories,
                                                                                                   torch.Tensor]:
    """The policy's mean reward on the first n prompts (cycled), one image each from the same starting noise."""
    chosen = [prompts[i % len(prompts)] for i in range(n)]
    traj = sample(policy, chosen, torch.Generator().manual_seed(seed))
    scores = reward_fn(traj.images, chosen).float()
    return {"score": scores.mean().item(), "score_std": scores.std(unbiased=False).item(), "n": n}, traj, scores


def run(cfg: ImageRunConfig, log=print) -> Path:
    """Train and evaluate one image run; returns its directory."""
    from evals.image_plots import save_grid
    from harness.tasks.image import load_prompts
    from harness.tasks.image_rewards import make_reward

    algo = make(cfg.algo, cfg.algo_args)
    prompts = load_prompts(cfg.task.prompts)
    resolved = cfg.model_dump()
    chash = config_hash({k: v for k, v in resolved.items() if k not in ("output_dir", "run_id")})
    run_dir = RunDir(Path(cfg.output_dir) / (cfg.run_id or f"{cfg.algo}-image-{cfg.preset}-s{cfg.seed}-{chash[:8]}"))
    if run_dir.summary.exists():
        if read_json(run_dir.config).get("config_hash") != chash:
            raise UserError(f"{run_dir.path} holds a run with other settings; choose another --run-id")
        log(f"{run_dir.path} is already complete (same settings)")
        return run_dir.path
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    run_dir.create({**resolved, "config_hash": chash, "code_version": code_version()})
    if run_dir.metrics.exists():  # an earlier, unfinished attempt: no resume, its lines are superseded
        run_dir.metrics.rename(run_dir.superseded)
    policy, params = load_policy(cfg, prompts, log)
    reward_fn = make_reward(cfg.task.reward, cfg.model.device)
    log(f"algorithm  {algo.name} {hyperparameters(algo)}")
    log(f"model      {cfg.model.kind} ({sum(p.numel() for p in policy.unet.parameters()) / 1e6:.2f}M parameters, "
        f"{sum(p.numel() for p in params)} trained: LoRA r={cfg.model.lora_r}), {policy.horizon} denoising steps")
    log(f"reward     {cfg.task.reward} on {len(prompts)} prompts ({cfg.task.prompts})")
    log(f"run dir    {run_dir.path}")
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    stats = PerPromptStats(algo.stat_buffer, algo.stat_min_count)
    rng, gen = random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    base, base_traj, base_scores = evaluate(policy, reward_fn, prompts, cfg.eval.prompts, cfg.eval.seed)
    save_grid(base_traj.images, run_dir.path / "images" / "before.png", base_scores.tolist())
    log(f"base       eval score {base['score']:.4f}")
    budget, started, t_start = Budget(), dt.datetime.now().isoformat(timespec="seconds"), time.perf_counter()
    line: dict = {}
    for it in range(1, cfg.train.iterations + 1):
        budget.timings = {}
        chosen = [rng.choice(prompts) for _ in range(cfg.train.prompts_per_iteration)]
        flat = [p for p in chosen for _ in range(algo.samples_per_prompt)]
        with Timer(budget, "generation"):
            traj = sample(policy, flat, gen)
        with Timer(budget, "scoring"):
            reward = reward_fn(traj.images, flat).float()
        advantage = stats.update(flat, reward) if algo.uses_advantages else None
        budget.prompts += len(chosen)
        budget.responses += len(flat)
        budget.rm_queries += len(flat)
        with Timer(budget, "update"):
            s = update(policy, algo, traj, reward, advantage, optimizer, params, budget, gen, cfg.train.max_grad_norm)
        budget.wall_time_s = time.perf_counter() - t_start
        line = {"iteration": it, **budget.counters(), **s, "score": reward.mean().item(),
                "reward": reward.mean().item(), "score_std": reward.std(unbiased=False).item(),
                **{f"time/{k}_s": round(v, 3) for k, v in budget.timings.items()}}
        if cfg.eval.every and it % cfg.eval.every == 0 and it != cfg.train.iterations:
            line["eval/score"] = evaluate(policy, reward_fn, prompts, cfg.eval.prompts, cfg.eval.seed)[0]["score"]
        run_dir.log(line)
        log(f"iter {it:3d}  score {line['score']:.4f}  loss {line['loss']:.4g}"
            + (f"  eval {line['eval/score']:.4f}" if "eval/score" in line else ""))
    final, traj, scores = evaluate(policy, reward_fn, prompts, cfg.eval.prompts, cfg.eval.seed)
    save_grid(traj.images, run_dir.path / "images" / "after.png", scores.tolist())
    if cfg.train.iterations:
        run_dir.log({"iteration": cfg.train.iterations, **budget.counters(), "final": True,
                     "eval/score": final["score"]})
    save_adapter(policy, run_dir.checkpoints / "final")
    write_jsonl(run_dir.samples, [{"prompt": p, "score": s, "image": "images/after.png", "index": i}
                                  for i, (p, s) in enumerate(zip(traj.prompts, scores.tolist()))])
    final = {**final, "reward": cfg.task.reward}
    write_json(run_dir.evals / "image.json", final)
    summary = {"run_id": run_dir.path.name, "status": "completed", "algorithm": algo.name,
               "algorithm_config": hyperparameters(algo), "objective": {}, "task": cfg.task.name, "suite": "image",
               "data_source": cfg.task.prompts, "preset": cfg.preset, "seed": cfg.seed, "config_hash": chash,
               "code_version": code_version(), "started_at": started, "resumed_from": None, "processes": 1,
               "finished_at": dt.datetime.now().isoformat(timespec="seconds"), "eval": final,
               "sft": {**base, "reward": cfg.task.reward},
               "budget": {**budget.counters(), "peak_memory_mb": round(peak_memory_mb(), 1)}, "settings": {},
               "reward": cfg.task.reward,
               "comparison_key": {"task": cfg.task.name, "data_source": cfg.task.prompts, "preset": cfg.preset,
                                  "judge": None, "eval_temperature": None, "kl_definition": None,
                                  "reward": cfg.task.reward}}
    write_json(run_dir.summary, summary)
    log(f"final      eval score {final['score']:.4f} (base {base['score']:.4f}); {budget.rm_queries} reward queries, "
        f"{budget.optimizer_steps} optimizer steps, {budget.wall_time_s:.0f} s")
    return run_dir.path


def save_adapter(policy: DiffusionPolicy, path: Path) -> None:
    """The trained LoRA adapter's weights (peft's state-dict names), safetensors."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(policy.unet).items()}
    save_file(state, path / "adapter_model.safetensors")


# parameter counts of the paper preset's models (SD 1.5 architecture; CLIP ViT-L/14), for the memory plan
LCM_PARAMS = {"unet": 859.5e6, "vae": 83.7e6, "text_encoder": 123.1e6}
CLIP_L14_PARAMS = 427.6e6


def plan(cfg: ImageRunConfig) -> tuple[list[str], list[str]]:
    """(lines, problems) of a dry run: the resolved settings, the assets and whether they are here, the device,
    and a weights-and-optimizer memory estimate (activations are not estimated: measure them on the GPU)."""
    from harness.tasks.image import load_prompts
    from harness.tasks.image_rewards import AESTHETIC_HEAD, CLIP_MODEL, REWARDS

    algo = make(cfg.algo, cfg.algo_args)
    lines, problems = [f"preset     {cfg.preset}: {cfg.description}",
                       f"algorithm  {algo.name} {hyperparameters(algo)}",
                       f"train      {cfg.train.model_dump()}"], []
    try:
        lines.append(f"prompts    {len(load_prompts(cfg.task.prompts))} from {cfg.task.prompts}")
    except UserError as e:
        problems.append(str(e))
    if cfg.task.reward not in REWARDS:
        problems.append(f"unknown reward {cfg.task.reward!r}; valid: {', '.join(REWARDS)}")
    m = cfg.model
    assets = []
    if m.kind == "lcm":
        assets.append((m.name, "model_index.json"))
    if cfg.task.reward == "aesthetic":
        assets += [(CLIP_MODEL, "config.json"), AESTHETIC_HEAD]
    for repo, file in assets:
        from huggingface_hub import try_to_load_from_cache

        here = isinstance(try_to_load_from_cache(repo, file), str)
        lines.append(f"asset      {repo}/{file}: {'in the hub cache' if here else 'not cached (fetched on first use)'}")
    if m.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"model.device {m.device}: no CUDA device here (this preset needs a GPU)")
    if m.kind == "lcm":
        bytes_per = 2 if m.dtype in ("float16", "bfloat16") else 4
        frozen = sum(LCM_PARAMS.values()) * bytes_per + (CLIP_L14_PARAMS * 4 if cfg.task.reward == "aesthetic" else 0)
        # LoRA on the attention projections, r x (in + out) per adapted linear: SD 1.5's 16 transformer blocks
        # (5 of width 320, 5 of 640, 6 of 1280; cross-attention keys and values from 768) give 1.59M at r = 8
        lora = 1.594e6 * m.lora_r / 8
        lines.append(f"memory     frozen weights {frozen / 2**30:.2f} GiB ({m.dtype}; the reward's CLIP in float32), "
                     f"LoRA ~{lora / 1e6:.1f}M parameters with AdamW states {lora * 16 / 2**20:.0f} MiB; activations "
                     f"of one UNet backward at {m.resolution // 8}x{m.resolution // 8} latents not estimated")
    return lines, problems


def command(preset: str, overrides: dict, source: str | None, dry_run: bool) -> int:
    """`harness run` for the image task: the command line's overrides onto an image preset."""
    from harness.app.image_config import resolve

    overrides = dict(overrides)
    task = dict(overrides.pop("task", {}) or {})
    task.pop("source", None)
    if source is not None:
        task["prompts"] = source
    if task:
        overrides["task"] = task
    cfg = resolve(preset, overrides)
    if dry_run:
        lines, problems = plan(cfg)
        print("\n".join(lines + [f"PROBLEM    {p}" for p in problems]
                        + [f"{'not runnable here' if problems else 'ready'}: {len(problems)} problem(s)"]))
        return 1 if problems else 0
    run(cfg)
    return 0
