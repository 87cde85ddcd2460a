"""Several training files mixed: caps, weights, hold-outs, lineage, and the recipe/flag forms."""

import json

import pytest
from helpers import chat, run_cli, write_jsonl

from inhouse import recipe as recipe_mod
from inhouse.adapters import registry
from inhouse.adapters.lineage import sha256_file
from inhouse.errors import InhouseError
from inhouse.events import Events
from inhouse.recipe import TrainFile
from inhouse.train.mix import load_mix


def rows(tag, n):
    return [chat(f"{tag} question {i}?", f"{tag} answer {i}.") for i in range(n)]


@pytest.fixture
def files(tmp_path):
    return write_jsonl(tmp_path / "a.jsonl", rows("a", 20)), write_jsonl(tmp_path / "b.jsonl", rows("b", 40))


def tags(convs):
    return [c.as_chat()[-1]["content"] for c in convs]


def test_weight_repeats_and_samples_and_max_examples_caps_before_the_hold_out(files):
    a, b = files
    recipe = recipe_mod.build(train_files=[f"{a}:2.5", {"path": str(b), "max_examples": 10}], validation_fraction=0.1)
    mix = load_mix(recipe)
    got_a = [t for t in tags(mix.train) if t.startswith("a ")]
    got_b = [t for t in tags(mix.train) if t.startswith("b ")]
    # a: 20 read, 2 held out, 18 x 2.5 = 45 (each twice, 9 of them a third time)
    assert len(got_a) == 45 and sorted({got_a.count(t) for t in set(got_a)}) == [2, 3]
    assert [got_a.count(t) for t in set(got_a)].count(3) == 9
    # b: capped at 10 of its 40, one held out
    assert len(got_b) == 9 and len(set(got_b)) == 9
    assert [(d.read, d.train, d.validation) for d in mix.drawn] == [(20, 45, 2), (40, 9, 1)]
    held = set(tags(mix.validation))
    assert len(held) == 3 and not held & set(tags(mix.train))  # nothing held out is trained on, not even a copy


def test_a_weight_below_one_is_a_seeded_subsample_and_the_mix_is_deterministic(files):
    a, b = files
    recipe = recipe_mod.build(train_files=[f"{a}:0.5", str(b)], validation_fraction=0, seed=7)
    first, again = load_mix(recipe), load_mix(recipe)
    assert tags(first.train) == tags(again.train) and tags(first.validation) == tags(again.validation) == []
    half = [t for t in tags(first.train) if t.startswith("a ")]
    assert len(half) == 10 and len(set(half)) == 10
    other = load_mix(recipe.model_copy(update={"seed": 8}))
    assert set(half) != {t for t in tags(other.train) if t.startswith("a ")}  # the seed picks which half


def test_adding_a_file_leaves_what_the_others_give_unchanged(files, tmp_path):
    a, b = files
    c = write_jsonl(tmp_path / "c.jsonl", rows("c", 5))
    two = load_mix(recipe_mod.build(train_files=[f"{a}:0.5", f"{b}:max_examples=7"]))
    three = load_mix(recipe_mod.build(train_files=[f"{a}:0.5", f"{b}:max_examples=7", str(c)]))
    assert [t for t in tags(three.train) if not t.startswith("c ")] == tags(two.train)


def test_train_file_is_a_mix_of_one_with_the_same_split_as_before(files):
    from inhouse.data.formats import load_conversations
    from inhouse.train.dataset import split

    a, _ = files
    mix = load_mix(recipe_mod.build(train_file=a, validation_fraction=0.25, seed=3))
    train, val = split(load_conversations(a), 0.25, 3)
    assert tags(mix.train) == tags(train) and tags(mix.validation) == tags(val)


@pytest.mark.parametrize("text,expected", [
    ("a.jsonl", {"path": "a.jsonl", "weight": 1.0, "max_examples": None}),
    ("a.jsonl:2", {"path": "a.jsonl", "weight": 2.0, "max_examples": None}),
    ("d/a.jsonl:weight=0.5:max_examples=500", {"path": "d/a.jsonl", "weight": 0.5, "max_examples": 500}),
    ("we:ird.jsonl:max_examples=3", {"path": "we:ird.jsonl", "weight": 1.0, "max_examples": 3}),
])
def test_the_text_form_of_a_training_file(text, expected):
    got = TrainFile.model_validate(text).model_dump()
    assert {**got, "path": str(got["path"])} == expected


