"""Rollout engines: the backbone's sampler reports its log-prob drift against the trainer's forward (near 0), and
the vLLM engine (weights in, sleep and wake, samples and log-probs out) runs against a stand-in `vllm` module, since
vLLM itself needs a CUDA GPU this machine does not have; its calls are checked against vLLM's source when the wheel
is here (HARNESS_VLLM_WHEEL or .whl/vllm-*.whl)."""
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


# --- vLLM: a stand-in that behaves as vLLM 0.33's offline LLM does where the engine relies on it ----------------

LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class Recorded:
    """An output object that logs which attributes the engine reads (checked against the wheel's classes)."""

    def __init__(self, log: set, cls: str, **fields):
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_cls", cls)
        for k, v in fields.items():
            object.__setattr__(self, k, v)

    def __getattribute__(self, name):
        if not name.startswith("_"):
            object.__getattribute__(self, "_log").add((object.__getattribute__(self, "_cls"), name))
        return object.__getattribute__(self, name)


class FakeVLLMModel:
    """vLLM's model inside the worker: weights arrive only through load_weights (checkpoint names in, the names
    it loaded out; an unknown name is an error, as in vLLM's AutoWeightsLoader)."""

    def __init__(self, hf):
        self.hf = hf

    def named_parameters(self):
        return self.hf.named_parameters()

    def load_weights(self, weights):
        params, loaded = dict(self.hf.named_parameters()), set()
        for name, tensor in weights:
            if name not in params:
                raise ValueError(f"There is no module or parameter named {name!r}")
            params[name].data.copy_(tensor)
            loaded.add(name)
        return loaded


