"""The library over HTTP: listing, lineage, and DELETE refused while this server has the adapter loaded."""

import json
import shutil
import urllib.error
import urllib.request

from helpers import run_cli


def call(server, method: str, path: str) -> tuple[int, dict]:
    request = urllib.request.Request(server.url + path, method=method, headers={"Authorization": "Bearer unused"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_list_and_lineage_are_the_typed_lineage_as_json(server):
    status, listing = call(server, "GET", "/v1/adapters")
    assert status == 200 and {a["name"] for a in listing["data"]} == {"facts", "polite"}
    facts = next(a for a in listing["data"] if a["name"] == "facts")
    assert facts["kind"] == "lora" and facts["tags"] == [] and facts["broken"] is None
    status, lineage = call(server, "GET", "/v1/adapters/facts")
    on_disk = json.loads((server.home / "adapters" / "facts" / "inhouse.json").read_text(encoding="utf-8"))
    assert status == 200 and lineage == on_disk


def test_delete_removes_an_unused_entry_and_refuses_a_loaded_one(server):
    shutil.copytree(server.home / "adapters" / "polite", server.home / "adapters" / "spare")
    try:
        assert call(server, "DELETE", "/v1/adapters/spare") == (200, {"id": "spare", "object": "model",
                                                                      "deleted": True})
        assert not (server.home / "adapters" / "spare").exists()
    finally:
        shutil.rmtree(server.home / "adapters" / "spare", ignore_errors=True)
    server.client().chat.completions.create(model="facts", messages=[{"role": "user", "content": "Best day?"}],
                                            max_tokens=4)  # loads `facts` into the generating process
    registered = json.loads((server.home / "servers" / f"{server.proc.pid}.json").read_text(encoding="utf-8"))
    assert "facts" in registered["adapters"] and registered["pid"] == server.proc.pid
    status, body = call(server, "DELETE", "/v1/adapters/facts")
    assert status == 409 and "in use" in body["error"]["message"] and "has it loaded" in body["error"]["message"]
    code, out, err = run_cli("adapters", "rm", "facts", "--yes", env={"INHOUSE_HOME": str(server.home)})
    assert code == 1 and f"inhouse serve (pid {server.proc.pid}) has it loaded" in err
    assert (server.home / "adapters" / "facts" / "inhouse.json").is_file()
    assert call(server, "DELETE", "/v1/adapters/nope")[0] == 404
    assert call(server, "DELETE", "/v1/adapters/..")[0] in (404, 405)


def test_the_comparison_page_shows_the_recipe_diff(server):
    with urllib.request.urlopen(server.url + "/ui/models/compare?a=facts&b=polite") as response:
        page = response.read().decode("utf-8")
    assert response.status == 200 and "Recipe differences" in page
    assert "<td>output_name</td><td>facts</td><td>polite</td>" in page and "<td>lora_r</td>" not in page
