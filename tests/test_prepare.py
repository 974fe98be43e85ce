"""`harness prepare`: the assets of each paper preset, the libraries' download calls (no hub here: they are replaced
by stand-ins that record their arguments and write what the real calls would, in the libraries' cache layouts, so
the real offline lookups find it), the manifest, and `harness run` refusing a paper preset offline in one line."""
from __future__ import annotations

import json

import pytest

from harness.core import assets
from harness.app import catalogue, fetch
from harness.cli import main
from harness.app.config import resolve
from harness.core.errors import UserError
from harness.core.store import read_json, write_json
from tests.evals.test_offline import cache_dataset

SFT = "cleanrl/summarize_from_feedback_tldr_3_filtered_oai_preprocessing_1704563162"  # the presets' task.dataset
PREF = "vwxyzjn/summarize_from_feedback_oai_preprocessing_1706381144"
TLDR_DATA = [("tldr SFT prompts and references", "dataset", SFT, ("train", "validation", "test")),
             ("tldr preference pairs", "dataset", PREF, ("train", "validation"))]
PRESETS = {
    "tldr-pythia-1.4b": [("policy", "local", resolve("tldr-pythia-1.4b").model.policy, ()),  # build-start's
                         ("reward model", "local", resolve("tldr-pythia-1.4b").model.reward_model, ()),
                         ("base model (build-start)", "model", "EleutherAI/pythia-1.4b-deduped", ())] + TLDR_DATA,
    **{f"tldr-pythia-{size}": [("policy", "model", f"vwxyzjn/EleutherAI_pythia-{size}-deduped__sft__tldr", ()),
                               ("reward model", "model", f"vwxyzjn/EleutherAI_pythia-{size}-deduped__reward__tldr", ())]
       + TLDR_DATA for size in ("2.8b", "6.9b")},
    "chat-llama3-8b-ultrafeedback": [("policy", "model", "meta-llama/Meta-Llama-3-8B-Instruct", ()),
                                     ("reward model", "model", "sfairXC/FsfairX-LLaMA3-RM-v0.1", ()),
                                     ("chat prompts", "dataset", "HuggingFaceH4/ultrafeedback_binarized",
                                      ("train_prefs", "test_prefs"))],
    "chat-openchat-3.5-nectar": [("policy", "model", "openchat/openchat_3.5", ()),
                                 ("reward model", "model", "berkeley-nest/Starling-RM-7B-alpha", ()),
                                 ("chat prompts", "dataset", "berkeley-nest/Nectar", ("train",))],
}


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty standard caches and the hub offline, as on a compute node before `prepare` ran."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf"