@pytest.mark.parametrize("value,message", [
    (["a.jsonl:0"], r"--train-files\[0\]\.weight: Input should be greater than 0"),
    (["a.jsonl:wieght=2"], r"--train-files\[0\]\.wieght: unknown field"),
    (["a.jsonl:max_examples=0"], r"--train-files\[0\]\.max_examples"),
])
def test_bad_mix_entries_are_one_line_errors_naming_the_entry(value, message):
    with pytest.raises(InhouseError, match=message):
        recipe_mod.build(train_files=value)


def test_train_file_and_train_files_together_are_refused(files):
    with pytest.raises(InhouseError, match="train_file or train_files, not both"):
        recipe_mod.build(train_file=files[0], train_files=[str(files[1])])


def test_recipe_paths_are_relative_to_the_recipe_in_both_forms(files, tmp_path, monkeypatch):
    (tmp_path / "r").mkdir()
    recipe_file = tmp_path / "r" / "mix.yaml"
    recipe_file.write_text("train_files:\n  - {path: ../a.jsonl, weight: 2}\n  - ../b.jsonl:max_examples=5\n",
                           encoding="utf-8")
    monkeypatch.chdir(tmp_path / "r")
    recipe = recipe_mod.build(recipe_file)
    assert [(s.path.resolve(), s.weight, s.max_examples) for s in recipe.train_files] == \
        [(files[0].resolve(), 2.0, None), (files[1].resolve(), 1.0, 5)]


def test_the_train_files_flag(files, tmp_path, monkeypatch):
    seen = {}

    def fake_train(recipe, **kw):
        seen["recipe"] = recipe
        raise InhouseError("stop here")

    monkeypatch.setattr("inhouse.train.sft.train", fake_train)
    code, _, err = run_cli("train", "--train-files", f"{files[0]}:2,{files[1]}:max_examples=5",
                           env={"INHOUSE_HOME": str(tmp_path / "home")})
    assert code != 0 and "stop here" in err  # the recipe was built from the flag and handed to training
    assert [(s.path, s.weight, s.max_examples) for s in seen["recipe"].train_files] == \
        [(files[0], 2.0, None), (files[1], 1.0, 5)]


def test_lineage_records_each_file_with_its_hash_and_counts(files, tmp_path, tiny_dir, home):
    from inhouse.train.sft import train

    a, b = files
    val = write_jsonl(tmp_path / "val.jsonl", rows("v", 4))
    recipe = recipe_mod.build(base_model=str(tiny_dir), train_files=[f"{a}:0.5", f"{b}:max_examples=6"],
                              validation_file=val, max_steps=1, output_name="mixed")
    result = train(recipe, events=Events())
    info = json.loads((result.path / "inhouse.json").read_text())
    assert info["data"] == [
        {"path": str(a.resolve()), "sha256": sha256_file(a), "role": "train", "weight": 0.5, "max_examples": None,
         "examples": {"read": 20, "train": 10, "validation": 0}},
        {"path": str(b.resolve()), "sha256": sha256_file(b), "role": "train", "weight": 1.0, "max_examples": 6,
         "examples": {"read": 40, "train": 6, "validation": 0}},
        {"path": str(val.resolve()), "sha256": sha256_file(val), "role": "validation"}]
    assert info["examples"] == {"train": 16, "validation": 4}
    assert result.name == "mixed" and registry.lineage(result.path).recipe["train_files"][1]["max_examples"] == 6


def test_the_jobs_api_sets_training_files_itself_but_takes_the_new_training_fields():
    from inhouse.jobs.spec import BadField, check_recipe

    with pytest.raises(BadField, match="recipe.train_files is set by the server"):
        check_recipe({"train_files": ["/etc/passwd"]})
    fields = {"early_stopping_patience": 2, "eval_every": 5, "tracking": "tensorboard"}
    assert check_recipe(fields) == fields
