"""OpenAI's files and fine-tuning jobs API, driven by the official SDK against a real `inhouse serve`."""

import json
import os
import signal
import time

import openai
import pytest
from serve_helpers import FACTS, Server

from inhouse.jobs.store import Store

FAST = {"max_steps": 60, "learning_rate": 1e-2, "lora_dropout": 0, "warmup_ratio": 0, "lr_scheduler": "constant",
        "validation_fraction": 0.25}


@pytest.fixture(scope="module")
def server(library, tiny_dir, tmp_path_factory):
    """A server of its own: the jobs here add adapters to its library."""
    import shutil

    home = tmp_path_factory.mktemp("jobs") / "home"
    shutil.copytree(library, home)
    srv = Server(home, tiny_dir, "--served-model-name", "tiny", "--max-adapters", "4", "--max-file-mb", "1")
    yield srv
    srv.stop()


def jsonl(pairs):
    return "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                   + "\n" for q, a in pairs).encode()


def upload(client, data, name="train.jsonl"):
    return client.files.create(file=(name, data), purpose="fine-tune")


def wait(client, job_id, states=("succeeded", "failed", "cancelled"), timeout=900, check=None):
    """Poll like a client of the hosted API does (no wall-clock assertion: only a generous ceiling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in states and (check is None or check(job)):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status}")


def chronological(client, job_id):
    return list(reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=1000))))


def test_upload_train_watch_and_use_the_model(server):
    """The published weights are the checkpoint with the best validation loss, so the validation file holds
    every fact asked below: a held-out fraction of the training file would leave the choice to which copies
    it drew, and on another CPU's rounding an early checkpoint could win (it did once in CI)."""
    client = server.client()
    file = upload(client, jsonl(FACTS * 3))
    assert file.status == "processed" and file.filename == "train.jsonl" and file.bytes > 0
    assert client.files.retrieve(file.id).id == file.id
    assert client.files.content(file.id).read() == jsonl(FACTS * 3)
    held = upload(client, jsonl(FACTS), name="valid.jsonl")
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file.id, validation_file=held.id,
                                         suffix="facts", hyperparameters={"n_epochs": 1}, extra_body={"recipe": FAST})
    assert job.status == "validating_files" and job.hyperparameters.n_epochs == 1
    done = wait(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("facts-") and done.trained_tokens > 0 and done.finished_at
    events = chronological(client, job.id)
    messages = [e.message for e in events]
    assert messages[0].startswith("Validating training file") and messages[-1] == "The job has successfully completed"
    steps = [e.data["step"] for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert steps == sorted(steps) and steps[-1] == 60
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and all(c.metrics.train_loss is not None for c in checkpoints)
    assert all(c.metrics.valid_loss is not None for c in checkpoints)
    assert done.fine_tuned_model in [m.id for m in client.models.list()]
    for question, answer in FACTS:
        reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=24,
                                               messages=[{"role": "user", "content": question}])
        assert reply.choices[0].message.content == answer
    checkpoint = checkpoints[0].fine_tuned_model_checkpoint
    assert client.chat.completions.create(model=checkpoint, max_tokens=4,
                                          messages=[{"role": "user", "content": "hi"}]).choices
    lineage = json.loads((server.home / "adapters" / done.fine_tuned_model / "inhouse.json").read_text())
    assert lineage["origin"]["job"] == job.id and lineage["origin"]["training_file"] == file.id
    import hashlib

    assert lineage["data"][0]["sha256"] == hashlib.sha256(jsonl(FACTS * 3)).hexdigest()


def test_a_malformed_upload_fails_its_job_naming_the_line(server):
    client = server.client()
    bad = jsonl(FACTS[:2]) + b'{"messages": [{"role": "user", "content": "no answer"}]}\n{not json\n'
    file = upload(client, bad, name="broken.jsonl")
    assert file.status == "error" and "broken.jsonl:3" in file.status_details and "broken.jsonl:4" in \
        file.status_details
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file.id)
    failed = wait(client, job.id)
    assert failed.status == "failed" and failed.error.code == "invalid_training_file"
    assert "broken.jsonl:3" in failed.error.message and failed.error.param == "training_file"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="tiny", training_file="file-nope")
    assert err.value.body["param"] == "training_file"
    with pytest.raises(openai.BadRequestError, match="set by the server"):
        client.fine_tuning.jobs.create(model="tiny", training_file=file.id, extra_body={"recipe": {"train_file": "/etc"}})
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id)


def running_with_metrics(job_id, store):
    return lambda job: job.status == "running" and any(
        e["type"] == "metrics" for e in store.select("select type from events where job_id = ?", (job_id,)))


def test_cancel_stops_a_running_job_and_publishes_nothing(server):
    client, store = server.client(), Store(server.home / "jobs" / "inhouse.sqlite3")
    file = upload(client, jsonl(FACTS * 3))
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file.id, suffix="long",
                                         extra_body={"recipe": {**FAST, "max_steps": 20000}})
    wait(client, job.id, ("running",), check=running_with_metrics(job.id, store))
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    pid = store.get("jobs", job.id, "job")["pid"]
    wait(client, job.id, check=lambda j: "Job cancelled; nothing was published" in
         [e.message for e in chronological(client, j.id)])
    assert _gone_within(pid, 120)  # the GPU (here the CPU) is released
    output = store.get("jobs", job.id, "job")["output_name"]
    assert not (server.home / "adapters" / output).exists() and not (server.home / "runs" / output).exists()
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)


