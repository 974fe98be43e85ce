"""`harness build-start` end to end on a local GPT-NeoX stand-in: SFT and reward model through TRL's trainers,
the bias that centres the references, loading through harness.core.models, and the one-line refusals offline."""
import math

import pytest
import torch

from harness.cli import main
from harness.core.settings import ModelSettings
from harness.core.models import load_models, load_tokenizer
from harness.core.scoring import reward_scores
from harness.app.starting_point import (StartSettings, build, preference_dataset, settings_for, sft_args, sft_dataset,
                                     sft_trainer, use_line)
from harness.tasks import synthetic
from harness.tasks.tldr import example_from_row
from harness.core.examples import TaskData
from harness.core.tokens import encode_responses, left_pad

EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A random tiny GPTNeoXForCausalLM with a byte-level BPE tokenizer that, like Pythia's, has an EOS and no pad
    token (load_tokenizer adds [PAD] into the spare embedding rows), and a handful of synthetic TL;DR rows."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    rows = synthetic.generate(48, seed=11)
    sft = [example_from_row(r, "stand-in", "sft") for r in rows]
    pref = [example_from_row(r, "stand-in", "preference") for r in rows]
    data = TaskData(source="stand-in", sft_train=sft[:16], sft_eval=sft[40:48], pref_train=pref[16:32],
                    pref_eval=pref[32:40])
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([ex.prompt + ex.reference + ex.chosen + ex.rejected for ex in sft], vocab_size=600,
                            special_tokens=[EOS], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS)
    base = tmp_path_factory.mktemp("stand-in") / "base"
    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=len(tok) + 8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=256, eos_token_id=tok.eos_token_id,
                           bos_token_id=tok.eos_token_id)
    GPTNeoXForCausalLM(config).save_pretrained(base)
    tok.save_pretrained(base)
    return base, data


def _settings(base, **kw):
    return StartSettings(base_model=str(base), lr=3e-3, batch_size=4, micro_batch_size=2, epochs=4,
                         max_prompt_tokens=96, sft_response_tokens=32, rm_response_tokens=32, eval_rows=16,
                         precision="fp32", logging_steps=1, **kw)


def test_rows_are_prompt_then_response_and_one_eos(stand_in):
    """SFT rows: prompt ids + " summary" ids + one EOS, the loss mask over the response; pairs alike."""
    base, data = stand_in
    tok = load_tokenizer(str(base))
    s = _settings(base)
    ex = data.sft_train[0]
    prompt = ex.encode_prompt(tok, 96)
    response = tok.encode(ex.reference, add_special_tokens=False)[:31] + [tok.eos_token_id]
    row = sft_dataset([ex], tok, s)[0]
    assert row["input_ids"] == prompt + response
    assert row["completion_mask"] == [0] * len(prompt) + [1] * len(response)
    assert ex.reference.startswith(" ") and row["input_ids"].count(tok.eos_token_id) == 1
    pair = preference_dataset([data.pref_train[0]], tok, s)[0]
    for key, text in (("chosen_ids", data.pref_train[0].chosen), ("rejected_ids", data.pref_train[0].rejected)):
        p = data.pref_train[0].encode_prompt(tok, 96)
        assert pair[key] == p + (tok.encode(text, add_special_tokens=False) + [tok.eos_token_id])[:32]


@pytest.mark.parametrize("loss", ["full", "response"])
def test_sft_loss_covers_what_the_setting_says(stand_in, tmp_path, loss):
    """full (both authors' codes): every token of prompt + response is a label; response: the prompt is -100."""
    from transformers import AutoModelForCausalLM

    base, data = stand_in
    tok = load_tokenizer(str(base))
    s = _settings(base, sft_loss=loss)
    trainer = sft_trainer(s, AutoModelForCausalLM.from_pretrained(base), tok, data.sft_train[:2],
                          sft_args(s, tmp_path / "w"))
    assert not trainer.args.activation_checkpointing and trainer.args.max_grad_norm == 0  # as both scripts
    assert trainer.args.gradient_accumulation_steps == 2 and trainer.args.lr_scheduler_type == "cosine"
    row = trainer.train_dataset[0]
    n_prompt = len(data.sft_train[0].encode_prompt(tok, 96))
    expect = row["input_ids"] if loss == "full" else [-100] * n_prompt + row["input_ids"][n_prompt:]
    assert row["labels"] == expect


