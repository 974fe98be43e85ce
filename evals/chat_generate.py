"""Answers for the chat suites (AlpacaEval, MT-Bench) from a model directory or hub name, through its chat template.

Plain HF `generate`, not the training rollout: the chat suites judge a finished model on open-ended instructions, so
they need the model's own chat format and an early stop at EOS, not the fixed-length sampling the optimizers share.
Greedy by default (temperature 0), so a re-run gives the same answers and hits the judge's cache.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.core.errors import UserError


def load_chat_model(name_or_path: str | Path, device: str | None = None):
    """(model, tokenizer) in eval mode; refuses a tokenizer without a chat template rather than guessing one."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if not tokenizer.chat_template:
        raise UserError(f"{name_or_path} has no chat template: the chat suites need an instruction-tuned model")
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype="auto").to(device).eval()
    return model, tokenizer


class ChatGenerator:
    """`generate(messages_list) -> answers`: one assistant reply per conversation, batched, left-padded."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 1024, temperature: float = 0.0, batch_size: int = 8):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature, self.batch_size = max_new_tokens, temperature, batch_size
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly

    @torch.no_grad()
    def __call__(self, messages_list: list[list[dict]]) -> list[str]:
        answers = []
        for start in range(0, len(messages_list), self.batch_size):
            batch = messages_list[start:start + self.batch_size]
            texts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
            # the template already holds any BOS/special tokens it needs
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            inputs = inputs.to(self.model.device)
            sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else \
                {"do_sample": False}
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id, **sampling)
            new_tokens = out[:, inputs["input_ids"].shape[1]:]
            answers += [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        return answers


def chat_generator(name_or_path: str | Path, device: str | None = None, **kwargs) -> ChatGenerator:
    model, tokenizer = load_chat_model(name_or_path, device)
    return ChatGenerator(model, tokenizer, **kwargs)
