"""Helpers for the package's tests: free ports, a job's ranks as threads of this process, `hybridshard export`."""

import os
import socket
import subprocess
import threading

import pytest

import hybridshard  # noqa: F401  (loads torch first)
from hybridshard import safetensors

TINY = {"preset": "tiny", "seed": 3}  # 4 layers, hidden 64, 4 heads, 2 kv heads, vocabulary 500, bf16


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(world_size, body, timeout=120):
    """Runs body(rank) for every rank on its own thread (the engine releases the GIL while it waits); returns the
    results in rank order, or raises the first rank's exception."""
    results = [None] * world_size
    errors = [None] * world_size

    def run(rank):
        try:
            results[rank] = body(rank)
        except BaseException as error:  # noqa: BLE001 (handed to the main thread)
            errors[rank] = error

    threads = [threading.Thread(target=run, args=(rank,), daemon=True) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"a rank did not finish within {timeout} s")
    for rank, error in enumerate(errors):
        if error is not None:
            raise error
    return results


def rl_iteration(engine):
    """One RL-shaped iteration with every phase reported: train (an in-place update), enter, rollout (reads a view),
    exit."""
    with engine.phase("train"):
        engine.train_params()["decoder.final_layernorm.weight"].mul_(0.5)
    weights = engine.enter()
    with engine.phase("rollout"):
        weights["model.norm.weight"].sum()
    del weights
    engine.exit()


def job_yaml(model, train, rollout, world_size, port, extra=""):
    """A job file's text for these layouts (YAML flow mappings)."""

    def flow(mapping):
        return "{" + ", ".join(f"{key}: {value}" for key, value in mapping.items()) + "}"

    keys = {"tp": "tensor_model_parallel_size", "pp": "pipeline_model_parallel_size",
            "vpp": "virtual_pipeline_model_parallel_size"}
    return (
        f"model: {flow(model)}\n"
        f"train: {flow({keys.get(k, k): v for k, v in train.items()})}\n"
        f"rollout: {flow({keys.get(k, k): v for k, v in rollout.items()})}\n"
        f"runtime: {{world_size: {world_size}, backend: gloo, master_addr: 127.0.0.1, master_port: {port}, "
        f"timeout: 30s}}\n"
        f"memory: {{bucket_bytes: 64KiB}}\n" + extra
    )


@pytest.fixture
def export(tmp_path):
    """export(job_file) -> {inference tp rank: (name -> tensor)} from `hybridshard export` of that job."""

    def run(job_file):
        cli = os.environ.get("HYBRIDSHARD_CLI")
        if not cli:
            pytest.fail("HYBRIDSHARD_CLI (the hybridshard command, for `export`) is not set: run through ctest")
        out = tmp_path / f"export-{os.path.basename(job_file)}"
        done = subprocess.run([cli, "export", str(job_file), "--out", str(out)], timeout=120, capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.fail(f"hybridshard export {job_file} failed ({done.returncode}):\n{done.stderr}")
        shards = {}
        for name in sorted(os.listdir(out)):
            tensors, metadata = safetensors.read(out / name)
            shards[int(metadata["hybridshard.inference_tp_rank"])] = tensors
        return shards

    return run