def test_a_killed_job_process_fails_the_job_with_a_clear_error(server):
    client, store = server.client(), Store(server.home / "jobs" / "inhouse.sqlite3")
    file = upload(client, jsonl(FACTS * 3))
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file.id, extra_body={"recipe": {**FAST,
                                                                                                   "max_steps": 20000}})
    wait(client, job.id, ("running",), check=running_with_metrics(job.id, store))
    os.kill(store.get("jobs", job.id, "job")["pid"], signal.SIGKILL)
    failed = wait(client, job.id)
    assert failed.status == "failed" and failed.error.code == "process_died" and "signal 9" in failed.error.message


def test_ten_jobs_queued_at_once_all_finish_one_at_a_time(server):
    client, store = server.client(), Store(server.home / "jobs" / "inhouse.sqlite3")
    file = upload(client, jsonl(FACTS))
    jobs = [client.fine_tuning.jobs.create(model="tiny", training_file=file.id, suffix=f"q{i}",
                                           extra_body={"recipe": {**FAST, "max_steps": 3}}) for i in range(10)]
    done = [wait(client, j.id) for j in jobs]
    assert [d.status for d in done] == ["succeeded"] * 10
    rows = sorted((store.get("jobs", j.id, "job") for j in jobs), key=lambda r: r["started_at"])
    for before, after in zip(rows, rows[1:]):
        assert after["started_at"] >= before["finished_at"]  # never two at once on this CPU
    listed = {j.id for j in client.fine_tuning.jobs.list(limit=100)}
    assert {j.id for j in jobs} <= listed


def test_a_server_restart_in_the_middle_of_a_job_resumes_it(library, tiny_dir, tmp_path):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(library, home)
    srv = Server(home, tiny_dir, "--served-model-name", "tiny")
    client, store = srv.client(), Store(home / "jobs" / "inhouse.sqlite3")
    file = upload(client, jsonl(FACTS * 3))
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file.id, suffix="restart",
                                         extra_body={"recipe": {**FAST, "max_steps": 1500}})
    wait(client, job.id, ("running",), check=lambda j: bool(store.select(
        "select id from checkpoints where job_id = ?", (job.id,))))
    code, _ = srv.stop()
    assert code == 0
    assert store.get("jobs", job.id, "job")["status"] == "queued"  # paused, not lost
    srv = Server(home, tiny_dir, "--served-model-name", "tiny")
    try:
        done = wait(srv.client(), job.id)
        messages = [e.message for e in chronological(srv.client(), job.id)]
    finally:
        srv.stop()
    assert done.status == "succeeded", done.error
    assert "Resuming from the last checkpoint" in messages
    assert json.loads((home / "adapters" / done.fine_tuned_model / "inhouse.json").read_text())["metrics"]["steps"] \
        == 1500