class FakeLLM:
    """Stands in for vllm.LLM (0.33): built from the checkpoint path as vLLM is; external_launcher reads the
    torchrun variables; level-2 sleep discards weights (NaN here) and KV cache, wake_up(tags) maps memory back
    without content; generate and weight loading refuse a sleeping engine (vLLM would hang or write unmapped
    memory); apply_model runs a function on the model in this process. Every call is recorded for the API test."""

    def __init__(self, model, **kwargs):
        import os

        from transformers import AutoModelForCausalLM

        self.calls = [("__init__", 1, tuple(sorted(kwargs)))]
        self.kwargs, self.requests, self.read = {"model": model, **kwargs}, [], set()
        if kwargs.get("distributed_executor_backend") == "external_launcher":
            self.env = {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}  # KeyError
        self.model = FakeVLLMModel(AutoModelForCausalLM.from_pretrained(model).eval())
        self.sleeping, self.sleeps, self.cache_resets = set(), 0, 0

    def _call(self, name, args, kwargs):
        self.calls.append((name, len(args), tuple(sorted(kwargs))))

    def sleep(self, level=1, mode="abort"):
        self._call("sleep", (), {"level": level} if level != 1 else {})
        assert self.kwargs.get("enable_sleep_mode"), "vLLM: sleep mode is not enabled"
        if level == 2:
            with torch.no_grad():
                for p in self.model.hf.parameters():
                    p.fill_(float("nan"))
        self.sleeping, self.sleeps = {"weights", "kv_cache"}, self.sleeps + 1

    def wake_up(self, tags=None):
        self._call("wake_up", (), {"tags": tags})
        assert tags is None or set(tags) <= {"weights", "kv_cache", "scheduling"}
        self.sleeping -= set(tags or ("weights", "kv_cache"))
        return not self.sleeping

    def apply_model(self, func):
        self._call("apply_model", (func,), {})
        assert "weights" not in self.sleeping, "load_weights into discarded (unmapped) weight memory"
        return [func(self.model)]

    def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        self._call("reset_prefix_cache", (), {})
        self.cache_resets += 1
        return True

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None):
        self._call("generate", (prompts,), {"sampling_params": 1, "use_tqdm": 1})
        assert not self.sleeping, "the scheduler stays paused until the engine is fully awake"
        params = sampling_params
        self.requests.append((prompts, params))
        outputs = []
        for prompt in prompts:
            ids = torch.tensor([prompt["prompt_token_ids"]])
            tokens, logp = sample(self.model.hf, ids, params.max_tokens, params.temperature, -1,
                                  torch.Generator().manual_seed(params.seed), group=params.n, with_logprobs=True)
            completions = [Recorded(self.read, "CompletionOutput", token_ids=t.tolist(),
                                    logprobs=[{tok: Recorded(self.read, "Logprob", logprob=lp)}
                                              for tok, lp in zip(t.tolist(), row.tolist())])
                           for t, row in zip(tokens, logp)]
            outputs.append(Recorded(self.read, "RequestOutput", outputs=completions))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in `vllm` module; the LLMs it built, the SamplingParams keywords it was given; the launcher's
    environment variables removed and restored afterwards."""
    built, sampling = [], []

    def llm(model, **kw):
        built.append(FakeLLM(model, **kw))
        return built[-1]

    def sampling_params(**kw):
        sampling.append(tuple(sorted(kw)))
        return types.SimpleNamespace(**kw)

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = llm, sampling_params
    monkeypatch.setitem(sys.modules, "vllm", fake)
    for key in LAUNCHER_ENV:  # set then delete: undo restores the original (usually absent) value
        monkeypatch.setenv(key, "x")
        monkeypatch.delenv(key)
    return types.SimpleNamespace(built=built, sampling=sampling)


def build_engine(models, monkeypatch, **kw):
    from harness.core.vllm_engine import VLLMEngine

    with monkeypatch.context() as m:  # only the constructor's GPU check is bypassed
        m.setattr(torch.cuda, "is_available", lambda: True)
        return VLLMEngine(models.origin["policy"], dtype="float32", seed=1, max_model_len=200,
                          gpu_memory_utilization=0.3, **kw)


def test_vllm_engine_glue_against_a_stand_in(tiny_test_models, fake_vllm, monkeypatch):
    import os

    cfg, models, data = fresh(tiny_test_models)
    engine = build_engine(models, monkeypatch)
    llm = engine.llm
    assert llm.kwargs["logprobs_mode"] == "processed_logprobs" and llm.kwargs["model"] == models.origin["policy"]
    assert llm.env["RANK"] == "0" and os.environ["WORLD_SIZE"] == "1" and int(llm.env["MASTER_PORT"]) > 0
    assert engine.asleep and llm.sleeps == 1  # the checkpoint's weights freed until the first sync

    trainer = Trainer(cfg, make("rebel"), models, data.sft_train, Budget())
    trainer.engine = engine
    line = trainer.iteration(1)
    assert llm.sleeps == 2 and engine.asleep  # released for the update
    woken = [c for c in llm.calls if c[0] in ("wake_up", "apply_model", "reset_prefix_cache", "generate")]
    assert [c[0] for c in woken[:4]] == ["wake_up", "apply_model", "reset_prefix_cache", "wake_up"]  # TRL's order
    assert llm.cache_resets == 1
    prompts, params = llm.requests[0]
    assert params.n == 2 and params.ignore_eos and params.logprobs == 0 and params.top_p == 1.0 and params.top_k == 0
    assert params.temperature == cfg.generation.temperature and params.max_tokens == cfg.generation.max_new_tokens
    assert all(models.pad_id not in p["prompt_token_ids"] for p in prompts)  # padding stripped
    assert len(prompts) == cfg.train.prompts_per_iteration
    # the engine sampled from the synced weights (they were NaN after the sleep), so its log-probs agree with the
    # trainer's forward of the pre-update policy
    assert line["rollout/logprob_drift_max"] < 1e-4
    assert line["responses"] == 2 * cfg.train.prompts_per_iteration
    engine.sync(models.policy)  # the updated weights, all of them
    for (name, p), (_, q) in zip(models.policy.named_parameters(), llm.model.hf.named_parameters()):
        assert torch.equal(p, q), name


def test_vllm_engine_without_sleep_mode_stays_resident(tiny_test_models, fake_vllm, monkeypatch):
    cfg, models, data = fresh(tiny_test_models)
    engine = build_engine(models, monkeypatch, sleep=False)
    trainer = Trainer(cfg, make("rloo"), models, data.sft_train, Budget())
    trainer.engine = engine
    line = trainer.iteration(1)
    assert engine.llm.sleeps == 0 and not engine.llm.kwargs["enable_sleep_mode"]
    assert line["rollout/logprob_drift_max"] < 1e-4


def test_a_sync_that_misses_a_weight_fails(tiny_test_models, fake_vllm, monkeypatch):
    _, models, _ = fresh(tiny_test_models)
    engine = build_engine(models, monkeypatch)
    engine.llm.model.hf.register_parameter("extra", torch.nn.Parameter(torch.zeros(1)))  # a weight never sent
    with pytest.raises(RuntimeError, match="did not send: \\['extra'\\]"):
        engine.sync(models.policy)


def test_lora_is_merged_out_of_place_and_the_bf16_base_is_left_untouched(harness_cache, fake_vllm, monkeypatch):
    """PEFT's merge_adapter + unmerge_adapter rounds a bf16 base twice per sync, so the frozen base would drift;
    the engine sends base + B A in new tensors and the policy's weights stay bit for bit."""
    from harness.app.config import resolve
    from harness.core.vllm_engine import named_weights

    cfg = resolve("tiny-test", {"model": {"cache_dir": harness_cache, "lora": {"r": 4, "alpha": 8},
                                          "frozen_dtype": "bfloat16", "reference": "adapter_disabled"}})
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in models.policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B starts at 0: make the adapter change the weights
    before = {n: p.clone() for n, p in models.policy.named_parameters()}
    sent = dict(named_weights(models.policy))
    assert all(torch.equal(before[n], p) for n, p in models.policy.named_parameters())  # untouched, bit for bit
    assert not any("lora_" in n or n.startswith("base_model") or "base_layer" in n for n in sent)
    layer = models.policy.get_submodule("base_model.model.gpt_neox.layers.0.attention.query_key_value")
    expected = (layer.base_layer.weight.float() + layer.get_delta_weight("default").float()).to(torch.bfloat16)
    got = sent["gpt_neox.layers.0.attention.query_key_value.weight"]
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)
    assert not torch.equal(got, layer.base_layer.weight)
    x = torch.randn(3, layer.in_features)  # the merged weight computes what the adapter-wrapped layer computes
    assert torch.allclose(x @ got.float().T + layer.base_layer.bias.float(), layer(x.bfloat16()).float(), atol=0.1)
    engine = build_engine(models, monkeypatch)
    engine.sync(models.policy)  # the stand-in loads exactly the checkpoint's names (an unknown one would raise)
    assert not engine.asleep


