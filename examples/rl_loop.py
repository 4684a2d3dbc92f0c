#!/usr/bin/env python3
"""An RL-shaped loop over hybridshard's Python package: train -> enter -> rollout -> exit, on 4 CPU ranks over Gloo.

    python3 examples/rl_loop.py --ranks 4 --iterations 2 --check-with build/bin/hybridshard

Without RANK in the environment it is the launcher: it writes a small Llama as a Hugging Face checkpoint, a job
(train tensor parallel 2 x pipeline parallel 2, rollout tensor parallel 1) and starts the ranks as torchrun would
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Each rank:
  - trains: a torch optimizer (SGD) steps the Megatron-Core-layout tensors the engine hands out, in place;
  - enters: gets vLLM-named tensors (fused qkv_proj / gate_up_proj, padded vocabulary) viewing the inference buffer;
  - rolls out: greedy decoding with a small Llama forward that reads those tensors as they are;
  - with --check-with, checks every vLLM tensor bit for bit against `hybridshard export` of the same weights, and
    the rollout's logits against the same forward on the Hugging Face (unfused) tensors;
  - exits, freeing the inference buffer.
The toy objective is 0.5 * ||w||^2 with a learning rate of 1/8: its update w <- w - w/8 is elementwise and exact in
float32, so the launcher applies it to the Hugging Face tensors independently and exports the result.
With --serve HOST:PORT (a `hybridshard serve`'s --events address) every rank streams its events there, under the job
name rl-loop (or $HYBRIDSHARD_JOB): the dashboard shows the loop live (hybridshard-dashboard --connect ... --job rl-loop).
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_llama  # noqa: E402
from tiny_checkpoint import CONFIG, hf_tensors, write_checkpoint  # noqa: E402

import hybridshard  # noqa: E402
from hybridshard import safetensors  # noqa: E402

LEARNING_RATE = 0.125


# --- The launcher's side --------------------------------------------------------------------------------------------

def train_step(tensor):
    """The trainer's update, applied to one tensor in place: SGD on 0.5 * ||w||^2 (gradient w)."""
    tensor.add_(tensor.clone(), alpha=-LEARNING_RATE)