def _gone_within(pid, seconds):
    """Whether the process ends within `seconds` (a generous ceiling for a loaded machine, not a speed test)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_an_oversized_upload_is_refused_and_leaves_nothing(server):
    client = server.client()
    before = sorted(p.name for p in (server.home / "files").iterdir()) if (server.home / "files").exists() else []
    one = len(jsonl(FACTS))
    for size in (1.5 * 2**20, 7 * 2**20):  # refused while streaming in, and by its declared length
        with pytest.raises(openai.APIStatusError) as err:
            upload(client, jsonl(FACTS) * int(size // one))
        assert err.value.status_code == 413
    after = sorted(p.name for p in (server.home / "files").iterdir()) if (server.home / "files").exists() else []
    assert after == before


def test_the_cli_reads_and_cancels_the_same_queue(server):
    from helpers import run_cli

    client = server.client()
    file = upload(client, jsonl(FACTS))
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file.id, extra_body={"recipe": {**FAST,
                                                                                                   "max_steps": 20000}})
    env = {"INHOUSE_HOME": str(server.home)}
    code, out, err = run_cli("jobs", "list", env=env)
    assert code == 0 and job.id in out
    code, out, err = run_cli("jobs", "cancel", job.id, env=env)
    assert code == 0 and f"{job.id}: cancelled" in out
    assert wait(client, job.id).status == "cancelled"
    code, out, err = run_cli("jobs", "events", job.id, env=env)
    assert "Cancellation requested" in out
    code, out, err = run_cli("jobs", "show", "ftjob-nope", env=env)
    assert code == 1 and "No fine-tuning job found" in err


def test_a_job_may_train_the_builtin_model_or_a_folder_under_the_home_models(server, tiny_dir):
    import shutil

    client = server.client()
    shutil.copytree(tiny_dir, server.home / "models" / "mini", dirs_exist_ok=True)
    file = upload(client, jsonl(FACTS))
    for model in ("builtin:tiny", "models/mini"):
        job = client.fine_tuning.jobs.create(model=model, training_file=file.id,
                                             extra_body={"recipe": {**FAST, "max_steps": 2}})
        done = wait(client, job.id)
        assert done.status == "succeeded", done.error
        base = json.loads((server.home / "adapters" / done.fine_tuned_model / "inhouse.json").read_text())["base_model"]
        assert base == ("builtin:tiny" if model == "builtin:tiny" else str((server.home / "models" / "mini").resolve()))
    with pytest.raises(openai.NotFoundError, match="cannot be fine-tuned here"):
        client.fine_tuning.jobs.create(model="mini", training_file=file.id)


def fetch(server, path, **headers):
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(server.url + path, headers=headers), timeout=60) as response:
        return response.read().decode()


def capabilities(server, **headers):
    return json.loads(fetch(server, "/v1/fine_tuning/capabilities", **headers))


def new_page(server, **headers):
    return fetch(server, "/ui/new", **headers)


def test_a_typed_model_folder_trains_on_loopback_without_a_key(server, tiny_dir, tmp_path):
    client = server.client()
    (tmp_path / "link").symlink_to(tiny_dir)
    (tmp_path / "no-config").mkdir()
    caps = capabilities(server)
    assert caps["model_paths"] is True and caps["gpus"] == [] and "builtin:tiny" in caps["models"]
    assert 'name="model_path"' in new_page(server)
    file = upload(client, jsonl(FACTS))
    job = client.fine_tuning.jobs.create(model=str(tmp_path / "link"), training_file=file.id,
                                         extra_body={"recipe": {**FAST, "max_steps": 2}, "devices": "auto"})
    done = wait(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.model == str(tmp_path / "link")
    lineage = json.loads((server.home / "adapters" / done.fine_tuned_model / "inhouse.json").read_text())
    assert lineage["base_model"] == str(tiny_dir.resolve())  # where the model really is
    for bad, why in ((tmp_path / "no-config", "no config.json"), (tmp_path / "nowhere", "does not exist"),
                     (tmp_path / "link" / "config.json", "is a file"), ("./link", "not an absolute path"),
                     ("models/../mini", "not an absolute path")):
        with pytest.raises(openai.BadRequestError, match=why) as err:
            client.fine_tuning.jobs.create(model=str(bad), training_file=file.id)
        assert err.value.status_code == 400 and err.value.body["param"] == "model"


def test_devices_name_one_gpu_of_this_server(server):
    client = server.client()
    file = upload(client, jsonl(FACTS))
    for devices, why in (([0, 1], r"Multi-GPU training is not built yet \(issue #20\)"), ([0], "it has no GPU"),
                         ([], "devices"), ("all", "devices")):
        with pytest.raises(openai.BadRequestError, match=why) as err:
            client.fine_tuning.jobs.create(model="tiny", training_file=file.id, extra_body={"devices": devices})
        assert err.value.body["param"] == "devices"
    assert 'name="devices"' not in new_page(server)  # no picker on a machine without several GPUs


def test_with_an_api_key_a_typed_path_is_refused_naming_the_option(tiny_dir, tmp_path):
    (tmp_path / "link").symlink_to(tiny_dir)  # the served base is trainable by its own path: not this one
    srv = Server(tmp_path / "home", tiny_dir, "--api-key", "k3y", "--no-jobs")
    try:
        with pytest.raises(openai.BadRequestError, match="--allow-model-paths") as err:
            srv.client(api_key="k3y").fine_tuning.jobs.create(model=str(tmp_path / "link"), training_file="file-x")
        assert err.value.body["param"] == "model"
        assert capabilities(srv, authorization="Bearer k3y")["model_paths"] is False
        assert 'name="model_path"' not in new_page(srv, authorization="Bearer k3y")
    finally:
        srv.stop()


@pytest.mark.parametrize(("explicit", "host", "key", "allowed"), [
    (None, "127.0.0.1", None, True), (None, "127.0.0.1", "k", False), (None, "0.0.0.0", "k", False),
    (True, "0.0.0.0", "k", True), (False, "127.0.0.1", None, False)])
def test_typed_paths_are_on_by_default_only_for_the_machines_own_user(explicit, host, key, allowed):
    from inhouse.serve.security import model_paths_allowed

    assert model_paths_allowed(explicit, host, key) is allowed


def test_hyperparameters_are_checked_when_the_job_is_created(server):
    """Not when the job runs: a text, a bool or an absurd number is a 400 naming the hyperparameter."""
    client = server.client()
    file_id = upload(client, jsonl(FACTS[:2])).id
    for hp, param in (({"n_epochs": "abc"}, "hyperparameters.n_epochs"), ({"batch_size": True}, "hyperparameters.batch_size"),
                      ({"n_epochs": 10**12}, "hyperparameters.n_epochs"),
                      ({"learning_rate_multiplier": 1e9}, "hyperparameters.learning_rate_multiplier")):
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(model="builtin:tiny", training_file=file_id, hyperparameters=hp)
        assert err.value.body["param"] == param, (hp, err.value.body)
