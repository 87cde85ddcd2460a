"""The web UI in a real browser (Playwright driving the system's Chromium): the whole journey, the
loss curve surviving a reload, chat side by side, a grounded answer with its citation, no script
errors, a narrow window, user text never executed, and sign-in with the API key."""

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import run_cli
from serve_helpers import DOCS, FACTS, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    if os.environ.get("INHOUSE_REQUIRE_BROWSER"):
        raise RuntimeError("Chromium is required for the web UI tests (apt-get install -y chromium)")
    pytest.skip("no Chromium on this machine (apt-get install -y chromium); .ci/run installs it", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SHOTS = os.environ.get("INHOUSE_SCREENSHOTS")  # also copy screenshots there (the README's are made this way)


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def chat_row(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


@pytest.fixture(scope="module")
def ui(tiny_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("ui") / "home"
    docs = tmp_path_factory.mktemp("ui-docs")
    for rel, text in DOCS.items():
        (docs / rel).write_text(text, encoding="utf-8")
    code, out, err = run_cli("rag", "index", docs, "--kb", "shop", env={"INHOUSE_HOME": str(home)})
    assert code == 0, err
    server = Server(home, tiny_dir, "--served-model-name", "tiny")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


class Page:
    """A page that records script errors and takes named screenshots."""

    def __init__(self, browser, folder: Path, width=1280, height=900):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.folder = folder

    def shot(self, name):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=self.folder / f"{name}.png", full_page=False)
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            shutil.copy(self.folder / f"{name}.png", Path(SHOTS) / f"{name}.png")


def upload(page, tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    page.set_input_files("#pick", str(path))


def test_the_whole_journey(ui, browser, tmp_path):
    view = Page(browser, tmp_path / "screenshots")
    page = view.page
    page.goto(ui.url + "/ui/data")
    bad = jsonl([chat_row(q, a) for q, a in FACTS[:2]]) + \
        '{"messages": [{"role": "user", "content": "no answer"}]}\n{"messages": [{"role": "user"}]}\n'
    upload(page, tmp_path, "support-bad.jsonl", bad)
    problems = page.locator("#uploads pre.problems").first
    expect(problems).to_contain_text("support-bad.jsonl:3")
    expect(problems).to_contain_text("support-bad.jsonl:4")
    view.shot("data")
    page.locator("#uploads a", has_text="support-bad.jsonl").click()
    expect(page.locator("tr.problem")).to_have_count(2)
    expect(page.locator("tr.problem").first).to_contain_text("support-bad.jsonl:3")
    expect(page.locator("#previews mark.trained").first).to_be_visible()
    view.shot("data-file")

    page.goto(ui.url + "/ui/data")
    upload(page, tmp_path, "support.jsonl", jsonl([chat_row(q, a) for q, a in FACTS * 3]))
    expect(page.locator("#uploads .pill.processed")).to_be_visible()
    page.locator("#files a", has_text="fine-tune").first.click()
    page.fill("input[name=suffix]", "facts")
    page.fill("input[name=learning_rate_multiplier]", "10")  # 2e-3: memorises without the spikes of 1e-2
    page.fill("input[name=max_steps]", "1500")
    page.locator("details summary").click()
    page.select_option("select[name=lr_scheduler]", "constant")
    page.fill("input[name=warmup_ratio]", "0")
    page.fill("input[name=lora_dropout]", "0")
    page.fill("input[name=eval_every]", "100")
    view.shot("new")
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/jobs/ftjob-*")
    curve = page.locator("#curve")
    page.wait_for_function("Number(document.querySelector('#curve').dataset.points || 0) >= 3")
    first = int(curve.get_attribute("data-points"))
    page.wait_for_function(f"Number(document.querySelector('#curve').dataset.points || 0) > {first}")  # it grows
    view.shot("job")
    seen = int(curve.get_attribute("data-points"))
    page.reload()
    page.wait_for_function(f"Number(document.querySelector('#curve').dataset.points || 0) >= {seen}")  # all back
    expect(page.locator("#status")).to_have_text("succeeded", timeout=600_000)
    model = page.locator("#result a").inner_text()
    assert model.startswith("facts-")
    view.shot("job-done")

    page.goto(ui.url + "/ui/jobs")
    expect(page.locator("#jobs .pill.succeeded")).to_be_visible()
    view.shot("jobs")

    page.goto(ui.url + f"/ui/playground?model={model}")
    page.select_option("select[name=other]", "tiny")
    page.fill("textarea[name=message]", FACTS[2][0])
    page.click("#ask button[type=submit]")
    expect(page.locator("#pane-a .turn.assistant")).to_have_text(FACTS[2][1])
    expect(page.locator("#pane-b .turn.assistant")).not_to_have_text("")
    assert page.locator("#pane-b .turn.assistant").inner_text() != FACTS[2][1]
    view.shot("playground")

    page.click("#reset")
    page.select_option("select[name=other]", "")
    page.select_option("select[name=kb]", "shop")
    page.fill("textarea[name=message]", "How long do refunds take for returned lamps?")
    page.click("#ask button[type=submit]")
    citation = page.locator("#pane-a ol.citations a").first
    expect(citation).to_be_visible()
    quote = page.locator("#pane-a ol.citations blockquote").first.inner_text()
    view.shot("playground-grounded")
    citation.click()
    expect(page.locator("mark#cited")).to_have_text(quote)
    view.shot("knowledge-base")

    page.goto(ui.url + "/ui/models")
    page.locator("#library").get_by_role("link", name=model, exact=True).click()
    expect(page.locator("#detail-name")).to_have_text(model)
    view.shot("models")
    assert view.errors == [], view.errors


def test_compare_two_runs_and_a_narrow_window(ui, browser, tmp_path, tiny_dir):
    home_env = {"INHOUSE_HOME": str(ui.home)}
    data = tmp_path / "d.jsonl"
    data.write_text(jsonl([chat_row(q, a) for q, a in FACTS]), encoding="utf-8")
    for name, rank in (("small-r4", "4"), ("small-r8", "8")):
        code, out, err = run_cli("train", "--base-model", tiny_dir, "--train-file", data, "--max-steps", "4",
                                 "--lora-r", rank, "--output-name", name, "-q", env=home_env)
        assert code == 0, err
    view = Page(browser, tmp_path / "screenshots")
    page = view.page
    page.goto(ui.url + "/ui/models/compare?a=small-r4&b=small-r8")
    expect(page.locator("table.list").last).to_contain_text("lora_r")
    expect(page.locator("#compare-curve canvas")).to_be_visible()
    view.shot("compare")
    narrow = Page(browser, tmp_path / "screenshots", width=390, height=800)
    for path in ("/ui/jobs", "/ui/new", "/ui/data", "/ui/models", "/ui/playground"):
        narrow.page.goto(ui.url + path)
        narrow.page.wait_for_load_state("networkidle")
        overflow = narrow.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)
    narrow.shot("narrow-playground")
    assert view.errors == [] and narrow.errors == [], view.errors + narrow.errors


def test_user_text_is_never_run_as_script(ui, browser, tmp_path):
    view = Page(browser, tmp_path / "screenshots")
    page = view.page
    page.goto(ui.url + "/ui/data")
    evil = '<img src=x onerror="window.__xss=1">'
    rows = [chat_row(f"<script>window.__xss=1</script> {q}", f"{evil} {a}") for q, a in FACTS]
    upload(page, tmp_path, "x<svg onload=window.__xss=1>.jsonl", jsonl(rows))
    expect(page.locator("#uploads .pill.processed")).to_be_visible()
    page.locator("#files a").first.click()
    expect(page.locator("#previews pre").first).to_contain_text("<script>window.__xss=1</script>")
    expect(page.locator("#previews pre").first).to_contain_text(evil)
    page.goto(ui.url + "/ui/data")
    expect(page.locator("#files")).to_contain_text("x<svg onload=window.__xss=1>.jsonl")
    assert page.evaluate("window.__xss") is None
    assert view.errors == [], view.errors


def test_sign_in_with_the_api_key_and_csrf(tiny_dir, browser, tmp_path):
    server = Server(tmp_path / "home", tiny_dir, "--api-key", "s3cret-key")
    try:
        view = Page(browser, tmp_path / "screenshots")
        page = view.page
        page.goto(server.url + "/ui/jobs")
        assert "/ui/login" in page.url
        page.fill("input[name=key]", "wrong")
        page.click("button[type=submit]")
        expect(page.locator("p.bad")).to_contain_text("not right")
        page.fill("input[name=key]", "s3cret-key")
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/jobs")
        cookie = next(c for c in view.context.cookies() if c["name"] == "inhouse_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        expect(page.locator("#jobs")).to_contain_text("No jobs yet")
        assert view.errors == [], view.errors
        status = page.evaluate("fetch('/v1/fine_tuning/jobs', {method: 'POST', body: '{}'}).then(r => r.status)")
        assert status == 403  # the session cookie alone does not let another page change anything
    finally:
        server.stop()


def test_upload_documents_into_a_knowledge_base_from_the_playground(ui, browser, tmp_path):
    view = Page(browser, tmp_path / "screenshots")
    page = view.page
    page.goto(ui.url + "/ui/playground")
    doc = tmp_path / "warranty.md"
    doc.write_text("# Warranty\n\nEvery lamp has a two-year warranty on its wiring.\n", encoding="utf-8")
    page.fill("#kb-upload input[name=kb]", "notes")
    page.set_input_files("#kb-upload input[name=file]", str(doc))
    page.click("#kb-upload button[type=submit]")
    expect(page.locator("#kb-result")).to_contain_text("1 added")
    page.goto(ui.url + "/ui/kb/notes")
    expect(page.locator("#kb-docs")).to_contain_text("warranty.md")
    page.locator("#kb-docs a", has_text="warranty.md").click()
    expect(page.locator("#kb-doc-text")).to_contain_text("two-year warranty")
    assert view.errors == [], view.errors


def test_a_typed_model_path_that_is_no_model_folder_shows_the_error_beside_it(ui, browser, tmp_path):
    ui.client().files.create(file=("t.jsonl", jsonl([chat_row(q, a) for q, a in FACTS])), purpose="fine-tune")
    (tmp_path / "not-a-model").mkdir()
    view = Page(browser, tmp_path / "screenshots", width=390, height=800)
    page = view.page
    page.goto(ui.url + "/ui/new")
    expect(page.locator("select[name=devices]")).to_have_count(0)  # no GPU picker on a CPU machine
    page.fill("input[name=model_path]", str(tmp_path / "not-a-model"))
    page.click("button[type=submit]")
    expect(page.locator("#model-error")).to_contain_text("no config.json")
    assert "/ui/new" in page.url
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
    assert [e for e in view.errors if "status of 400" not in e] == [], view.errors  # the refusal itself is logged
