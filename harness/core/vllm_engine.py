"""Rollouts through vLLM, colocated with the trainer (one engine per process, on its GPU), behind the interface of
`harness.core.rollout.HFEngine`: the same prompts in, the same [B * group, max_new_tokens] raw samples out, cut at EOS
by the backbone afterwards.

To sample what the backbone's sampler samples: temperature as configured, no top-k / top-p, EOS sampled like any
token and generation continued after it (`ignore_eos=True`: every response costs max_new_tokens decode steps, as
PROTOCOL.md's min_new_tokens = max_new_tokens asks), and log-probs of the processed (temperature-scaled) logits,
which the trainer compares with its own forward every iteration (`rollout/logprob_drift_*` in metrics.jsonl).
The policy's weights are pushed into the engine before every rollout (LoRA merged first), as TRL's colocate mode
does. Needs a CUDA GPU and `pip install vllm`; not run on the CPU machines this project is developed on.
"""
from __future__ import annotations

import torch
from torch import Tensor

from harness.core.errors import UserError


class VLLMEngine:
    name = "vllm"

    def __init__(self, policy_source: str, *, dtype: str, seed: int, max_model_len: int,
                 gpu_memory_utilization: float):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("generation.engine=vllm needs vLLM (pip install vllm) and a CUDA GPU; "
                            "generation.engine=hf runs everywhere") from None
        if not torch.cuda.is_available():
            raise UserError("generation.engine=vllm needs a CUDA GPU; use generation.engine=hf on this machine")
        self.llm = LLM(model=policy_source, dtype=dtype, seed=seed, max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True,
                       distributed_executor_backend="external_launcher",  # one engine per accelerate process
                       logprobs_mode="processed_logprobs")  # log-probs after temperature, like the trainer's

    def _worker_model(self):
        return self.llm.llm_engine.model_executor.driver_worker.model_runner.model

    def sync(self, policy) -> None:
        """Load the policy's current weights into the engine (a LoRA adapter merged into its base first)."""
        peft = hasattr(policy, "merge_adapter")
        if peft:
            policy.merge_adapter()
        try:
            model = self._worker_model()
            for name, param in named_weights(policy):
                model.load_weights([(name, param.data)])
        finally:
            if peft:
                policy.unmerge_adapter()
        self.llm.reset_prefix_cache()

    def generate(self, policy, query: Tensor, max_new_tokens: int, temperature: float, pad_id: int,
                 generator: torch.Generator, group: int) -> tuple[Tensor, Tensor]:
        from vllm import SamplingParams

        seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))  # the run's stream
        params = SamplingParams(n=group, temperature=temperature, top_p=1.0, max_tokens=max_new_tokens,
                                ignore_eos=True, logprobs=0, seed=seed)
        prompts = [{"prompt_token_ids": [t for t in row.tolist() if t != pad_id]} for row in query]
        tokens = torch.full((len(query) * group, max_new_tokens), pad_id, dtype=torch.long)
        logprobs = torch.zeros(len(query) * group, max_new_tokens)
        row = 0
        for out in self.llm.generate(prompts, params, use_tqdm=False):
            for completion in out.outputs:  # the n samples of one prompt, consecutive like the backbone's groups
                ids = list(completion.token_ids)[:max_new_tokens]
                tokens[row, : len(ids)] = torch.tensor(ids)
                logprobs[row, : len(ids)] = torch.tensor([step[t].logprob for t, step in zip(ids, completion.logprobs)])
                row += 1
        return tokens.to(query.device), logprobs.to(query.device)


def named_weights(policy):
    """(name, tensor) pairs as vLLM's loader names them: a PEFT model's base weights (merged), without the
    wrapper's prefixes and without the adapter's own tensors."""
    for name, param in policy.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        yield name, param
