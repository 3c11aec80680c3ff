"""Tests for rl2llm.zoo: the book's small pretrained language models and their cache.

The claims, each with a test that would fail if it were wrong: a spec trains
deterministically (the same spec twice gives identical weights); the cache
trains once and then loads, under a key of its own for a custom spec; a
corrupt, partial or unfinished entry is detected and retrained, never loaded;
two concurrent builders train once; generation is batched with left padding
that changes nothing (a rotary model with position ids counted from the first
real token); the tokenizers add no special token and have a pad token; bad
input is refused with the argument's name. Tiny specs keep these fast; the
slow tests load the real zoo (``python -m rl2llm.zoo`` trains it) with
``transformers`` alone and with TRL, and check the quality the cards promise.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rl2llm import corpora, zoo  # noqa: E402

#: A model that trains in a second or two: enough to exercise every path.
TINY = dataclasses.replace(
    zoo.SPECS["arithmetic"], name="tiny", n_train=400, n_eval=24, hidden_size=16, n_layers=1, n_heads=2,
    intermediate_size=32, steps=12, batch_size=16, warmup=2, eval_every=6, n_eval_during=16, checkpoints=())


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_zoo_has_its_three_models_and_their_checkpoints():
    assert set(zoo.SPECS) >= {"stories", "arithmetic", "code"}
    assert zoo.checkpoints("arithmetic")[0] == "final" and "half-trained" in zoo.checkpoints("arithmetic")
    assert zoo.checkpoints("stories") == ["final"]
    assert zoo.checkpoints("arithmetic-gpt2") == ["final"] and zoo.CONTRASTS["arithmetic-gpt2"].architecture == "gpt2"
    assert zoo.SPECS["arithmetic"].tokenizer == "chars" and zoo.SPECS["stories"].tokenizer == "bpe"
    for spec in zoo.SPECS.values():
        assert json.loads(json.dumps(spec.as_dict()))["name"] == spec.name


def test_a_custom_spec_has_its_own_key_and_the_key_ignores_nothing():
    bpe = dataclasses.replace(zoo.SPECS["arithmetic"], tokenizer="bpe")
    assert zoo.key(bpe) != zoo.key("arithmetic")
    assert zoo.key(dataclasses.replace(zoo.SPECS["arithmetic"], seed=1)) != zoo.key("arithmetic")
    assert zoo.key(zoo.SPECS["arithmetic"]) == zoo.key("arithmetic")
    assert zoo.entry_dir(bpe, "/x").name.startswith("zoo-arithmetic-")


def test_corpus_options_are_kept_sorted_whatever_their_form():
    a = dataclasses.replace(TINY, corpus_options={"ops": "+", "digits": 2})
    b = dataclasses.replace(TINY, corpus_options=(("digits", 2), ("ops", "+")))
    assert a == b and a.options == {"digits": 2, "ops": "+"} and zoo.key(a) == zoo.key(b)


def test_training_is_deterministic(tmp_path):
    card_a = zoo.train(TINY, tmp_path / "a", show_progress=False)
    card_b = zoo.train(TINY, tmp_path / "b", show_progress=False)
    a = zoo._load_model(tmp_path / "a" / "final")
    b = zoo._load_model(tmp_path / "b" / "final")
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "two trainings of one spec gave different weights"
    assert card_a["history"] == card_b["history"]
    assert card_a["parameters"] == sum(p.numel() for p in a.parameters())


def test_load_trains_once_then_loads_from_the_cache(tmp_path, monkeypatch):
    zm = zoo.load(TINY, cache_dir=tmp_path, progress=False)
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    assert isinstance(zm.model, LlamaForCausalLM) and not zm.model.training
    assert isinstance(zm.tokenizer, PreTrainedTokenizerFast) and zm.tokenizer.pad_token is not None
    assert zm.path == zoo.entry_dir(TINY, tmp_path) / "final" and (zm.path / "config.json").is_file()
    assert zm.card["parameters"] > 0 and "exact_match" in zm.card["checkpoints"]["final"]
    assert zm.spec == TINY and zm.checkpoint == "final"

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model was trained again")
    monkeypatch.setattr(zoo, "train", no_training)
    start = time.perf_counter()
    again = zoo.load(TINY, cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - start < 5.0  # well under a second on an idle machine
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in zm.model.state_dict().items())


def test_the_cache_location_follows_RL2LLM_ARTIFACTS(tmp_path, monkeypatch):
    monkeypatch.setenv("RL2LLM_ARTIFACTS", str(tmp_path))
    assert zoo.entry_dir(TINY).parent == tmp_path


def _count_trainings(monkeypatch) -> list:
    calls = []
    real = zoo.train

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(zoo, "train", counting)
    return calls


def test_a_corrupt_entry_is_retrained_not_loaded(tmp_path, monkeypatch):
    folder = zoo.ensure(TINY, cache_dir=tmp_path, progress=False)
    weights = folder / "final" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte, same size
    weights.write_bytes(bytes(data))
    assert "differs from the manifest" in zoo.verify(folder)
    calls = _count_trainings(monkeypatch)
    zm = zoo.load(TINY, cache_dir=tmp_path, progress=False)
    assert calls == [1] and zoo.verify(folder) is None and zm.model is not None


@pytest.mark.parametrize("damage", ["no manifest", "missing file", "extra file", "bad manifest"])
def test_a_partial_entry_is_retrained(tmp_path, monkeypatch, damage):
    folder = zoo.ensure(TINY, cache_dir=tmp_path, progress=False)
    if damage == "no manifest":
        (folder / "MANIFEST.json").unlink()
    elif damage == "missing file":
        (folder / "final" / "tokenizer.json").unlink()
    elif damage == "extra file":
        (folder / "final" / "stray.bin").write_bytes(b"x")
    else:
        (folder / "MANIFEST.json").write_text("{not json")
    assert zoo.verify(folder) is not None
    calls = _count_trainings(monkeypatch)
    zoo.ensure(TINY, cache_dir=tmp_path, progress=False)
    assert calls == [1] and zoo.verify(folder) is None


def test_an_empty_folder_is_not_an_entry(tmp_path):
    folder = zoo.entry_dir(TINY, tmp_path)
    folder.mkdir(parents=True)
    assert "no manifest" in zoo.verify(folder)


def test_concurrent_builders_train_once(tmp_path, monkeypatch):
    # Builders are processes; here they are threads of one process, which also tests that the zoo is
    # thread-safe (Python 3.11's ast.parse is not: provenance takes turns). Train once elsewhere first,
    # so that what training imports lazily (transformers, tokenizers) is imported before the threads start.
    zoo.ensure(TINY, cache_dir=tmp_path / "warm-up", progress=False)
    calls = _count_trainings(monkeypatch)
    errors, folders = [], []

    def build():
        try:
            folders.append(zoo.ensure(TINY, cache_dir=tmp_path, progress=False))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)
    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and calls == [1] and len(set(folders)) == 1
    assert zoo.verify(folders[0]) is None
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".trash-" in p.name]


def test_a_failed_training_leaves_no_entry(tmp_path, monkeypatch):
    def broken(spec, out_dir, **kwargs):
        (out_dir / "final").mkdir(parents=True)
        raise RuntimeError("interrupted")
    monkeypatch.setattr(zoo, "train", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        zoo.ensure(TINY, cache_dir=tmp_path, progress=False)
    assert zoo.verify(zoo.entry_dir(TINY, tmp_path)) is not None
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------- tokenizers and generation


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return zoo.load(TINY, cache_dir=tmp_path_factory.mktemp("zoo"), progress=False)


def test_the_chars_tokenizer_is_one_token_per_character_with_no_special_tokens(tiny):
    tok = tiny.tokenizer
    ids = tok("07+35=042")["input_ids"]
    assert len(ids) == 9 and tok.decode(ids) == "07+35=042"
    assert tok.eos_token == zoo.EOS and tok.pad_token == zoo.PAD and tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    assert tok.apply_chat_template([{"role": "user", "content": "07+35="}], tokenize=False) == "07+35="


def test_the_bpe_tokenizer_round_trips_and_adds_nothing():
    spec = dataclasses.replace(zoo.SPECS["stories"], vocab_size=300)
    text = corpora.corpus("stories", n_items=200)
    tok = zoo.build_tokenizer(spec, text)
    sample = corpora.stories(1, 5)[0].text
    ids = tok(sample)["input_ids"]
    assert tok.decode(ids) == sample and len(ids) < len(sample)
    assert tok.eos_token_id not in ids and len(tok) <= 300 + 2


def test_chars_tokenizer_refuses_a_corpus_outside_its_vocabulary():
    with pytest.raises(ValueError, match="tokenizer"):
        zoo.build_tokenizer(TINY, "abc")


def test_left_padding_changes_no_greedy_completion(tiny):
    prompts = [t.prompt for t in corpora.arithmetic_problems(6, 3)]
    alone = [tiny.generate([p], 4)[0] for p in prompts]
    mixed = ["1+2=", "123+456+789=", *prompts]  # other lengths: every problem gets left padding
    batched = tiny.generate(mixed, 4)[2:]
    assert alone == batched


def test_rotary_model_scores_left_padded_rows_without_position_ids(tiny):
    # TRL scores left-padded prompts without position ids: harmless for a rotary model.
    tok, model = tiny.tokenizer, tiny.model
    ids = torch.tensor([tok("07+35=04")["input_ids"]])
    pad = torch.full((1, 3), tok.pad_token_id)
    padded = torch.cat([pad, ids], 1)
    mask = torch.cat([torch.zeros_like(pad), torch.ones_like(ids)], 1)
    with torch.no_grad():
        plain = model(input_ids=ids).logits[0]
        shifted = model(input_ids=padded, attention_mask=mask).logits[0, 3:]
    assert torch.allclose(plain, shifted, atol=1e-4)


def test_sampling_is_seeded(tiny):
    prompts = ["07+35=", "11+22="] * 4
    a = tiny.generate(prompts, 4, temperature=1.5, seed=3)
    assert a == tiny.generate(prompts, 4, temperature=1.5, seed=3)
    assert all(len(c) <= 4 for c in a)
    assert tiny.generate(prompts, 4, temperature=1.0, top_k=1) == tiny.generate(prompts, 4)
    assert tiny.generate(prompts, 4, temperature=1.0, top_p=1e-9) == tiny.generate(prompts, 4)


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, None, None), (1.0, None, None), (0.7, 5, None),
                                                       (1.3, None, 0.8), (1.0, 4, 0.5)])
def test_the_sampler_agrees_with_lecture_12s(temperature, top_k, top_p):
    from rl2llm.lm import sample_next

    logits = torch.randn(64, 20, generator=torch.Generator().manual_seed(1)) * 2
    ours = zoo._sample(logits, temperature, top_k, top_p, torch.Generator().manual_seed(5))
    theirs = sample_next(logits, temperature, top_k, top_p, torch.Generator().manual_seed(5))
    assert torch.equal(ours, theirs)


def test_the_zoo_key_depends_on_what_its_models_are_made_of_only():
    from rl2llm.provenance import module_closure

    modules, _, _ = module_closure(Path(zoo.__file__).parent, [], roots=["rl2llm.zoo"])
    assert modules <= {"rl2llm", "rl2llm.zoo", "rl2llm.corpora", "rl2llm.tokenizer", "rl2llm._validate",
                       "rl2llm.progress", "rl2llm.provenance"}


def test_generation_stops_at_the_end_of_text(tiny):
    out = tiny.generate(["07+35="], 30)[0]
    assert zoo.EOS not in out and zoo.PAD not in out


def test_exact_match_and_measure_agree_with_the_checker(tiny):
    tasks = zoo.eval_items(TINY)
    completions = tiny.generate([t.prompt for t in tasks], 4)
    expected = np.mean([t.check(c) for t, c in zip(tasks, completions)])
    assert zoo.exact_match(tiny.model, tiny.tokenizer, tasks) == expected
    assert zoo.measure(TINY, tiny.model, tiny.tokenizer)["exact_match"] == expected


def test_held_out_arithmetic_problems_are_not_in_the_training_data():
    spec = zoo.SPECS["arithmetic"]
    train = {p for p, _ in zoo._items(spec, spec.n_train, spec.data_seed)}
    held_out = zoo.eval_items(spec)
    assert len(held_out) == spec.n_eval and not {t.prompt for t in held_out} & train


def test_story_stats_reads_the_grammar():
    texts = [s.text for s in corpora.stories(50, 0)]
    stats = zoo.story_stats(texts)
    assert stats["parse"] == 1.0 and stats["grammatical"] == 1.0
    assert abs(sum(stats["sentiment"].values()) - 1.0) < 1e-12 and stats["gold"]["std"] > 0
    assert zoo.story_stats(["Tom was very happy. Blah blah."])["parse"] == 0.0


def test_card_row(tiny):
    row = zoo.card_row(tiny.card)
    assert row["model"] == "tiny" and row["parameters"] == tiny.card["parameters"]
    with pytest.raises(ValueError, match="checkpoint"):
        zoo.card_row(tiny.card, "half-trained")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change, error, name", [
    ({"corpus": "poems"}, ValueError, "corpus"),
    ({"tokenizer": "words"}, ValueError, "tokenizer"),
    ({"loss_on": "answer"}, ValueError, "loss_on"),
    ({"steps": 0}, ValueError, "steps"),
    ({"steps": 2.0}, TypeError, "steps"),
    ({"lr": -1.0}, ValueError, "lr"),
    ({"hidden_size": 18, "n_heads": 4}, ValueError, "hidden_size"),
    ({"eval_seed": 0, "data_seed": 0}, ValueError, "eval_seed"),
    ({"name": "a b"}, ValueError, "name"),
    ({"packed": 1}, TypeError, "packed"),
    ({"corpus_options": 5}, TypeError, "corpus_options"),
    ({"checkpoints": (("final", "step", 3),)}, ValueError, "checkpoints"),
    ({"checkpoints": (("early", "step", 10**6),)}, ValueError, "step"),
    ({"checkpoints": (("early", "loss", 0.5),)}, ValueError, "rule"),
    ({"checkpoints": ["early"]}, TypeError, "checkpoints"),
])
def test_bad_specs_are_refused(change, error, name):
    with pytest.raises(error, match=name):
        dataclasses.replace(TINY, **change)


def test_exact_match_rule_needs_arithmetic():
    with pytest.raises(ValueError, match="arithmetic"):
        dataclasses.replace(zoo.SPECS["stories"], checkpoints=(("mid", "exact_match", 0.3, 0.6),))


def test_bad_arguments_are_refused(tiny):
    m, t = tiny.model, tiny.tokenizer
    with pytest.raises(ValueError, match="name_or_spec"):
        zoo.load("poems")
    with pytest.raises(TypeError, match="name_or_spec"):
        zoo.checkpoints(3)
    with pytest.raises(ValueError, match="checkpoint"):
        zoo.load(TINY, "half-trained", cache_dir="/nonexistent")
    with pytest.raises(TypeError, match="cache_dir"):
        zoo.entry_dir(TINY, 3)
    with pytest.raises(TypeError, match="prompts"):
        zoo.generate(m, t, "07+35=", 4)
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        zoo.generate(m, t, ["07+35=", 3], 4)
    with pytest.raises(ValueError, match=r"prompts\[0\]"):
        zoo.generate(m, t, [""], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        zoo.generate(m, t, ["1+1="], 0)
    with pytest.raises(ValueError, match="temperature"):
        zoo.generate(m, t, ["1+1="], 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        zoo.generate(m, t, ["1+1="], 2, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        zoo.generate(m, t, ["1+1="], 2, temperature=1.0, top_p=0.0)
    with pytest.raises(TypeError, match="model"):
        zoo.generate("model", t, ["1+1="], 2)
    with pytest.raises(TypeError, match="tokenizer"):
        zoo.generate(m, None, ["1+1="], 2)
    with pytest.raises(TypeError, match=r"tasks\[0\]"):
        zoo.exact_match(m, t, corpora.code_tasks(1, 0))
    with pytest.raises(ValueError, match="tasks"):
        zoo.exact_match(m, t, [])
    with pytest.raises(TypeError, match="tasks"):
        zoo.pass_rate(m, t, corpora.code_tasks(1, 0)[0])
    with pytest.raises(TypeError, match="texts"):
        zoo.story_stats("Tom was very happy.")
    with pytest.raises(TypeError, match="progress"):
        zoo.ensure(TINY, cache_dir="/nonexistent", progress="yes")
    with pytest.raises(TypeError, match="card"):
        zoo.card_row({})
    assert zoo.generate(m, t, [], 3) == []


# --------------------------------------------------------------------------- the real zoo (slow)
#
# These load the zoo from $RL2LLM_ARTIFACTS (the build's cache when run after `make.py build`),
# else ~/.cache/rl2llm/artifacts, training what is missing (about a minute of CPU per model).


def _offline(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(zoo.SPECS))
def test_transformers_loads_each_zoo_model_offline(name, monkeypatch):
    _offline(monkeypatch)
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    zm = zoo.load(name)
    model = AutoModelForCausalLM.from_pretrained(zm.path)
    tokenizer = AutoTokenizer.from_pretrained(zm.path)
    assert isinstance(model, LlamaForCausalLM) and tokenizer.pad_token_id is not None
    text = zoo.eval_items(name, 1)[0].prompt
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == zm.tokenizer(text)["input_ids"], "AutoTokenizer encodes as the zoo's tokenizer"
    with torch.no_grad():
        assert torch.equal(model(ids).logits, zm.model(ids).logits)
    assert tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False) == text


@pytest.mark.slow
def test_the_cards_meet_the_quality_part_iv_needs():
    arithmetic = zoo.load("arithmetic").card["checkpoints"]
    assert arithmetic["final"]["exact_match"] >= 0.9
    assert 0.3 <= arithmetic["half-trained"]["exact_match"] <= 0.6
    assert arithmetic["half-trained"]["step"] < arithmetic["final"]["step"]
    stories = zoo.load("stories").card["checkpoints"]["final"]["sampled"]
    assert stories["parse"] >= 0.8 and stories["gold"]["std"] > 0.3
    assert min(stories["sentiment"][m] for m in ("positive", "negative", "neutral")) >= 0.1
    assert 0.05 <= stories["moral"] <= 0.9 and stories["sentences"]["std"] > 0.5
    code = zoo.load("code").card["checkpoints"]["final"]
    assert 0.1 <= code["tests_passed"] <= 0.95, "the code model passes some of its unit tests, not all"
    for name in zoo.SPECS:
        card = zoo.load(name).card
        assert card["train_cpu_seconds"] <= 100, f"{name} trains in at most 100 s of CPU"


def _grpo_args(tmp_path, **extra):
    from trl import GRPOConfig

    return GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=5, learning_rate=1e-4, bf16=False, fp16=False, use_cpu=True,
                      report_to=[], logging_steps=1, save_strategy="no", seed=0, **extra)


@pytest.mark.slow
def test_trl_grpo_trains_the_half_trained_arithmetic_model(tmp_path, monkeypatch):
    _offline(monkeypatch)
    from datasets import Dataset
    from trl import GRPOTrainer

    zm = zoo.load("arithmetic", "half-trained")
    tasks = zoo.eval_items("arithmetic", 8)
    answers = {t.prompt: t for t in tasks}

    def correct(prompts, completions, **kwargs):
        return [float(answers[p].check(c)) for p, c in zip(prompts, completions)]
    trainer = GRPOTrainer(model=zm.model, reward_funcs=correct, args=_grpo_args(tmp_path),
                          train_dataset=Dataset.from_list([{"prompt": t.prompt} for t in tasks]),
                          processing_class=zm.tokenizer)
    trainer.train()
    assert trainer.state.global_step == 1
    logged = trainer.state.log_history[0]
    assert 0.0 <= float(logged["reward"]) <= 1.0 and float(logged["completions/mean_length"]) <= 5


@pytest.mark.slow
def test_trl_dpo_accepts_the_stories_model(tmp_path, monkeypatch):
    _offline(monkeypatch)
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    zm = zoo.load("stories")
    rows = []
    for story in corpora.stories(8, 7):
        happy = story.prompt + " " + story.characters[0] + " was very happy."
        sad = story.prompt + " " + story.characters[0] + " was very sad."
        rows.append({"prompt": story.prompt, "chosen": happy[len(story.prompt):],
                     "rejected": sad[len(story.prompt):]})
    args = DPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-4,
                     bf16=False, fp16=False, use_cpu=True, report_to=[], logging_steps=1, save_strategy="no",
                     seed=0)
    trainer = DPOTrainer(model=zm.model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=zm.tokenizer)
    trainer.train()
    assert trainer.state.global_step == 2
    assert np.isfinite(trainer.state.log_history[-1]["train_loss"])
