"""The contract: an optimizer declares what it needs and computes only what is unique to it.

Static checks on algorithms/*.py (imports, no model or tokenizer access, size), the training loop never names an
optimizer, and a dynamic check: one iteration of every registered optimizer with every backbone call counted,
and no model forward inside an optimizer's `prepare` or `loss`.
"""
import ast
import re
from collections import Counter
from pathlib import Path

import pytest

import algorithms
from algorithms.base import REGISTRY, make, names
from harness.core import experience, rollout
from harness.app.config import resolve
from harness.core.experience import Budget
from harness.core.models import load_models
from harness.tasks import resolve_paths
from harness.core.train import Trainer

ALGO_DIR = Path(algorithms.__file__).parent
HARNESS_DIR = ALGO_DIR.parent / "harness" / "core"
ALLOWED_IMPORTS = {"__future__", "dataclasses", "typing", "math", "torch", "torch.nn.functional", "harness.core.batch",
                   "harness.core.contract", "harness.core.objective",  # the objective matrix's pure math (no model)
                   "harness.core.errors"}  # and other optimizer files (algorithms.*), e.g. to reuse a loss
# model, tokenizer and generation handles, and the calls that compute log-probs or sample
FORBIDDEN_NAMES = {"models", "policy", "reference", "reward_model", "critic", "tokenizer", "generate", "forward",
                   "logits", "log_softmax", "softmax", "multinomial", "eos_id", "pad_id", "eos_token_id",
                   "pad_token_id", "as_reference", "no_grad"}


