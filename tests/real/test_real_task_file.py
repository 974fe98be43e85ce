"""A conversational prompt-only file in TRL's format trains GRPO through the chat template of a real chat model
(SmolLM2-135M-Instruct), with a reward function from the same folder (issue 28)."""
from __future__ import annotations

import json

import pytest

from harness.app.config import resolve
from harness.core.store import read_jsonl

QUESTIONS = ["Name one fruit that is yellow.", "What is two plus two?", "Say hello to a friend.", "Which animal barks?",
             "Name a colour.", "What do bees make?"]

REWARD_PY = '''\
import json
from pathlib import Path

def short_answer(prompts, completions, **kwargs):
    """Shorter answers score higher; records what it was given, to check TRL's conversational form."""
    Path(__file__).with_name("seen.jsonl").open("a").write(json.dumps({"prompt": prompts[0],
                                                                      "completion": completions[0]}) + "\\n")
    return [-len(c[0]["content"].split()) / 10 for c in completions]
'''


def test_a_conversational_file_trains_grpo_through_the_chat_template(smollm2_dir, tmp_path):
    from harness import tasks
    from harness.app.runner import run
    from harness.core.models import load_models
    from harness.tasks import resolve_paths

    folder = tmp_path / "chat_task"
    folder.mkdir()
    rows = [{"prompt": [{"role": "user", "content": q}], "topic": i} for i, q in enumerate(QUESTIONS)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "rewards.py").write_text(REWARD_PY)
    (folder / "task.yaml").write_text(f"name: short-chat\ndataset: {{path: prompts.jsonl, eval_size: 2}}\n"
                                      f"reward: [{{function: 'rewards.py:short_answer'}}]\n"
                                      f"models: {{policy: {smollm2_dir}}}\nevaluation: {{size: 1, samples: 1}}\n")
    cfg = resolve("tiny-test", {
        "algo": "grpo", "task": {"name": str(folder / "task.yaml"), "max_prompt_tokens": 96},
        "model": {"trainable_layers": 1}, "generation": {"max_new_tokens": 8, "temperature": 0.7},
        "train": {"iterations": 1, "prompts_per_iteration": 2, "checkpoint_every": 0, "lr": 1e-5},
        "eval": {"temperature": 0.7}, "output_dir": str(tmp_path / "runs"), "run_id": "chat"})
    assert cfg.model.policy == str(smollm2_dir) and cfg.task.name == "short-chat"
    # the prompt is the model's own chat template over the row's messages, not the plain rendering
    _, data = tasks.get(cfg.task.name).load("auto")
    models = load_models(cfg.model, resolve_paths(cfg.model, log=lambda *a: None, needs_reward_model=False))
    text = models.tokenizer.decode(data.sft_train[0].encode_prompt(models.tokenizer, 96))
    assert text.startswith("<|im_start|>system") and text.endswith(
        f"<|im_start|>user\n{QUESTIONS[0]}<|im_end|>\n<|im_start|>assistant\n")

    run_dir = run(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"] == "short-chat" and summary["suite"] == "reward" and summary["budget"]["responses"] == 8
    assert summary["eval"]["n"] == 1 and summary["eval"]["samples_per_prompt"] == 1
    seen, _ = read_jsonl(folder / "seen.jsonl")
    # TRL's conversational form: the prompt as messages, the completion as one assistant message
    assert all(isinstance(s["prompt"], list) and s["prompt"][0]["role"] == "user" for s in seen)
    assert all(s["completion"][0]["role"] == "assistant" and isinstance(s["completion"][0]["content"], str)
               for s in seen)
    samples, _ = read_jsonl(run_dir / "samples.jsonl")
    for s in samples:
        assert s["reward"] == pytest.approx(-len(s["response"].split()) / 10) and "topic" in s
