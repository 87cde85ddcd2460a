"""The runner's slots, on fake GPUs and fake job processes: a job that asked for a GPU waits for that
one, and sees only it (CUDA_VISIBLE_DEVICES); a job that did not takes the first free slot."""

import pytest

from inhouse.jobs import runner as runner_module
from inhouse.jobs.runner import Runner
from inhouse.jobs.store import Store


class FakeProcess:
    """A job process that runs until the test ends it; it records the environment it was given."""

    def __init__(self, argv, env, **_):
        self.job, self.env, self.code, self.pid = argv[-1], env, None, 0

    def poll(self):
        return self.code


@pytest.fixture
def fake(tmp_path, monkeypatch):
    started = {}

    def spawn(argv, env, **kw):
        started[argv[-1]] = FakeProcess(argv, env, **kw)
        return started[argv[-1]]

    monkeypatch.setattr(runner_module.subprocess, "Popen", spawn)
    store = Store(tmp_path / "jobs.sqlite3")
    return store, Runner(store, slots=["0", "1"], log_dir=tmp_path / "logs"), started


def queue(store, job_id, devices, at):
    store.insert("jobs", {"id": job_id, "created_at": at, "status": "queued", "model": "m", "base": "m",
                          "training_file": "file-x", "seed": 0, "hyperparameters": {}, "method": {}, "recipe": {},
                          "output_name": job_id, "devices": devices})


def finish(store, runner, started, job_id):
    store.update("jobs", job_id, status="succeeded")
    started[job_id].code = 0
    runner._reap()
    runner._launch()


def status(store, job_id):
    return store.get("jobs", job_id, "job")["status"]


def test_a_job_asking_for_a_busy_gpu_waits_for_it_and_sees_only_it(fake):
    store, runner, started = fake
    queue(store, "first-on-1", [1], 1)
    queue(store, "second-on-1", [1], 2)
    queue(store, "any", None, 3)
    runner._launch()
    assert started["first-on-1"].env["CUDA_VISIBLE_DEVICES"] == "1"
    assert started["any"].env["CUDA_VISIBLE_DEVICES"] == "0"  # not held back by the job waiting for GPU 1
    assert status(store, "second-on-1") == "queued" and "second-on-1" not in started
    finish(store, runner, started, "any")
    assert status(store, "second-on-1") == "queued"  # GPU 0 is free, but it asked for GPU 1
    finish(store, runner, started, "first-on-1")
    assert status(store, "second-on-1") == "running" and started["second-on-1"].env["CUDA_VISIBLE_DEVICES"] == "1"


def test_an_older_job_waiting_for_its_gpu_gets_it_before_a_newer_job_that_takes_any(fake):
    store, runner, started = fake
    queue(store, "busy-0", [0], 1)
    queue(store, "busy-1", [1], 2)
    runner._launch()
    queue(store, "wants-1", [1], 3)
    queue(store, "any", None, 4)
    finish(store, runner, started, "busy-1")
    assert status(store, "wants-1") == "running" and status(store, "any") == "queued"


def test_a_job_asking_for_a_gpu_the_machine_lacks_fails_instead_of_waiting_forever(fake):
    store, runner, started = fake
    queue(store, "on-3", [3], 1)
    runner._launch()
    job = store.get("jobs", "on-3", "job")
    assert job["status"] == "failed" and job["error"]["param"] == "devices" and "GPUs 0, 1" in job["error"]["message"]
    assert "on-3" not in started
