"""Fixtures: two trained adapters and a knowledge base in a home folder, and a server over them."""

import pytest
from helpers import chat, run_cli, write_jsonl
from serve_helpers import DOCS, FACTS, POLITE, Server


@pytest.fixture(scope="package")
def library(tmp_path_factory, tiny_dir):
    """INHOUSE_HOME with adapters `facts` and `polite` (on builtin:tiny's folder) and the knowledge base `shop`."""
    home = tmp_path_factory.mktemp("serve-home")
    data = tmp_path_factory.mktemp("serve-data")
    env = {"INHOUSE_HOME": str(home)}
    for name, pairs in (("facts", FACTS), ("polite", POLITE)):
        rows = write_jsonl(data / f"{name}.jsonl", [chat(q, a) for q, a in pairs])
        code, out, err = run_cli("train", "--base-model", tiny_dir, "--train-file", rows, "--max-steps", "60",
                                 "--learning-rate", "1e-2", "--lora-dropout", "0", "--warmup-ratio", "0",
                                 "--lr-scheduler", "constant", "--validation-fraction", "0", "--output-name", name,
                                 "-q", env=env)
        assert code == 0, out + err
    docs = data / "docs"
    docs.mkdir()
    for rel, text in DOCS.items():
        (docs / rel).write_text(text, encoding="utf-8")
    code, out, err = run_cli("rag", "index", docs, "--kb", "shop", env=env)
    assert code == 0, out + err
    return home


@pytest.fixture(scope="package")
def server(library, tiny_dir):
    srv = Server(library, tiny_dir, "--served-model-name", "tiny", "--max-adapters", "4")
    yield srv
    srv.stop()