def job_text(checkpoint, ranks, port, iterations):
    return f"""# Written by examples/rl_loop.py.
model:
  checkpoint: {checkpoint}
train:
  tensor_model_parallel_size: 2
  pipeline_model_parallel_size: {ranks // 2 if ranks > 2 else 1}
rollout:
  tensor_model_parallel_size: 1
schedule:
  iterations: {iterations}
runtime:
  world_size: {ranks}
  backend: gloo
  master_addr: 127.0.0.1
  master_port: {port}
  timeout: 30s
memory:
  exit_policy: free
  bucket_bytes: 64KiB
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(args, workdir):
    """The checkpoint the job starts from, the job, and (with --check-with) what export makes of iteration k's
    weights: expected-<k>/rank-<tp rank>.safetensors."""
    tensors = hf_tensors(CONFIG, seed=7)
    write_checkpoint(os.path.join(workdir, "checkpoint-0"), tensors)
    port = free_port()
    job = os.path.join(workdir, "job.yaml")
    with open(job, "w") as file:
        file.write(job_text(os.path.join(workdir, "checkpoint-0"), args.ranks, port, args.iterations))
    if not args.check_with:
        return job
    for iteration in range(1, args.iterations + 1):
        for tensor in tensors.values():
            train_step(tensor)
        checkpoint = os.path.join(workdir, f"checkpoint-{iteration}")
        write_checkpoint(checkpoint, tensors)
        export_job = os.path.join(workdir, f"export-{iteration}.yaml")
        with open(export_job, "w") as file:
            file.write(job_text(checkpoint, args.ranks, 0, args.iterations))
        done = subprocess.run([args.check_with, "export", export_job, "--out",
                               os.path.join(workdir, f"expected-{iteration}")], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"rl_loop: hybridshard export of iteration {iteration} failed:\n{done.stderr}")
    return job


def launch(args):
    workdir = args.workdir or tempfile.mkdtemp(prefix="hybridshard-rl-")
    os.makedirs(workdir, exist_ok=True)
    code = run_job(args, workdir)
    if code == 0 and not args.workdir:
        shutil.rmtree(workdir)
    return code


def run_job(args, workdir):
    job = prepare(args, workdir)
    port = free_port()
    command = [sys.executable, os.path.abspath(__file__), "--job", job, "--iterations", str(args.iterations),
               "--workdir", workdir]
    if args.check_with:
        command += ["--check-with", args.check_with]
    if args.stale_rank is not None:
        command += ["--stale-rank", str(args.stale_rank)]
    ranks = []
    for rank in range(args.ranks):
        # One torch thread per rank: the ranks share this host's cores.
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(args.ranks), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        if args.serve:
            env.update(HYBRIDSHARD_SERVE=args.serve, HYBRIDSHARD_JOB=os.environ.get("HYBRIDSHARD_JOB", "rl-loop"))
        ranks.append(subprocess.Popen(command, env=env))
    deadline = time.monotonic() + args.timeout
    codes = [None] * args.ranks
    while None in codes:
        codes = [process.poll() for process in ranks]
        failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed or time.monotonic() > deadline:
            for process in ranks:
                if process.poll() is None:
                    process.kill()
            reason = f"rank(s) {failed} failed" if failed else f"the ranks ran past {args.timeout} s"
            print(f"rl_loop: {reason}; stopped the others (work directory {workdir})", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"rl_loop: {args.ranks} ranks, {args.iterations} iterations done")
    return 0


# --- One rank -------------------------------------------------------------------------------------------------------

def bitwise_mismatches(weights, expected):
    problems = set(weights) ^ set(expected)
    for name in set(weights) & set(expected):
        a, b = weights[name], expected[name]
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a.view(torch.int16), b.view(torch.int16)):
            problems.add(name)
    return sorted(problems)


def prompt(rank, iteration, length=6):
    generator = torch.Generator().manual_seed(1000 * iteration + rank)
    return torch.randint(0, CONFIG["vocab_size"], (length,), generator=generator)


def run_rank(args):
    started = time.monotonic()
    engine = hybridshard.Engine(args.job)  # rank, world and store from RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT
    rank = engine.rank
    shape = reference_llama.LlamaShape(CONFIG)

    # The trainer's parameters are the engine's train buffers (Megatron-Core names and shards): nn.Parameter shares
    # the view's storage, so the optimizer steps the engine's memory.
    params = {name: torch.nn.Parameter(view) for name, view in engine.train_params().items()}
    for name, parameter in params.items():
        assert parameter.data_ptr() == engine.train_address(name), f"{name} is not a view of the train buffer"
    optimizer = torch.optim.SGD(params.values(), lr=LEARNING_RATE)
    print(f"[rank {rank}] engine ready ({time.monotonic() - started:.1f} s): train tp rank {rank % 2}, "
          f"{len(params)} Megatron-Core tensors, inference tp rank {engine.inference_tp_rank}", flush=True)

    for iteration in range(args.iterations):
        with engine.phase("train"):
            optimizer.zero_grad()
            loss = 0.5 * sum((p.float() ** 2).sum() for p in params.values())
            loss.backward()
            if not (args.stale_rank == rank and iteration == args.iterations - 1):
                optimizer.step()

        weights = engine.enter()  # vLLM names -> views of the inference buffer
        with engine.phase("rollout"):
            tokens = reference_llama.generate(weights, shape, prompt(rank, iteration), new_tokens=6)

        checked = ""
        if args.check_with:
            expected_dir = os.path.join(args.workdir, f"expected-{iteration + 1}")
            expected, _ = safetensors.read(os.path.join(expected_dir, f"rank-{engine.inference_tp_rank}.safetensors"))
            mismatches = bitwise_mismatches(weights, expected)
            if mismatches:
                print(f"[rank {rank}] iteration {iteration + 1}: {len(mismatches)} vLLM tensor(s) differ from "
                      f"hybridshard export of the same weights: {', '.join(mismatches[:4])}", file=sys.stderr)
                return 1
            # The rollout read the fused tensors right: the same forward on the unfused Hugging Face tensors.
            hf, _ = safetensors.read(os.path.join(args.workdir, f"checkpoint-{iteration + 1}", "model.safetensors"))
            fused = reference_llama.logits(weights, shape, tokens)
            unfused = reference_llama.logits(hf, shape, tokens, fused=False)
            if not torch.allclose(fused, unfused, rtol=1e-4, atol=1e-4):
                print(f"[rank {rank}] iteration {iteration + 1}: the rollout's logits differ from the Hugging Face "
                      f"forward by {(fused - unfused).abs().max().item():.3g}", file=sys.stderr)
                return 1
            checked = f"; {len(weights)} vLLM tensors bit-identical to export, logits match the HF forward"
        print(f"[rank {rank}] iteration {iteration + 1} ({time.monotonic() - started:.1f} s): loss {loss.item():.2f}, "
              f"rollout {tokens.tolist()}{checked}", flush=True)
        del weights  # exit() would release the mapping anyway; views taken out of it must be gone
        engine.exit("free")
    engine.close()
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--check-with", metavar="HYBRIDSHARD", help="the hybridshard command, for `export`")
    parser.add_argument("--workdir", help="where the checkpoints, the job and the exports go (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds the ranks may take in all")
    parser.add_argument("--serve", metavar="HOST:PORT", help="report every rank's events to this hybridshard serve")
    parser.add_argument("--stale-rank", type=int, help="this rank skips its last optimizer step (the check must fail)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "RANK" in os.environ and args.job:
        return run_rank(args)
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
