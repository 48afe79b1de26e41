"""POST/GET/DELETE /admin/train in process. The job runner is real (a separate process holding the lock,
progress read from its file, cancel by signal); the process it runs here is a stand-in that reports progress
and waits for the test's go-ahead, so every state is reached by an event, not by time. The real training
process is exercised in tests/training/test_from_gallery.py and the slow end-to-end test."""
from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from app.core.config import Settings
from app.services.training_job import TrainingJobs, training_command
from tests.app.test_routes import error, make_client, store  # noqa: F401 - fixtures

STANDIN = '''
import json, os, sys, time
from pathlib import Path
progress, go, outcome = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
def write(d):
    tmp = progress.with_name(".p.tmp"); tmp.write_text(json.dumps(d)); os.replace(tmp, progress)
write({"phase": "training", "step": 1, "total_steps": 2, "loss": 0.5, "eta_s": 3.0, "validation": [{"step": 1, "rank1": 0.9}]})
while not go.exists():
    time.sleep(0.02)
if outcome == "crash":
    sys.exit("boom")
result = {"published": outcome == "published", "checkpoint": "checkpoints/candidate.pt"}
write({"phase": "published" if outcome == "published" else "not published", "step": 2, "total_steps": 2,
       "loss": 0.4, "eta_s": 0, "validation": [{"step": 1, "rank1": 0.9}, {"step": 2, "rank1": 0.8}],
       "kept": {"step": 1, "reason": "best"}, "recipe": {"steps": 2}, "result": result})
'''


def wait_for(fn, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.fixture
def standin(tmp_path):
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)

    def command(outcome: str, go):
        return lambda options, progress, settings: [sys.executable, str(script), str(progress), str(go), outcome]
    return command


@pytest.fixture
def admin(store, tmp_path):  # noqa: F811
    c, service = make_client(store, tmp_path)
    yield c, service
    if service.training.running():  # never leave a process behind
        service.training.cancel()
    service.close()


def test_start_progress_one_at_a_time_cancel_and_restart(admin, standin, tmp_path):
    c, service = admin
    error(c.get("/admin/train"), 404, "no_training_job")
    error(c.delete("/admin/train"), 409, "no_training_running")
    go = tmp_path / "go"
    service.training.command = standin("not_published", go)
    r = c.post("/admin/train", json={"max_minutes": 1, "lr": 1e-6})
    assert r.status_code == 202, r.text
    first = r.json()
    assert first["state"] == "running" and first["options"]["lr"] == 1e-6
    state = wait_for(lambda: (s := c.get("/admin/train").json())["step"] == 1 and s)
    assert (state["loss"], state["total_steps"], state["eta_s"]) == (0.5, 2, 3.0)
    assert state["validation"] == [{"step": 1, "rank1": 0.9}]
    error(c.post("/admin/train", json={}), 409, "training_in_progress")
    cancelled = c.delete("/admin/train").json()
    assert cancelled["id"] == first["id"]
    wait_for(lambda: c.get("/admin/train").json()["state"] == "cancelled")
    assert not service.training.running()
    r = c.post("/admin/train", json={})  # the lock went with the process
    assert r.status_code == 202 and r.json()["id"] != first["id"]
    go.touch()
    done = wait_for(lambda: (s := c.get("/admin/train").json())["state"] == "not_published" and s)
    assert done["result"]["published"] is False and done["swap"] is None
    assert [p["step"] for p in done["validation"]] == [1, 2]  # the curve, the kept step and why, the recipe
    assert done["kept"] == {"step": 1, "reason": "best"} and done["recipe"] == {"steps": 2}


def test_a_crashed_job_is_failed_with_its_log(admin, standin, tmp_path):
    c, service = admin
    go = tmp_path / "go"
    go.touch()
    service.training.command = standin("crash", go)
    assert c.post("/admin/train", json={}).status_code == 202
    done = wait_for(lambda: (s := c.get("/admin/train").json())["state"] == "failed" and s["returncode"] is not None
                    and s)
    assert done["returncode"] == 1 and "boom" in done["log_tail"]