def test_tied_weights_go_once_and_fsdp_shards_whole():
    """A tied head is the embedding (vLLM ties its own head); an FSDP2 parameter (DTensor) is gathered first."""
    import torch.distributed as dist
    from torch.distributed.tensor import DeviceMesh, Shard, distribute_tensor
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.core.vllm_engine import named_weights

    tied = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
    names = [n for n, _ in named_weights(tied)]
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names and len(names) == len(set(names))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        full = torch.randn(6, 4)
        module = torch.nn.Linear(4, 6, bias=False)
        module.weight = torch.nn.Parameter(distribute_tensor(full, DeviceMesh("cpu", [0]), [Shard(0)]))
        (name, sent), = named_weights(module)
        assert name == "weight" and type(sent) is torch.Tensor and torch.equal(sent, full)
    finally:
        dist.destroy_process_group()


# --- the names and signatures the engine uses, against vLLM's own source ------------------------------------------

def vllm_source():
    """A reader of vLLM's source files: $HARNESS_VLLM_WHEEL (the wheel, or a folder it was unzipped to), else the
    first .whl/vllm-*.whl of the repository (where docs/bench.md's download command puts it)."""
    import os
    import zipfile
    from pathlib import Path

    path = os.environ.get("HARNESS_VLLM_WHEEL") or next(
        iter(sorted((Path(__file__).parents[1] / ".whl").glob("vllm-*.whl"))), None)
    if not path:
        pytest.skip("no vLLM wheel: `pip download --no-deps vllm==0.33.0 -d .whl` (or set HARNESS_VLLM_WHEEL)")
    path = Path(path)
    if path.is_dir():
        return lambda rel: (path / rel).read_text(), path.name
    wheel = zipfile.ZipFile(path)
    return lambda rel: wheel.read(rel).decode(), path.name


def _class(source: str, name: str):
    import ast

    found = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == name]
    assert found, f"class {name} not in the source"
    return found[0]