def prepare(*argv) -> int:
    with pytest.raises(SystemExit) as done:
        main(["prepare", *map(str, argv)])
    return done.value.code or 0


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_dry_run_lists_each_paper_presets_assets(preset, empty_caches, capsys):
    from harness.commands.prepare import resolve_assets

    found = [(a.role, a.kind, a.name, a.splits) for a in resolve_assets(None, preset, [], [], [])]
    assert found == PRESETS[preset]
    assert prepare("--preset", preset, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "dry run: nothing fetched" in out and "fetched\n" not in out
    for role, kind, name, splits in PRESETS[preset]:
        assert name in out and (", ".join(splits) in out)
    assert out.count("missing") == len(PRESETS[preset])  # one status per asset
    if preset == "tldr-pythia-1.4b":  # the local starting point says how to build it
        assert "build it with `python -m harness build-start --preset tldr-pythia-1.4b`" in out


def test_suites_list_the_evaluation_assets(empty_caches):
    from evals.chat import chat_assets
    from evals.open_llm import open_llm_assets

    chat = [(a.role, a.kind, a.name, a.filename, a.splits) for a in chat_assets()]
    assert chat == [("AlpacaEval reference outputs", "file", "tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline.json",
                     ()), ("AlpacaEval LC weights", "file", "tatsu-lab/alpaca_eval", "df_gamed.csv", ()),
                    ("MT-Bench questions and reference answers", "dataset", "HuggingFaceH4/mt_bench_prompts", None,
                     ("train",))]
    found = open_llm_assets()
    # read from lm-eval's own task YAMLs (its groups expanded): one row per data set config
    assert {(a.name, a.config, a.splits) for a in found if "mmlu" not in a.role} == {
        ("allenai/ai2_arc", "ARC-Challenge", ("train", "validation", "test")),
        ("Rowan/hellaswag", None, ("train", "validation")),
        ("truthfulqa/truthful_qa", "multiple_choice", ("validation",)),
        ("allenai/winogrande", "winogrande_xl", ("train", "validation")),
        ("openai/gsm8k", "main", ("train", "test"))}
    mmlu = [a for a in found if "mmlu" in a.role]
    assert len(mmlu) == 57 and {a.name for a in mmlu} == {"cais/mmlu"}  # the 57 subjects, each its own config
    assert all(a.splits == ("test", "dev") for a in mmlu) and "abstract_algebra" in {a.config for a in mmlu}


class FakeHub:
    """snapshot_download / hf_hub_download / datasets.load_dataset stand-ins: record the call, write the result in
    the library's cache layout (tiny files), return what the real call returns."""
    SPLITS = {SFT: ("train", "validation", "test"), PREF: ("train", "validation", "validation_cnndm"),
              "HuggingFaceH4/mt_bench_prompts": ("train",), "allenai/ai2_arc": ("train", "validation", "test")}

    def __init__(self, tmp_path):
        self.tmp, self.calls = tmp_path, []

    @staticmethod
    def snapshot(cache_dir, kind, repo_id):
        repo = f"{kind}s--{repo_id.replace('/', '--')}"
        commit = "1" * 40
        (cache_dir / repo / "refs").mkdir(parents=True, exist_ok=True)
        (cache_dir / repo / "refs" / "main").write_text(commit)
        path = cache_dir / repo / "snapshots" / commit
        path.mkdir(parents=True, exist_ok=True)
        return path

    def snapshot_download(self, repo_id, *, cache_dir=None, local_files_only=False, ignore_patterns=None, **kw):
        from huggingface_hub import _snapshot_download

        if local_files_only:  # the real offline lookup
            return _snapshot_download.snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True)
        self.calls.append(("snapshot_download", repo_id, {"cache_dir": cache_dir, "ignore_patterns": ignore_patterns,
                                                          **kw}))
        path = self.snapshot(__import__("pathlib").Path(cache_dir), "model", repo_id)
        (path / "config.json").write_text("{}")
        (path / "model.safetensors").write_bytes(b"\0" * 2048)
        return str(path)

    def hf_hub_download(self, repo_id, filename, *, repo_type=None, cache_dir=None, **kw):
        self.calls.append(("hf_hub_download", repo_id, {"filename": filename, "repo_type": repo_type,
                                                        "cache_dir": cache_dir, **kw}))
        path = self.snapshot(__import__("pathlib").Path(cache_dir), repo_type, repo_id) / filename
        path.write_text("x" * 100)
        return str(path)

    def load_dataset(self, path, name=None, *, cache_dir=None, **kw):
        self.calls.append(("load_dataset", path, {"name": name, "cache_dir": cache_dir, **kw}))
        files = {}
        for split in self.SPLITS[path]:
            f = self.tmp / f"{path.replace('/', '_')}-{split}.jsonl"
            f.write_text(json.dumps({"text": split}) + "\n")
            files[split] = f
        cache_dataset(__import__("pathlib").Path(cache_dir), path, name, files)
        return dict.fromkeys(files)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    hub = FakeHub(tmp_path)
    for module, name in ((huggingface_hub, "snapshot_download"), (huggingface_hub, "hf_hub_download"),
                         (datasets, "load_dataset")):
        monkeypatch.setattr(module, name, getattr(hub, name))
    return hub


