"""Rollout engines: the backbone's sampler reports its log-prob drift against the trainer's forward (near 0), and
the vLLM engine's glue (weights in, samples and log-probs out) runs against a stand-in `vllm` module, since vLLM
itself needs a CUDA GPU this machine does not have."""
import sys
import types

import pytest
import torch

from algorithms.base import make
from harness.core.errors import UserError
from harness.core.experience import Budget
from harness.core.models import load_models
from harness.tasks import resolve_paths
from harness.core.rollout import HFEngine, logprob_drift, make_engine, sample
from harness.core.train import Trainer

DRIFT = ("rollout/logprob_drift_mean", "rollout/logprob_drift_max", "rollout/sequence_logratio_abs")


def test_drift_by_hand():
    engine = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    trainer = torch.tensor([[-1.1, -2.0, -2.0], [-0.5, -0.7, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    out = logprob_drift(engine, trainer, mask)
    assert out["rollout/logprob_drift_mean"] == pytest.approx((0.1 + 0 + 0 + 0.2) / 4)
    assert out["rollout/logprob_drift_max"] == pytest.approx(0.2)
    assert out["rollout/sequence_logratio_abs"] == pytest.approx((0.1 + 0.2) / 2)


def fresh(tiny_test_models):
    """The session's config and data with models of this test's own (training must not touch the shared ones)."""
    cfg, _, data = tiny_test_models
    return cfg, load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None)), data


@pytest.mark.parametrize("algo", ["rebel", "reinforce", "rebel_hybrid"])  # pi_t from scoring / from the update
def test_backbone_sampler_agrees_with_the_trainer_forward(algo, tiny_test_models):
    cfg, models, data = fresh(tiny_test_models)
    trainer = Trainer(cfg, make(algo), models, data.sft_train, Budget())
    assert isinstance(trainer.engine, HFEngine)  # auto on a machine without a GPU
    line = trainer.iteration(1)
    assert set(DRIFT) <= set(line)
    assert line["rollout/logprob_drift_max"] < 1e-4 and line["rollout/sequence_logratio_abs"] < 1e-4


def test_sampler_logprobs_do_not_change_the_samples(tiny_test_models):
    cfg, models, data = tiny_test_models
    from harness.core.experience import encode_queries

    query = encode_queries(data.sft_train[:4], models.tokenizer, cfg.task.max_prompt_tokens)
    plain = sample(models.policy, query, 8, 0.7, models.pad_id, torch.Generator().manual_seed(3), group=2)
    tokens, logp = sample(models.policy, query, 8, 0.7, models.pad_id, torch.Generator().manual_seed(3), group=2,
                          with_logprobs=True)
    assert torch.equal(plain, tokens) and logp.shape == tokens.shape and (logp <= 0).all()


def test_engine_choice_and_errors(monkeypatch):
    assert isinstance(make_engine("auto", "p", "float32", 0, 64, 0.3), HFEngine)
    assert isinstance(make_engine("hf", "p", "float32", 0, 64, 0.3), HFEngine)
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    with pytest.raises(UserError, match=r"needs vLLM \(pip install vllm\) and a CUDA GPU"):
        make_engine("vllm", "p", "float32", 0, 64, 0.3)


class FakeLLM:
    """Stands in for vllm.LLM: samples with the backbone's sampler from a model whose weights arrive only through
    load_weights (as the real engine's do), and records what it was asked."""

    def __init__(self, policy, **kwargs):
        import copy

        self.kwargs, self.loaded, self.requests, self.cache_resets = kwargs, [], [], 0
        self.model = copy.deepcopy(policy)
        with torch.no_grad():
            for p in self.model.parameters():
                p.zero_()
        worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=self))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker))

    def load_weights(self, pairs):
        params = dict(self.model.named_parameters())
        for name, tensor in pairs:
            self.loaded.append(name)
            params[name].data.copy_(tensor)

    def reset_prefix_cache(self):
        self.cache_resets += 1

    def generate(self, prompts, params, use_tqdm=False):
        self.requests.append((prompts, params))
        outputs = []
        for prompt in prompts:
            ids = torch.tensor([prompt["prompt_token_ids"]])
            tokens, logp = sample(self.model, ids, params.max_tokens, params.temperature, -1,
                                  torch.Generator().manual_seed(params.seed), group=params.n, with_logprobs=True)
            completions = [types.SimpleNamespace(
                token_ids=t.tolist(), logprobs=[{tok: types.SimpleNamespace(logprob=lp)} for tok, lp in
                                                zip(t.tolist(), row.tolist())]) for t, row in zip(tokens, logp)]
            outputs.append(types.SimpleNamespace(outputs=completions))
        return outputs


def test_vllm_engine_glue_against_a_stand_in(tiny_test_models, monkeypatch):
    cfg, models, data = fresh(tiny_test_models)
    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    fake.LLM = lambda model, **kw: FakeLLM(models.policy, model=model, **kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from harness.core.vllm_engine import VLLMEngine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    engine = VLLMEngine(models.origin["policy"], dtype="float32", seed=1, max_model_len=200,
                        gpu_memory_utilization=0.3)
    monkeypatch.undo()  # only the constructor's GPU check is bypassed
    monkeypatch.setitem(sys.modules, "vllm", fake)
    llm = engine.llm
    assert llm.kwargs["logprobs_mode"] == "processed_logprobs" and llm.kwargs["model"] == models.origin["policy"]

    trainer = Trainer(cfg, make("rebel"), models, data.sft_train, Budget())
    trainer.engine = engine
    line = trainer.iteration(1)
    assert sorted(llm.loaded) == sorted(n for n, _ in models.policy.named_parameters())  # weights synced
    assert llm.cache_resets == 1
    prompts, params = llm.requests[0]
    assert params.n == 2 and params.ignore_eos and params.logprobs == 0 and params.top_p == 1.0
    assert params.temperature == cfg.generation.temperature and params.max_tokens == cfg.generation.max_new_tokens
    assert all(models.pad_id not in p["prompt_token_ids"] for p in prompts)  # padding stripped
    assert len(prompts) == cfg.train.prompts_per_iteration
    # the engine sampled from the synced weights, so its log-probs agree with the trainer's forward
    assert line["rollout/logprob_drift_max"] < 1e-4
    assert line["responses"] == 2 * cfg.train.prompts_per_iteration
