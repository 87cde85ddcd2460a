"""The fuzz corpus (corpus.py): a fixed seeded sample of every (command, kind) in the default run, the
whole corpus (thousands of cases) with `-m fuzz` or `python bench/fuzz_corpus.py`."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from fuzz import corpus

ALL = corpus.cases()
SAMPLE = {c.id for c in corpus.sample(ALL)}

def _params(http: bool):
    for case in ALL:
        if (case.how == "http") != http:
            continue
        marks = []
        if case.id not in SAMPLE:
            marks.append(pytest.mark.fuzz)
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.fixture
def folder(tmp_path, request):
    """A fresh folder; one that uid 65534 can reach for the unprivileged cases (pytest's are root's, 700)."""
    case = request.node.callspec.params["case"]
    if case.how != "unprivileged":
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="inhouse-fuzz-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("case", list(_params(http=False)))
def test_cli_case(case, folder, monkeypatch):
    monkeypatch.setenv("INHOUSE_HOME", str(folder / "home"))
    outcome = corpus.run(case, folder / "case")
    if outcome.note.startswith("skipped"):
        pytest.skip(outcome.note)
    assert outcome.ok, f"{'; '.join(outcome.failures)}\nexit {outcome.code}\n{outcome.err[-2000:]}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from serve_helpers import Server

    srv = Server(tmp_path_factory.mktemp("fuzz-serve"), "builtin:tiny", "--served-model-name", "tiny", "--no-jobs",
                 "--max-file-mb", "1")
    yield srv, corpus.http_fixtures(srv.url)
    code, log = srv.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("case", list(_params(http=True)))
def test_http_case(case, server):
    srv, ids = server
    outcome = corpus.run_http(case, srv.url, ids)
    assert outcome.ok, f"{'; '.join(outcome.failures)}\nHTTP {outcome.code}\n{outcome.out[-2000:]}"
