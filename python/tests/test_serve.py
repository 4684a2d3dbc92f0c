"""A Python job reporting to a real `hybridshard serve`: seen under its name in /jobs, /status and /metrics; a second
live job with the same name is refused, says so once and goes on."""

import json
import os
import queue
import subprocess
import threading
import time
import urllib.request

import pytest

import hybridshard
from conftest import TINY, free_port, rl_iteration, run_ranks


@pytest.fixture
def serve():
    """A `hybridshard serve` on free ports: (HTTP base URL, events address)."""
    cli = os.environ.get("HYBRIDSHARD_CLI")
    if not cli:
        pytest.fail("HYBRIDSHARD_CLI (the hybridshard command) is not set: run through ctest")
    process = subprocess.Popen([cli, "serve", "--listen", "127.0.0.1:0", "--events", "127.0.0.1:0", "--retention",
                                "120"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    url = address = None
    deadline = time.monotonic() + 20
    while (url is None or address is None) and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if "metrics http://" in line:
            url = line.split("metrics ")[1].split("/metrics")[0]
        if "HYBRIDSHARD_SERVE=" in line:
            address = line.split("HYBRIDSHARD_SERVE=")[1].split()[0]
    if url is None or address is None:
        process.kill()
        pytest.fail("hybridshard serve did not print its addresses within 20 s")
    yield url, address
    process.terminate()
    process.wait(10)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_for(predicate, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def test_a_python_job_is_watched_by_serve(serve):
    url, address = serve
    port = free_port()
    iterations = 2

    def rank(r):
        engine = hybridshard.Engine(model=TINY, train={"tp": 2}, rollout={"tp": 1}, schedule={"iterations": iterations},
                                    world_size=2, rank=r, master_port=port, serve=address, job_name="py-rl")
        for _ in range(iterations):
            rl_iteration(engine)
        engine.close()

    run_ranks(2, rank)
    jobs = wait_for(lambda: [job for job in get_json(url + "/jobs")["jobs"]
                             if job["name"] == "py-rl" and job["state"] != "running"])
    assert len(jobs) == 1 and jobs[0]["state"] == "finished" and jobs[0]["world_size"] == 2, jobs
    status = get_json(url + "/status?job=py-rl")
    assert status["state"] == "finished" and len(status["ranks"]) == 2, status
    assert status["iteration"] == iterations - 1 and status["message"] == "all 2 ranks finished", status
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'job="py-rl"' in metrics
    assert any(line.startswith("hybridshard_") and 'job="py-rl"' in line and 'phase="enter"' in line
               for line in metrics.splitlines()), "no enter phase series for the job"


def test_a_second_job_with_the_same_name_is_refused_and_goes_on(serve, capfd):
    url, address = serve
    first = hybridshard.Engine(model=TINY, world_size=1, rank=0, serve=address, job_name="twin")
    wait_for(lambda: [job for job in get_json(url + "/jobs")["jobs"] if job["name"] == "twin"])
    second = hybridshard.Engine(model=TINY, world_size=1, rank=0, serve=address, job_name="twin")
    weights = second.enter()  # unwatched, but working
    del weights
    second.exit()
    second.close()
    first.close()
    err = capfd.readouterr().err
    assert err.count("a job named 'twin' is already running") == 1, err
    assert "the job goes on without reporting its events" in err