def _method(cls, name: str):
    import ast

    found = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert found, f"{cls.name}.{name} not in the source"
    a = found[0].args
    positional = [x.arg for x in a.posonlyargs + a.args][1:]  # without self
    return positional, set(positional) | {x.arg for x in a.kwonlyargs}, a.kwarg is not None


def _fields(cls) -> set[str]:
    import ast

    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def test_the_engines_calls_match_vllms_source(tiny_test_models, fake_vllm, monkeypatch):
    """Runs the engine against the stand-in, then checks every call it made (method, positional count, keyword
    names), every SamplingParams keyword and every output attribute it read against the wheel's classes."""
    import re

    read, wheel = vllm_source()
    cfg, models, data = fresh(tiny_test_models)
    engine = build_engine(models, monkeypatch)
    trainer = Trainer(cfg, make("rebel"), models, data.sft_train, Budget())
    trainer.engine = engine
    trainer.iteration(1)
    llm = fake_vllm.built[0]

    exported = read("vllm/__init__.py")
    assert '"LLM": ".entrypoints.llm:LLM"' in exported
    assert '"SamplingParams": ".sampling_params:SamplingParams"' in exported
    llm_cls = _class(read("vllm/entrypoints/llm.py"), "LLM")
    engine_args = _fields(_class(read("vllm/engine/arg_utils.py"), "EngineArgs"))
    used = {name for name, _, _ in llm.calls}
    assert used == {"__init__", "sleep", "wake_up", "apply_model", "reset_prefix_cache", "generate"}
    for name, n_positional, keywords in llm.calls:
        positional, named, varkw = _method(llm_cls, name)
        assert n_positional <= len(positional), (wheel, name)
        unknown = set(keywords) - named
        if name == "__init__":  # LLM(**kwargs) goes on to EngineArgs(**kwargs)
            assert varkw and unknown <= engine_args, (wheel, unknown - engine_args)
        else:
            assert not unknown, (wheel, name, unknown)
    prompt_keys = {k for prompt in llm.requests[0][0] for k in prompt}
    assert prompt_keys <= _fields(_class(read("vllm/inputs/llm.py"), "TokensPrompt")), prompt_keys
    sampling = _fields(_class(read("vllm/sampling_params.py"), "SamplingParams"))
    assert set(fake_vllm.sampling[0]) <= sampling, set(fake_vllm.sampling[0]) - sampling
    outputs = read("vllm/outputs.py")
    have = {"CompletionOutput": _fields(_class(outputs, "CompletionOutput")),
            "RequestOutput": set(re.findall(r"self\.(\w+) = ", outputs[outputs.index("class RequestOutput"):])),
            "Logprob": _fields(_class(read("vllm/logprobs.py"), "Logprob"))}
    assert llm.read and all(attr in have[cls] for cls, attr in llm.read), llm.read
    # the values the engine passes are ones vLLM accepts
    model_cfg = read("vllm/config/model.py")
    assert re.search(r'LogprobsMode = Literal\[[^\]]*"processed_logprobs"', model_cfg)
    assert '"external_launcher"' in read("vllm/config/parallel.py")
    assert 'DEFERRABLE_TAGS: tuple[str, ...] = ("weights", "kv_cache")' in read("vllm/device_allocator/__init__.py")
    # apply_model runs func(model) on the worker, in this process with external_launcher (no pickling)
    worker = read("vllm/v1/worker/worker_base.py")
    assert "return fn(self.get_model())" in worker
    assert 'os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"' in read("vllm/config/parallel.py")
    # the launcher's variables the executor reads are the ones the engine sets
    executor = read("vllm/v1/executor/uniproc_executor.py")
    launcher = executor[executor.index("class ExecutorWithExternalLauncher"):]
    needed = set(re.findall(r'os\.environ\["(\w+)"\]', launcher)) | set(re.findall(r"- (\w+)\n", launcher))
    assert needed and needed <= set(LAUNCHER_ENV), needed
    # the model's loader takes (name, tensor) pairs and returns the loaded names (the transformers backend, which
    # runs GPT-NeoX in 0.33)
    assert '"GPTNeoXForCausalLM": ("transformers", "TransformersForCausalLM")' in read(
        "vllm/model_executor/models/registry.py")
    base = read("vllm/model_executor/models/transformers/base.py")
    assert "def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:" in base
