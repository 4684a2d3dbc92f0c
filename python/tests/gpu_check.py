#!/usr/bin/env python3
"""The package on CUDA: engines of 1-2 ranks over NCCL, one GPU each (ranks as threads of this process).

Checks that enter()'s vLLM tensors are CUDA tensors on the rank's GPU, views of the engine's inference buffer
(data_ptr), bit-identical to `hybridshard export` of the same checkpoint; that an in-place update of a train view on
the GPU reaches the next enter(); that exit refuses while a view lives; that a CPU tensor handed to a CUDA engine is
refused. Prints enter/exit times. Exit status: 0 passed, 1 failed, 77 skipped (no CUDA build or no GPU).

The checkpoint and the expected shards come from DATA (--data, or $HYBRIDSHARD_GPU_DATA, or .gpu-deps/gpu-check in
the source tree, which `scripts/gpu data` writes); without one they are made here with `hybridshard export`
($HYBRIDSHARD_CLI). `gpu_check.py --make-data DATA` makes them on a machine that can export (the GPU machine's
libtorch lacks Gloo, which export runs on), to carry them along.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import torch

import hybridshard
from hybridshard import safetensors

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
from tiny_checkpoint import CONFIG, hf_tensors, write_checkpoint  # noqa: E402

# (name, world size, train layout, rollout tensor parallel size)
CASES = [
    ("tp1-to-tp1", 1, "tensor_model_parallel_size: 1", 1),
    ("tp2-to-tp1", 2, "tensor_model_parallel_size: 2", 1),
    ("tp1dp2-to-tp2", 2, "tensor_model_parallel_size: 1", 2),
]


def job_text(world_size, train, rollout_tp):
    return (f"model: {{checkpoint: ../checkpoint}}\ntrain: {{{train}}}\n"
            f"rollout: {{tensor_model_parallel_size: {rollout_tp}}}\n"
            f"runtime: {{world_size: {world_size}, timeout: 60s}}\nmemory: {{bucket_bytes: 64KiB}}\n")


def make_data(directory, cli):
    write_checkpoint(os.path.join(directory, "checkpoint"), hf_tensors(CONFIG, seed=11))
    for name, world_size, train, rollout_tp in CASES:
        case = os.path.join(directory, name)
        os.makedirs(case, exist_ok=True)
        job = os.path.join(case, "job.yaml")
        with open(job, "w") as file:
            file.write(job_text(world_size, train, rollout_tp))
        done = subprocess.run([cli, "export", job, "--out", os.path.join(case, "expected")], capture_output=True,
                              text=True)
        if done.returncode != 0:
            hint = ""
            if "without c10d's ProcessGroupGloo" in done.stderr:
                hint = ("\nthis build has no Gloo, so export cannot make the expected shards here: run "
                        "`scripts/gpu data` on a machine with Gloo (it writes .gpu-deps/gpu-check) and carry "
                        ".gpu-deps along, or pass --data")
            raise RuntimeError(f"hybridshard export {job} failed:\n{done.stderr}{hint}")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(world_size, body):
    results, errors = [None] * world_size, [None] * world_size

    def run(rank):
        try:
            results[rank] = body(rank)
        except BaseException as error:  # noqa: BLE001
            errors[rank] = error

    threads = [threading.Thread(target=run, args=(rank,), daemon=True) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
        if thread.is_alive():
            raise TimeoutError("a rank did not finish within 240 s")
    for error in errors:
        if error is not None:
            raise error
    return results


def bitwise_mismatches(weights, expected):
    problems = set(weights) ^ set(expected)
    for name in set(weights) & set(expected):
        a, b = weights[name].cpu(), expected[name]
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a.view(torch.int16), b.view(torch.int16)):
            problems.add(name)
    return sorted(problems)


def check_case(data, name, world_size, on_cpu=False):
    case = os.path.join(data, name)
    expected = {}
    for file in os.listdir(os.path.join(case, "expected")):
        tensors, metadata = safetensors.read(os.path.join(case, "expected", file))
        expected[int(metadata["hybridshard.inference_tp_rank"])] = tensors
    port = free_port()

    def rank(r):
        device = torch.device("cpu") if on_cpu else torch.device("cuda", r)
        engine = hybridshard.Engine(os.path.join(case, "job.yaml"), rank=r, world_size=world_size,
                                    master_port=port, device=str(device))
        problems = []
        params = engine.train_params()
        for tensor_name, tensor in params.items():
            if tensor.device != device or tensor.data_ptr() != engine.train_address(tensor_name):
                problems.append(f"train view {tensor_name} on {tensor.device} is not the engine's buffer")
        # A CPU tensor handed to a CUDA engine is refused.
        cpu = {n: torch.zeros(s, dtype=torch.bfloat16) for n, s in engine.train_layout()}
        try:
            if not on_cpu:
                engine.attach(cpu)
                problems.append("attach() took CPU tensors into a CUDA engine")
        except hybridshard.TensorMismatchError as error:
            if "on device cpu, but the engine's is cuda" not in str(error):
                problems.append(f"attach() of CPU tensors said: {error}")

        started = time.perf_counter()
        weights = engine.enter()
        enter_ms = (time.perf_counter() - started) * 1e3
        for tensor_name, tensor in weights.items():
            if tensor.device != device or tensor.data_ptr() != engine.inference_address(tensor_name):
                problems.append(f"inference view {tensor_name} is not the engine's buffer on {device}")
        mismatches = bitwise_mismatches(weights, expected[engine.inference_tp_rank])
        if mismatches:
            problems.append(f"{len(mismatches)} tensors differ from export: {mismatches[:4]}")
        kept = weights["model.norm.weight"]
        try:
            engine.exit()
            problems.append("exit() freed the inference buffer while a view of it lived")
        except hybridshard.LiveViewsError:
            pass
        del kept, weights, tensor
        started = time.perf_counter()
        engine.exit("free")
        exit_ms = (time.perf_counter() - started) * 1e3

        # The trainer updates a train view on the GPU (torch's stream); the next enter sees it.
        params["decoder.final_layernorm.weight"].fill_(3.0)
        weights = engine.enter()
        if not bool((weights["model.norm.weight"] == 3.0).all()):
            problems.append("an in-place update of a train view on the GPU did not reach enter()")
        del weights
        engine.exit("offload")
        engine.close()
        return problems, enter_ms, exit_ms, engine.inference_tp_rank

    failed = False
    for r, (problems, enter_ms, exit_ms, tp_rank) in enumerate(run_ranks(world_size, rank)):
        status = "ok" if not problems else "FAILED: " + "; ".join(problems)
        print(f"gpu_check {name}: rank {r} ({'cpu' if on_cpu else f'cuda:{r}'}, inference tp rank {tp_rank}): first enter {enter_ms:.2f} ms, "
              f"exit {exit_ms:.2f} ms: {status}", flush=True)
        failed |= bool(problems)
    return not failed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    carried = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".gpu-deps", "gpu-check")
    parser.add_argument("--data", default=os.environ.get("HYBRIDSHARD_GPU_DATA")
                        or (os.path.normpath(carried) if os.path.isdir(carried) else None))
    parser.add_argument("--make-data", metavar="DIR")
    parser.add_argument("--cpu", action="store_true", help="the same checks on CPU ranks over Gloo (to try the script)")
    args = parser.parse_args()
    cli = os.environ.get("HYBRIDSHARD_CLI")
    if args.make_data:
        make_data(args.make_data, cli)
        print(f"gpu_check: data for {len(CASES)} cases in {args.make_data}")
        return 0
    if args.cpu:
        with tempfile.TemporaryDirectory() as scratch:
            data = args.data or scratch
            if not args.data:
                make_data(data, cli)
            ok = all([check_case(data, name, world_size, on_cpu=True) for name, world_size, _, _ in CASES])
        print(f"gpu_check: on CPU {'passed' if ok else 'FAILED'}")
        return 0 if ok else 1
    if not hybridshard.built_with_cuda or not torch.cuda.is_available():
        print(f"gpu_check: skipped (package built with CUDA: {hybridshard.built_with_cuda}, "
              f"torch sees {torch.cuda.device_count()} GPUs)")
        return 77
    gpus = torch.cuda.device_count()
    print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, {gpus} GPU(s): "
          f"{torch.cuda.get_device_name(0)}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        if not data:
            data = scratch
            make_data(data, cli)
        ran = [name for name, world_size, _, _ in CASES if world_size <= gpus]
        ok = all([check_case(data, name, world_size) for name, world_size, _, _ in CASES if world_size <= gpus])
    skipped = [name for name, world_size, _, _ in CASES if world_size > gpus]
    print(f"gpu_check: {'passed' if ok else 'FAILED'}: {', '.join(ran)}"
          + (f" (needing more GPUs than {gpus}: {', '.join(skipped)})" if skipped else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