@pytest.mark.parametrize("body", [{"lr": 0}, {"lr": 2}, {"max_minutes": 0}, {"batch_size": 2}, {"k": 1},
                                  {"val_identities": 1}, {"mining": "random"}, {"train_from": "nope"},
                                  {"train_from": "../x"}, {"lfw_pairs": 5}, {"epochs": "many"}, {"surprise": 1},
                                  {"start_from": ""}, {"max_steps": 0}, {"max_steps": -5}, {"max_steps": 1.5},
                                  {"max_steps": "many"}, {"max_steps": 10**8}, {"keep": "worst"},
                                  {"schedule": "step"}, {"warmup": 1}, {"warmup": -0.1}, {"l2sp": -1},
                                  {"patience": -1}, {"select_lfw_pairs": 7000}, {"blend": [1.0]}, {"blend": [0]},
                                  {"blend": 0.5}, {"blend": [0.1, 0.2, 0.3, 0.4, 0.5]}])
def test_bad_training_requests_start_nothing(admin, body):
    c, service = admin
    error(c.post("/admin/train", json=body), 422, "invalid_request")
    error(c.get("/admin/train"), 404, "no_training_job")
    assert not (service.settings.checkpoints_dir / "jobs" / "latest.json").exists()


@pytest.mark.parametrize("start_from, status, code", [("nope.pt", 404, "unknown_checkpoint"),
                                                       ("../../etc/passwd", 422, "checkpoint_outside_directory")])
def test_an_unknown_starting_checkpoint_starts_nothing(admin, start_from, status, code):
    c, service = admin
    error(c.post("/admin/train", json={"start_from": start_from}), status, code)
    error(c.get("/admin/train"), 404, "no_training_job")
    assert not (service.settings.checkpoints_dir / "jobs" / "latest.json").exists()


def test_a_published_checkpoint_is_swapped_to_by_the_worker_that_started_the_job(tmp_path, standin):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'g.db'}", checkpoints_dir=tmp_path / "ck")
    go = tmp_path / "go"
    go.touch()
    jobs = TrainingJobs(settings, command=standin("published", go))
    swapped = []

    async def swap(name):
        swapped.append(name)
        return {"state": "reembedding", "candidate_name": name}

    jobs.on_published = swap

    async def scenario():
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(jobs.start, {}, loop)
        while jobs.state()["returncode"] is None:
            await asyncio.sleep(0.02)  # the loop must run for the swap to be scheduled on it
        return jobs.state()

    state = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert swapped == ["candidate.pt"] and state["state"] == "published"
    assert state["swap"] == {"state": "reembedding", "candidate_name": "candidate.pt"}


def test_the_training_command_carries_the_options_and_no_database_url(tmp_path):
    settings = Settings(database_url="postgresql+psycopg://faceid:s3cret@db/faceid", checkpoints_dir=tmp_path)
    cmd = training_command({"lr": 1e-6, "max_minutes": 2.0, "max_steps": None, "mining": "semi_hard"},
                           tmp_path / "p.json", settings)
    assert cmd[1:4] == ["-m", "training.main", "--from-gallery"]
    assert "--database-url" not in cmd and not any("s3cret" in a for a in cmd)  # `ps` shows every argument
    assert cmd[cmd.index("--lrin") + 1] == "1e-06" and cmd[cmd.index("--mining") + 1] == "semi_hard"
    assert "--max-steps" not in cmd