def _files():
    return sorted(p for p in ALGO_DIR.glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_optimizer_files_import_only_math_and_the_contract(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods = [node.module]
        else:
            continue
        for mod in mods:
            ok = mod in ALLOWED_IMPORTS or mod.startswith("algorithms.")
            ok = ok or (path.name == "base.py" and mod in {"algorithms", "importlib", "pkgutil"})  # the registry
            assert ok, \
                f"{path.name} imports {mod}: generation, log-probs, rewards, KL and masks are the backbone's"


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_optimizer_files_touch_no_model_and_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) < 150, f"{path.name} should stay well under 150 lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Attribute):  # x.policy, torch.log_softmax, models.tokenizer, ...
            assert node.attr not in FORBIDDEN_NAMES, f"{path.name} uses .{node.attr} (line {node.lineno})"
        if isinstance(node, ast.Name):
            assert node.id not in {"models", "tokenizer"}, f"{path.name} uses {node.id} (line {node.lineno})"


def test_training_loop_never_names_an_optimizer():
    for name in ("train.py", "experience.py"):
        hits = [line for line in (HARNESS_DIR / name).read_text().splitlines()
                if re.search(r"rebel|ppo|dpo|rloo|reinforce", line, re.IGNORECASE)]
        assert not hits, f"harness/{name} names an optimizer: {hits}"


def test_registry_holds_every_optimizer_with_a_docstring():
    assert {"rebel", "ppo", "dpo", "iterative_dpo", "reinforce", "rloo", "rloo_k4", "rebel_hybrid",
            "rebel_preference", "grpo", "dr_grpo", "dapo", "gspo", "cispo", "reinforce_pp"} <= set(names())
    for name in names():
        assert REGISTRY[name].__doc__ and not REGISTRY[name].__doc__.startswith(REGISTRY[name].__name__ + "(")
    # what `--set algo.samples_per_prompt=4` resolves to
    cfg = resolve("tiny-test", {"algo": "rloo", "algo_args": {"samples_per_prompt": 4}})
    assert make(cfg.algo, cfg.algo_args).samples_per_prompt == 4


class Recorder:
    """Counts backbone calls (module forwards and the scoring functions) and where they happen."""

    def __init__(self, models, monkeypatch):
        self.calls, self.inside = Counter(), None
        self.roles = {id(models.policy): "policy", id(models.reward_model): "reward_model"}
        if models.reference is not None:
            self.roles[id(models.reference)] = "reference"
        mods = [(models.policy, "policy"), (models.reward_model, "reward_model")]
        mods += [(models.reference, "reference")] if models.reference is not None else []
        mods += [(models.critic.base_model, "critic")] if models.critic is not None else []
        for module, role in mods:
            module.register_forward_pre_hook(lambda *a, role=role: self._hit(f"forward:{role}"))
        # generation goes through the rollout engine (harness.core.rollout.HFEngine here), which calls rollout.sample
        for owner, fn in ((experience, "sequence_logprobs"), (experience, "reward_scores"),
                          (experience, "token_values"), (rollout, "sample"), (experience, "sample")):
            original = getattr(owner, fn)

            def wrapped(model, *a, _fn=fn, _orig=original, **k):
                self.calls[f"{_fn}:{self.roles.get(id(model), 'critic')}"] += 1
                return _orig(model, *a, **k)

            monkeypatch.setattr(owner, fn, wrapped)

    def _hit(self, key):
        self.calls[key] += 1
        if self.inside:
            raise AssertionError(f"{key} inside the optimizer's {self.inside}")

    def guard(self, algo, method):
        original = getattr(algo, method)

        def guarded(*a, **k):
            self.inside = method
            try:
                return original(*a, **k)
            finally:
                self.inside = None

        setattr(algo, method, guarded)


@pytest.fixture(scope="module")
def small_cfg(harness_cache, tiny_test_models):
    return resolve("tiny-test", {"model": {"cache_dir": harness_cache}, "generation": {"max_new_tokens": 8},
                                 "train": {"prompts_per_iteration": 4, "iterations": 2}})


@pytest.mark.parametrize("name", names())
def test_one_iteration_calls_the_backbone_the_same_way_for_every_optimizer(name, small_cfg, tiny_test_models,
                                                                          monkeypatch):
    _, _, data = tiny_test_models
    # counts are per sampled batch: DAPO's dynamic sampling may sample again (tested in test_grpo_family.py)
    algo = make(name, {"dynamic_sampling": 0} if make(name).dynamic_sampling else None)
    models = load_models(small_cfg.model, resolve_paths(small_cfg.model, log=lambda *a: None), needs_critic=algo.needs_critic)
    rec = Recorder(models, monkeypatch)
    rec.guard(algo, "prepare")
    rec.guard(algo, "loss")
    budget = Budget()
    trainer = Trainer(small_cfg, algo, models, data.pref_train if algo.data == "preference_pairs" else data.sft_train,
                      budget)
    trainer.iteration(1)
    P, S, L = 4, algo.samples_per_prompt, small_cfg.generation.max_new_tokens
    online = algo.data != "preference_pairs"
    steps = algo.epochs * algo.minibatches
    c = rec.calls
    # generation: one sampling call per chunk (one chunk here), prefill + L - 1 decode steps, from the policy only
    assert c["sample:policy"] == int(online)
    # A*-PO's V*: N responses of pi_ref per new prompt, sampled and scored by the backbone in chunks
    asked = algo.optimal_value_samples()
    value_chunks = c["sample:reference"]
    assert (value_chunks >= 1) if asked else (value_chunks == 0)
    # scoring: pi_ref always; pi_t unless the update's own forward is pi_t (one step on one forward per batch)
    assert c["sequence_logprobs:reference"] == 1
    assert c["sequence_logprobs:policy"] == int(not trainer.single_pass) + steps
    assert c["reward_scores:reward_model"] == int(online) + value_chunks
    assert c["token_values:critic"] == algo.needs_critic * (int(not trainer.single_pass) + steps)
    K = S + (algo.data == "online_with_reference") if online else 2
    forwards_per_logprob = 1 if K == 1 else 2  # shared-prefix forwards: the prompt once, then its K responses
    assert c["forward:policy"] == online * L + forwards_per_logprob * c["sequence_logprobs:policy"]
    # budgets: responses sampled per prompt (and A*-PO's N per prompt for V*), RM queries per response scored
    value_responses = asked[0] * P if asked else 0
    assert budget.prompts == P and budget.responses == (S * P if online and algo.data == "online" else
                                                        P if online else 0) + value_responses
    assert budget.rm_queries == (K * P if online else 0) + value_responses and budget.optimizer_steps == steps


def test_responses_per_prompt_follow_the_protocol_budgets():
    ppo = make("ppo").samples_per_prompt
    assert make("rebel").samples_per_prompt == 2 * ppo == make("iterative_dpo").samples_per_prompt
    assert make("reinforce").samples_per_prompt == ppo
    assert make("rloo").samples_per_prompt == 2 and make("rloo_k4").samples_per_prompt == 4
    assert make("dpo").data == "preference_pairs"  # never samples: zero responses (checked per run above)