def test_prepare_fetches_with_the_libraries_calls_and_writes_a_manifest(empty_caches, fake_hub, tmp_path, capsys,
                                                                        monkeypatch):
    out = tmp_path / "dl"
    assert prepare("--preset", "tldr-pythia-2.8b", "--suite", "chat", "--suite", "open-llm", "--tasks",
                   "arc_challenge", "--dir", out) == 0
    hub, data = str(out / "hub"), str(out / "datasets")
    assert fake_hub.calls == [
        ("snapshot_download", "vwxyzjn/EleutherAI_pythia-2.8b-deduped__sft__tldr",
         {"cache_dir": hub, "ignore_patterns": fetch.SKIP_WEIGHTS}),
        ("snapshot_download", "vwxyzjn/EleutherAI_pythia-2.8b-deduped__reward__tldr",
         {"cache_dir": hub, "ignore_patterns": fetch.SKIP_WEIGHTS}),
        ("load_dataset", SFT, {"name": None, "cache_dir": data}),
        ("load_dataset", PREF, {"name": None, "cache_dir": data}),
        ("hf_hub_download", "tatsu-lab/alpaca_eval", {"filename": "alpaca_eval_gpt4_baseline.json",
                                                      "repo_type": "dataset", "cache_dir": hub}),
        ("hf_hub_download", "tatsu-lab/alpaca_eval", {"filename": "df_gamed.csv", "repo_type": "dataset",
                                                      "cache_dir": hub}),
        ("load_dataset", "HuggingFaceH4/mt_bench_prompts", {"name": None, "cache_dir": data}),
        ("load_dataset", "allenai/ai2_arc", {"name": "ARC-Challenge", "cache_dir": data})]
    manifest = read_json(out / "manifest.json")
    assert [r["status"] for r in manifest["assets"]] == ["fetched"] * 8
    assert all(r["path"].startswith(str(out)) and r["bytes"] > 0 for r in manifest["assets"])
    assert manifest["offline_env"] == f"export HF_HOME={out.resolve()} HF_HUB_OFFLINE=1"
    text = capsys.readouterr().out
    assert "2.0 KB" in text and f"offline from here on: export HF_HOME={out.resolve()}" in text

    # the real offline lookups find every asset where the libraries put it: a second prepare fetches nothing
    fake_hub.calls.clear()
    assert prepare("--preset", "tldr-pythia-2.8b", "--suite", "chat", "--suite", "open-llm", "--tasks",
                   "arc_challenge", "--dir", out, "--dry-run") == 0
    assert fake_hub.calls == [] and capsys.readouterr().out.count("present") == 8
    # and `harness run`'s preflight passes once HF_HOME points there
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", hub)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", data)
    catalogue.preflight_run(resolve("tldr-pythia-2.8b"), log=pytest.fail)


def test_a_split_the_hub_lacks_is_one_line(empty_caches, fake_hub, tmp_path):
    asset = assets.Asset("data", "dataset", "allenai/ai2_arc", config="ARC-Challenge", splits=("dev",))
    with pytest.raises(UserError, match=r"allenai/ai2_arc\[ARC-Challenge\] \(dev\): the hub data set has no split "
                                        r"'dev' \(it has: train, validation, test\)"):
        fetch.fetch(asset, assets.Caches.under(tmp_path / "dl"))


def test_prepare_reads_a_run_directory(empty_caches, tmp_path, capsys):
    cfg = resolve("tldr-pythia-6.9b")
    write_json(tmp_path / "run" / "config.json", {**cfg.model_dump(), "config_hash": "abc", "code_version": "x"})
    assert prepare(tmp_path / "run", "--dry-run") == 0
    out = capsys.readouterr().out
    assert all(name in out for _, _, name, _ in PRESETS["tldr-pythia-6.9b"])


@pytest.mark.parametrize("argv,message", [
    ([], "say what to prepare: --preset NAME, --suite NAME, --model NAME or a run directory"),
    (["--suite", "bleu"], "unknown suite 'bleu'; valid suites: tldr, math, reward, chat, open-llm"),
    (["nowhere", "--dry-run"], "no such run directory or config.json: nowhere"),
])
def test_bad_prepare_input_is_one_line(empty_caches, capsys, argv, message):
    assert prepare(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_a_paper_run_offline_is_one_line_naming_the_asset(empty_caches, tmp_path, capsys):
    def run(*argv):
        with pytest.raises(SystemExit) as done:
            main(["run", "--preset", "tldr-pythia-2.8b", "--output-dir", str(tmp_path / "runs"), *argv])
        assert done.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and sum(e.startswith("error") for e in err) == 1
        return err[-1]

    assert run() == ("error: policy vwxyzjn/EleutherAI_pythia-2.8b-deduped__sft__tldr is not in the local Hugging "
                     "Face cache (and 3 more) and HF_HUB_OFFLINE is set: fetch it first with `python -m harness "
                     "prepare --preset tldr-pythia-2.8b` where the hub is reachable (then HF_HUB_OFFLINE=1 works)")
    for role in ("sft", "reward"):  # the models present: the data set is named, never a synthetic fallback
        path = FakeHub.snapshot(empty_caches / "hub", "model", f"vwxyzjn/EleutherAI_pythia-2.8b-deduped__{role}__tldr")
        (path / "config.json").write_text("{}")
        (path / "model.safetensors").write_bytes(b"\0")
    line = run()
    assert line.startswith(f"error: tldr SFT prompts and references {SFT} (train, validation, test) is not in the "
                           f"local Hugging Face cache (and 1 more)")
    assert "`python -m harness prepare --preset tldr-pythia-2.8b`" in line
    line = run("--set", "model.reward_model=org/other-rm")  # an override is part of the prepare command
    assert "reward model org/other-rm" in line and \
        "`python -m harness prepare --preset tldr-pythia-2.8b --set model.reward_model=org/other-rm`" in line
    assert not (tmp_path / "runs").exists()  # refused before the run directory was made