def test_every_option_reaches_the_training_command_line_as_the_cli_reads_it(tmp_path):
    from app.schemas import TrainRequest
    from training.main import build_parser

    body = {"max_minutes": 5.0, "epochs": 3, "max_steps": 150, "lr": 5e-5, "batch_size": 16, "k": 2,
            "val_identities": 0.3, "lfw_pairs": 600, "mining": "semi_hard", "margin": 0.3, "train_from": "mixed_6a",
            "validate_every": 25, "seed": 7, "keep": "last", "patience": 5, "select_lfw_pairs": 100,
            "schedule": "linear", "warmup": 0.2, "l2sp": 0.5, "blend": [0.25, 0.5]}
    options = TrainRequest(**body).model_dump()
    cmd = training_command(options, tmp_path / "p.json", Settings(checkpoints_dir=tmp_path))
    args = vars(build_parser().parse_args(cmd[3:]))
    renamed = {"lr": "lrin", "batch_size": "bs"}
    assert {k: args[renamed.get(k, k)] for k in body} == body
    # an empty body trains as the README's table was measured (benchmarks/feedback_loop.py's settings)
    args = build_parser().parse_args(training_command(TrainRequest().model_dump(), tmp_path / "p.json",
                                                      Settings(checkpoints_dir=tmp_path))[3:])
    assert (args.lrin, args.train_from, args.val_identities, args.bs, args.k, args.blend, args.l2sp) == \
        (5e-5, "mixed_6a", 0.3, 32, 4, [0.5], 0.01)
    # an empty list turns blending off; left out, the trainer's default
    for blend, expected in (([], []), (None, [0.5])):
        options = TrainRequest(**({"blend": blend} if blend is not None else {})).model_dump()
        cmd = training_command(options, tmp_path / "p.json", Settings(checkpoints_dir=tmp_path))
        assert build_parser().parse_args(cmd[3:]).blend == expected


def test_job_files_are_private_and_hold_no_password(store, tmp_path, standin):  # noqa: F811
    c, service = make_client(store, tmp_path)
    go = tmp_path / "go"
    go.touch()

    def command(options, progress, settings):  # the real command's arguments, plus a URL with a password
        return standin("not_published", go)(options, progress, settings) + \
            training_command(options, progress, settings)[1:] + ["--note", "postgresql://u:pw@h/db"]
    service.training.command = command
    try:
        assert c.post("/admin/train", json={}).status_code == 202
        wait_for(lambda: c.get("/admin/train").json()["state"] == "not_published")
        folder = service.training.latest()
        for path in (folder, folder / "job.json", folder / "train.log"):
            assert path.stat().st_mode & 0o077 == 0, path
        job = (folder / "job.json").read_text()
        assert service.settings.database_url not in job and "pw@" not in job and "u:***@h" in job
    finally:
        service.close()


def test_a_batch_size_that_cannot_fit_is_refused_with_the_estimate(store, tmp_path, standin):  # noqa: F811
    c, service = make_client(store, tmp_path, train_memory_bytes=3 * 2**30)
    service.training.command = standin("not_published", tmp_path / "go")
    try:
        err = error(c.post("/admin/train", json={"batch_size": 128}), 422, "batch_too_large")
        assert err["detail"]["estimated_bytes"] > 3 * 2**30 and 0 < err["detail"]["max_batch_size"] < 128
        assert not service.training.running() and service.training.latest() is None
        r = c.post("/admin/train", json={"batch_size": err["detail"]["max_batch_size"]})
        assert r.status_code == 202, r.text
    finally:
        (tmp_path / "go").touch()
        wait_for(lambda: not service.training.running())
        service.close()


def test_old_candidates_are_deleted_when_a_job_ends(admin, standin, tmp_path):
    c, service = admin
    folder = service.settings.checkpoints_dir / "candidates"
    folder.mkdir(parents=True)
    for i in range(5):
        (folder / f"gallery-{i}.pt").write_bytes(b"x")
        (folder / f"gallery-{i}.report.json").write_text("{}")
        os.utime(folder / f"gallery-{i}.pt", (1000 + i, 1000 + i))
    go = tmp_path / "go"
    go.touch()
    service.training.command = standin("not_published", go)
    assert c.post("/admin/train", json={}).status_code == 202
    wait_for(lambda: c.get("/admin/train").json()["state"] == "not_published"
             and len(list(folder.glob("*.pt"))) == service.settings.train_keep_candidates)
    assert sorted(p.name for p in folder.glob("*.pt")) == ["gallery-2.pt", "gallery-3.pt", "gallery-4.pt"]
    assert len(list(folder.glob("*.report.json"))) == 5
