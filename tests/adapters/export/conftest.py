"""Fixture go_render: an Ollama TEMPLATE rendered by real Go text/template (render_go_template.go),
built once per session."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("render_go_template.go")
GO_MISSING = "Go is not installed (apt-get install golang-go); these golden tests render with Go's text/template"


@pytest.fixture(scope="session")
def go_render(tmp_path_factory):
    """go_render(template, messages, system="") -> the text Ollama would send to the model."""
    go = shutil.which("go")
    if go is None:
        if os.environ.get("INHOUSE_REQUIRE_GO") == "1":  # CI: a missing Go fails the run instead of skipping
            pytest.fail(GO_MISSING)
        pytest.skip(GO_MISSING)
    folder = tmp_path_factory.mktemp("go-render")
    env = {**os.environ, "GOCACHE": os.environ.get("GOCACHE") or str(folder / "cache"),
           "GOPATH": os.environ.get("GOPATH") or str(folder / "gopath")}
    binary = folder / "render"
    built = subprocess.run([go, "build", "-o", str(binary), str(SOURCE)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr

    def render(template: str, messages: list[dict], system: str = "") -> str:
        request = json.dumps({"template": template, "messages": messages, "system": system})
        done = subprocess.run([str(binary)], input=request.encode(), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode("utf-8")
    return render
