"""Rollouts through vLLM, colocated with the trainer (one engine per process, on its GPU), behind the interface of
`harness.core.rollout.HFEngine`: the same prompts in, the same [B * group, max_new_tokens] raw samples out, cut at EOS
by the backbone afterwards.

To sample what the backbone's sampler samples: temperature as configured, no top-k / top-p, EOS sampled like any
token and generation continued after it (`ignore_eos=True`: every response costs max_new_tokens decode steps, as
PROTOCOL.md's min_new_tokens = max_new_tokens asks), and log-probs of the processed (temperature-scaled) logits,
which the trainer compares with its own forward every iteration (`rollout/logprob_drift_*` in metrics.jsonl).

Checked against vLLM 0.33.0's source (tests/test_engines.py reads the wheel when it is there) and TRL 1.16's colocate
mode (trl/generation/vllm_generation.py), with three differences:
- Weights go in through `LLM.apply_model` (run in this process: `external_launcher` turns V1 multiprocessing off),
  the supported route, where TRL reaches `llm_engine.model_executor.driver_worker.model_runner.model`, an attribute
  vLLM keeps "for v0 compatibility". The loader's returned names are checked: a sync that misses a weight fails.
- A LoRA adapter is merged out of place (base + B A per layer, into a new tensor) instead of PEFT's in-place
  merge_adapter / unmerge_adapter: the base is stored in bf16 on GPUs, where merge-then-unmerge rounds it every
  iteration and the frozen base would drift.
- Sleep mode as TRL's (level 2: weights and KV cache freed), entered after the batch is collected (`release`, called
  by the trainer before its update) and left at the next sync (weights woken, reloaded, then the KV cache).
Needs a CUDA GPU and `pip install vllm`; has never run on one here (docs/scaling.md).
"""
from __future__ import annotations

import functools
import os
import socket

import torch
from torch import Tensor

from harness.core.errors import UserError


class VLLMEngine:
    name = "vllm"

    def __init__(self, policy_source: str, *, dtype: str, seed: int, max_model_len: int,
                 gpu_memory_utilization: float, sleep: bool = True):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("generation.engine=vllm needs vLLM (pip install vllm) and a CUDA GPU; "
                            "generation.engine=hf runs everywhere") from None
        if not torch.cuda.is_available():
            raise UserError("generation.engine=vllm needs a CUDA GPU; use generation.engine=hf on this machine")
        launcher_environment()
        self.sleep_mode = sleep
        self.llm = LLM(model=policy_source, dtype=dtype, seed=seed, max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True,
                       enable_sleep_mode=sleep,
                       distributed_executor_backend="external_launcher",  # one engine per process, in-process
                       logprobs_mode="processed_logprobs")  # log-probs after temperature, like the trainer's
        self.asleep = False
        self.release()  # its weights are the checkpoint's until the first sync: free them until then

    def release(self) -> None:
        """Free the engine's GPU memory (weights and KV cache) for the update; the next sync brings it back."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True

    def sync(self, policy) -> None:
        """Load the policy's current weights into the engine (a LoRA adapter merged into its base first)."""
        if self.asleep:
            torch.cuda.empty_cache()  # the trainer's cached blocks back to the device before vLLM maps its own
            self.llm.wake_up(tags=["weights"])
        # apply_model runs the function here, in this process (external_launcher), so the weights stream one at a
        # time from the generator: no second copy of the model is made
        missing = self.llm.apply_model(functools.partial(_load_all, named_weights(policy)))
        if any(missing):
            raise RuntimeError(f"vLLM's model kept weights the policy did not send: {sorted(missing[0])[:5]}")
        self.llm.reset_prefix_cache()  # cached prefixes hold the old weights' keys and values
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False

    def generate(self, policy, query: Tensor, max_new_tokens: int, temperature: float, pad_id: int,
                 generator: torch.Generator, group: int) -> tuple[Tensor, Tensor]:
        from vllm import SamplingParams

        if self.asleep:  # released without a sync since (e.g. a caller that samples twice): weights are gone
            self.sync(policy)
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))  # the run's stream
        params = SamplingParams(n=group, temperature=temperature, top_p=1.0, top_k=0, max_tokens=max_new_tokens,
                                ignore_eos=True, logprobs=0, seed=seed)
        prompts = [{"prompt_token_ids": [t for t in row.tolist() if t != pad_id]} for row in query]
        tokens = torch.full((len(query) * group, max_new_tokens), pad_id, dtype=torch.long)
        logprobs = torch.zeros(len(query) * group, max_new_tokens)
        row = 0
        for out in self.llm.generate(prompts, sampling_params=params, use_tqdm=False):
            for completion in out.outputs:  # the n samples of one prompt, consecutive like the backbone's groups
                ids = list(completion.token_ids)[:max_new_tokens]
                tokens[row, : len(ids)] = torch.tensor(ids)
                logprobs[row, : len(ids)] = torch.tensor([step[t].logprob for t, step in zip(ids, completion.logprobs)])
                row += 1
        return tokens.to(query.device), logprobs.to(query.device)


def launcher_environment() -> None:
    """The variables vLLM's external_launcher executor reads (RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; vLLM 0.33
    ExecutorWithExternalLauncher._distributed_args): `accelerate launch` sets them; a plain one-process run does
    not, and vLLM would stop with a KeyError. TRL sets them the same way from its Accelerator."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:  # a free port, so that two runs on one machine do not collide
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)


def _load_all(weights, model) -> set[str]:
    """Runs on vLLM's model (through apply_model): loads every weight and returns the names of the model's
    parameters that none of them reached (empty when the sync is whole)."""
    loaded = model.load_weights(weights)
    if loaded is None:  # a model whose loader does not report; nothing to check
        return set()
    return {name for name, _ in model.named_parameters()} - set(loaded)


def named_weights(policy):
    """(name, tensor) pairs as the checkpoint names them, which vLLM's loader maps as it does at start-up: a PEFT
    model's base weights with each LoRA layer's B A added out of place, without the wrapper's prefixes and the
    adapters' own tensors; a `modules_to_save` copy under the original name; tied weights once (named_parameters
    yields a shared tensor once, and vLLM ties its head to the embedding itself); a sharded tensor (FSDP2's
    DTensor) gathered whole first, a collective every rank runs in the same order."""
    merged = {}  # parameter name -> the LoRA layer whose base weight it is
    if hasattr(policy, "peft_config"):
        for name, module in policy.named_modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
                if any(module.use_dora.get(a, False) for a in module.active_adapters):
                    raise UserError("generation.engine=vllm: DoRA adapters are not merged for vLLM; use "
                                    "generation.engine=hf")
                merged[f"{name}.base_layer.weight"] = module
    for name, param in policy.named_parameters():
        if "lora_" in name or "original_module" in name:
            continue
        tensor = param.detach()
        if hasattr(tensor, "full_tensor"):  # DTensor: an FSDP2 shard
            tensor = tensor.full_tensor()
        layer = merged.get(name)
        if layer is not None and not layer.merged:
            delta = sum(layer.get_delta_weight(a).float() for a in layer.active_adapters if a in layer.lora_A)
            tensor = (tensor.float() + delta).to(tensor.dtype)
        name = name.removeprefix("base_model.model.").replace(".base_layer", "").replace("modules_to_save.default.", "")
        yield name, tensor