def test_build_trains_sft_and_reward_model_that_the_harness_loads(stand_in, tmp_path):
    base, data = stand_in
    out = tmp_path / "start"
    info = build(_settings(base), data, out, log=lambda *a: None)
    # SFT: 16 rows / 4 per step x 4 epochs; the training loss and the held-out response loss both fall
    assert info["sft_steps"] == 16 and info["sft_train_loss_last"] < info["sft_train_loss_first"]
    assert info["sft_eval_loss"] < info["sft_eval_loss_before"]
    # RM: pair accuracy on its training pairs well above chance
    assert info["rm_steps"] == 16 and info["rm_train_pair_accuracy"] >= 0.75, info
    assert (out / "build_info.json").exists() and use_line(out) == (
        f"--set model.policy={out / 'sft'} --set model.reward_model={out / 'reward'}")

    models = load_models(ModelSettings(policy=str(out / "sft"), reward_model=str(out / "reward")))
    tok, rm = models.tokenizer, models.reward_model
    assert tok.pad_token == "[PAD]" and tok.pad_token_id != tok.eos_token_id
    assert rm.config.reward_bias == pytest.approx(info["reward_bias"])
    # the bias by hand: each reference alone, unpadded, raw score at its last token (EOS)
    raw = []
    with torch.no_grad():
        for ex in data.sft_train:
            ids = ex.encode_prompt(tok, 96) + tok.encode(ex.reference, add_special_tokens=False) + [tok.eos_token_id]
            assert len(ids) - len(ex.encode_prompt(tok, 96)) <= 32  # every reference keeps its EOS here
            raw.append(rm(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids))).logits[0, 0].item())
    assert info["reward_bias"] == pytest.approx(sum(raw) / len(raw), abs=1e-5)
    # ... so the harness's scores of those references average 0
    q = left_pad([ex.encode_prompt(tok, 96) for ex in data.sft_train], tok.pad_token_id)
    r, m = encode_responses([ex.reference for ex in data.sft_train], tok, 32, tok.eos_token_id, tok.pad_token_id)
    assert abs(reward_scores(rm, q, r, m, tok.pad_token_id).mean().item()) < 1e-4
    # a second build into the same directory refuses instead of overwriting
    with pytest.raises(Exception, match="already holds"):
        build(_settings(base), data, out, log=lambda *a: None)


def test_defaults_are_the_authors_recipe():
    s, source = settings_for("tldr-pythia-1.4b")
    assert (s.base_model, s.lr, s.batch_size, s.epochs, s.warmup_steps) == ("EleutherAI/pythia-1.4b-deduped", 3e-6,
                                                                            64, 1.0, 0)
    assert (s.lr_scheduler, s.adam_eps, s.sft_loss, s.rm_train_rows) == ("cosine", 1e-5, "full", 92832)
    assert (s.max_prompt_tokens, s.sft_response_tokens, s.rm_response_tokens) == (512, 53, 169)
    assert settings_for("tldr-pythia-2.8b")[0].base_model == "EleutherAI/pythia-2.8b-deduped"
    assert settings_for("tldr-pythia-1.4b", {"lr_scheduler": "linear"})[0].lr_scheduler == "linear"


def test_reward_head_starts_from_the_authors_init(stand_in, tmp_path, monkeypatch):
    """The reward head is drawn with std 1/sqrt(hidden + 1) (the authors' init; 0.02209 at 1.4B's width 2048):
    the draw is intercepted in the real build path, on the stand-in's width 32, before any training."""
    from harness.app import starting_point

    base, data = stand_in
    drawn, real_normal_ = [], torch.nn.init.normal_

    class Drawn(Exception):
        pass

    def normal_(tensor, mean=0.0, std=1.0, *args, **kwargs):
        drawn.append((tuple(tensor.shape), std))
        return real_normal_(tensor, mean, std, *args, **kwargs)

    def stop(*a, **k):  # the step after the head's draw: no training
        raise Drawn

    monkeypatch.setattr(torch.nn.init, "normal_", normal_)
    monkeypatch.setattr(starting_point, "fit_vocab", stop)
    with pytest.raises(Drawn):
        starting_point.train_reward_model(_settings(base), data, load_tokenizer(str(base)), base, tmp_path / "rm",
                                          log=lambda *a: None)
    assert drawn[-1] == ((1, 32), pytest.approx(1 / math.sqrt(33)))  # the last draw: the head, 1 x width


def _cli(capsys, *argv):
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in argv])
    return done.value.code, capsys.readouterr().err.strip().splitlines()


def test_offline_refusals_are_one_line(stand_in, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base, _ = stand_in
    code, err = _cli(capsys, "build-start", "--preset", "tldr-pythia-1.4b", "--out", tmp_path / "a")
    assert code == 2 and len(err) == 1 and "base model 'EleutherAI/pythia-1.4b-deduped'" in err[0], err
    code, err = _cli(capsys, "build-start", "--out", tmp_path / "b", "--set", f"base_model={base}")
    assert code == 2 and len(err) == 1 and "cleanrl/summarize_from_feedback_tldr_3_filtered" in err[0], err
    assert "harness prepare --preset tldr-pythia-1.4b" in err[0], err
    code, err = _cli(capsys, "build-start", "--preset", "chat-openchat-3.5-nectar", "--out", tmp_path / "c")
    assert code == 2 and len(err) == 1 and "TL;DR starting points" in err[0], err
    code, err = _cli(capsys, "build-start", "--out", tmp_path / "d", "--set", "lr_scheduler=step")
    assert code == 2 and len(err) == 1 and "lr_scheduler" in err[0], err
    code, err = _cli(capsys, "build-start", "--out", tmp_path / "e", "--set", "batch_size=63")
    assert code == 2 and len(err) == 1 and "not a multiple of micro_batch_size" in err[0], err
    assert not any((tmp_path / n).exists() for n in "abcde")
