"""`inhouse serve` and the web UI over a knowledge base that lives in PostgreSQL: nothing in the server
changes, so the same requests must give the same kinds of answers as with the embedded store."""

import pytest
from helpers import run_cli
from pg_helpers import fresh_database
from serve_helpers import DOCS, Server, check_shop_vector_store


@pytest.fixture(scope="module")
def pg_server_over_shop(tmp_path_factory, tiny_dir, pg_server):
    """A home whose knowledge base `shop` was indexed into PostgreSQL by the CLI, and a server over it."""
    home, docs = tmp_path_factory.mktemp("pg-home"), tmp_path_factory.mktemp("pg-docs")
    for rel, text in DOCS.items():
        (docs / rel).write_text(text, encoding="utf-8")
    with fresh_database(pg_server) as url:
        code, out, err = run_cli("rag", "index", docs, "--kb", "shop", "--store", url, env={"INHOUSE_HOME": str(home)})
        assert code == 0, out + err
        assert not (home / "kb" / "shop" / "kb.json").exists() and (home / "kb" / "shop" / "store.json").is_file()
        srv = Server(home, tiny_dir, "--served-model-name", "tiny")
        yield srv
        srv.stop()


def test_vector_store_endpoints_read_postgresql(pg_server_over_shop):
    client = pg_server_over_shop.client()
    assert [s.id for s in client.vector_stores.list()] == ["shop"]
    check_shop_vector_store(client)


def test_grounded_chat_cites_and_refuses_as_with_lancedb(pg_server_over_shop):
    client = pg_server_over_shop.client()

    def ask(question):
        return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": question}],
                                              max_tokens=16, extra_body={"knowledge_base": "shop"})

    citations = ask("How long do refunds take for returned lamps?").model_extra["citations"]
    assert citations and all(DOCS[c["doc_path"]][c["start"]:c["end"]] == c["quote"] for c in citations)
    off_topic = ask("What is the boiling point of mercury in kelvin?")  # cosine scores on LanceDB's scale
    assert off_topic.model_extra["refused"] is True and off_topic.usage.completion_tokens == 0


def test_the_ui_pages_list_and_show_the_knowledge_base(pg_server_over_shop):
    import json
    import urllib.request

    url = pg_server_over_shop.url
    with urllib.request.urlopen(url + "/ui/playground") as page:
        assert 'href="/ui/kb/shop"' in page.read().decode()
    with urllib.request.urlopen(url + "/v1/vector_stores/shop/documents") as docs:  # what /ui/kb/shop reads
        assert sorted(d["path"] for d in json.load(docs)["data"]) == sorted(DOCS)
    with urllib.request.urlopen(url + "/v1/vector_stores/shop/documents/content?path=returns.md") as doc:
        assert json.load(doc)["text"] == DOCS["returns.md"]


def test_documents_uploaded_to_a_server_with_kb_store_land_in_postgresql(tmp_path, tiny_dir, pg_dsn):
    """`inhouse serve --kb-store URL`: a knowledge base the server creates from uploads lives in PostgreSQL."""
    import json
    import urllib.request
    import uuid

    home = tmp_path / "home"
    srv = Server(home, tiny_dir, "--served-model-name", "tiny", "--kb-store", pg_dsn)
    try:
        boundary = uuid.uuid4().hex
        body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                        f"Content-Type: text/plain\r\n\r\n{text}\r\n".encode() for name, text in DOCS.items())
        request = urllib.request.Request(srv.url + "/v1/vector_stores/uploaded/documents", method="POST",
                                         data=body + f"--{boundary}--\r\n".encode(),
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                  "Authorization": "Bearer unused"})  # an API client
        with urllib.request.urlopen(request) as response:
            assert sorted(json.load(response)["added"]) == sorted(DOCS)
        assert (home / "kb" / "uploaded" / "store.json").is_file() and not (home / "kb" / "uploaded" / "kb.json").exists()
        results = list(srv.client().vector_stores.search("uploaded", query="how long do refunds take", max_num_results=1))
        assert results[0].filename == "returns.md"
    finally:
        srv.stop()


def test_a_kb_store_with_a_password_stops_the_server_at_start(tmp_path, tiny_dir):
    code, out, err = run_cli("serve", "--model", tiny_dir, "--kb-store", "postgresql://me:secret@db.example/kb",
                             env={"INHOUSE_HOME": str(tmp_path / "home")})
    assert code != 0 and "password" in err and "secret" not in out + err and "Traceback" not in err
