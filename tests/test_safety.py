"""No command destroys a user's files: every writing command refuses outputs that touch its inputs,
and a whole journey over a real-looking project leaves every input byte-identical."""

import shutil
from pathlib import Path

import pytest
from helpers import EXAMPLES, hashes, run_cli

DOCS = {
    "handbook/returns.md": "# Returns\n\nLamps can be returned within 30 days. Refunds take five working days.\n",
    "handbook/shipping.md": "# Shipping\n\nOrders ship from Leeds within two days of payment.\n",
    "faq.txt": "The shop is open Monday to Saturday. Gift wrapping costs three pounds.\n",
}


def make_project(root: Path) -> Path:
    """A team's folder as they would have it: data, documents, a schema, notes of their own."""
    proj = root / "proj"
    (proj / "data").mkdir(parents=True)
    shutil.copy(EXAMPLES / "support.jsonl", proj / "data" / "support.jsonl")
    for rel, text in DOCS.items():
        (proj / "docs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / "docs" / rel).write_text(text, encoding="utf-8")
    (proj / "notes.md").write_text("our own notes, not inhouse's\n", encoding="utf-8")
    return proj


def assert_one_line_error(result, *needles):
    code, out, err = result
    assert code == 1, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out + err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """One small trained adapter shared by the tests here (training takes a few seconds)."""
    home = tmp_path_factory.mktemp("home")
    data = tmp_path_factory.mktemp("d") / "d.jsonl"
    shutil.copy(EXAMPLES / "support.jsonl", data)
    code, out, err = run_cli("train", "--train-file", data, "--max-steps", "2", "--output-name", "shop", "-q",
                             env={"INHOUSE_HOME": str(home)})
    assert code == 0, out + err
    return home


# Each command, given the input it reads and the output it is told to write.
COMMANDS = {
    "prepare": lambda inp, out: ["data", "prepare", inp, "--out", out, "--overwrite"],
    "eval": lambda inp, out: ["eval", "shop", "--data", inp, "--out", out, "--overwrite", "--max-examples", "1"],
    "merge": lambda inp, out: ["merge", inp, "--out", out, "--overwrite"],
    "rag-index": lambda inp, out: ["rag", "index", inp, "--kb", out],
}


def command_input(name: str, proj: Path, home: Path) -> Path:
    if name == "merge":  # a copy of the adapter, inside the user's project
        shutil.copytree(home / "adapters" / "shop", proj / "adapter")
        return proj / "adapter"
    return proj / "docs" if name == "rag-index" else proj / "data" / "support.jsonl"


CASES = {
    "same path": lambda inp, proj: inp,
    "output contains the input": lambda inp, proj: proj,
    "output inside the input": lambda inp, proj: inp / "sub",
    "symlink to a folder holding the input": lambda inp, proj: proj.parent / "link",
    "unrelated folder": lambda inp, proj: proj.parent / "mine",
}
EXPECTED = {"same path": "is the input", "output contains the input": "contains the input",
            "output inside the input": "is inside the input",
            "symlink to a folder holding the input": "contains the input", "unrelated folder": "was not written by inhouse"}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_writing_command_refuses_outputs_that_touch_its_inputs(command, case, tmp_path, library):
    proj = make_project(tmp_path)
    inp = command_input(command, proj, library)
    (tmp_path / "link").symlink_to(proj)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_bytes(b"years of work")
    before, mine = hashes(proj), hashes(tmp_path / "mine")
    out = CASES[case](inp, proj)
    assert_one_line_error(run_cli(*COMMANDS[command](inp, out), env={"INHOUSE_HOME": str(library)}),
                          EXPECTED[case])
    assert hashes(proj) == before and hashes(tmp_path / "mine") == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "mine", "proj"]  # no staging left behind


@pytest.mark.slow
def test_a_whole_journey_leaves_every_input_file_unchanged(tmp_path, library):
    """Real commands on a real-looking project; after each, every input file still has its hash."""
    proj = make_project(tmp_path)
    env = {"INHOUSE_HOME": str(tmp_path / "home")}
    out = proj / "out"
    recipe = proj / "recipe.yaml"
    recipe.write_text("train_file: out/prepared/train.jsonl\nvalidation_file: out/prepared/validation.jsonl\n"
                      "max_steps: 3\nlearning_rate: 3.0e-3\noutput_name: journey\n", encoding="utf-8")
    inputs = hashes(proj)
    steps = [
        (0, ["data", "check", proj / "data" / "support.jsonl"]),
        (0, ["data", "scan", proj / "data" / "support.jsonl"]),
        (0, ["data", "prepare", proj / "data" / "support.jsonl", "--out", out / "prepared", "--test", "0.1"]),
        (0, ["train", recipe, "-q"]),
        (0, ["eval", "journey", "--data", out / "prepared" / "test.jsonl", "--out", out / "eval",
             "--max-examples", "2", "--max-new-tokens", "8"]),
        (0, ["merge", "journey", "--out", out / "merged"]),
        (0, ["generate", "journey", "--prompt", "Can I return a lamp?", "--max-new-tokens", "8"]),
        (0, ["rag", "index", proj / "docs", "--kb", out / "kb"]),
        (0, ["rag", "search", "refund", "--kb", out / "kb"]),
        (0, ["ask", "How long do refunds take?", "--kb", out / "kb", "--adapter", "journey",
             "--max-new-tokens", "8"]),
        (0, ["adapters"]),
        # and the careless ones: each must fail and touch nothing
        (1, ["data", "prepare", proj / "data" / "support.jsonl", "--out", proj, "--overwrite"]),
        (1, ["data", "prepare", out / "prepared" / "train.jsonl", "--out", out / "prepared", "--overwrite"]),
        (1, ["eval", "journey", "--data", out / "prepared" / "test.jsonl", "--out", out / "prepared", "--overwrite"]),
        (1, ["eval", "journey", "--data", out / "prepared" / "test.jsonl", "--out", proj / "notes.md"]),
        (1, ["merge", "journey", "--out", proj / "docs", "--overwrite"]),
        (1, ["rag", "index", proj / "docs", "--kb", proj / "docs" / "kb"]),
        (1, ["rag", "index", proj / "docs", "--kb", proj / "data"]),
    ]
    for expected, args in steps:
        code, stdout, stderr = run_cli(*args, env=env)
        assert code == expected, (args, stdout[-2000:], stderr[-2000:])
        now = hashes(proj)
        assert {k: now.get(k) for k in inputs} == inputs, f"an input changed after {args}"
        if args[:2] == ["data", "prepare"] and expected == 0:
            inputs |= {k: v for k, v in now.items() if k.startswith("out/prepared/")}  # inputs from now on
    assert not [p for p in proj.rglob(".*staging-*")]
