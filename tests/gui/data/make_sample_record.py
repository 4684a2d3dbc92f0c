#!/usr/bin/env python3
"""Writes quickstart_tp2pp2_tp1.jsonl: a run record in the format of docs/record-format.md, shaped like a real run.

Llama-3.1-8B on 4 ranks (two hosts with two H100 80GB each), train tp2 pp2 dp1 -> rollout tp1 dp4, 3 iterations,
hybridshard strategy with the default memory policy: during enter, grads, master weights and Adam moments go to
pinned host memory, the inference shard is gathered through 256 MiB staging buckets; during exit the inference shard
and the KV cache are freed and the optimizer state comes back. Untracked memory (activations, caching allocator)
grows over the iterations, so that the last train phase of stage 0 runs below 5 % headroom (the
HybridshardDeviceMemoryHeadroomLow condition of configs/alerts.yml).

Deterministic: run it again and the file is byte-identical. The dashboard's tests rely on these times (seconds since
the job event):
  iteration i (0, 1, 2) starts at 2.0 + 18.0 * i: train 9.0 s, enter ~0.95 s, rollout 7.0 s (from +10.0), exit
  ~0.66 s (from +17.0); the job ends at ~56.5 s.
"""
import argparse
import json
import math
import os

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--world", type=int, default=4, help="ranks (a multiple of 4; two GPUs per host)")
parser.add_argument("--out", help="output file (default: quickstart_tp2pp2_tp1.jsonl beside this script)")
args = parser.parse_args()

T0 = 1764079200.0
GIB = 1024 ** 3
WORLD = args.world
TP, PP, DP = 2, 2, args.world // 4
ITERATIONS = 3
DEVICE_TOTAL = 85520809984  # H100 80GB as cudaMemGetInfo reports it
HOSTS = ["node-a", "node-a", "node-b", "node-b"] if WORLD == 4 else [f"node-{r // 8:03d}" for r in range(WORLD)]
BUCKET = 256 * 1024 * 1024

LAYERS, HIDDEN, HEADS, KV_HEADS, FFN, VOCAB = 32, 4096, 32, 8, 14336, 128256
HEAD_DIM = HIDDEN // HEADS
LAYER_PARAMS = HIDDEN * (HIDDEN + 2 * KV_HEADS * HEAD_DIM) + HIDDEN * HIDDEN + 3 * HIDDEN * FFN + 2 * HIDDEN
EMBED = VOCAB * HIDDEN
TOTAL_PARAMS = LAYERS * LAYER_PARAMS + 2 * EMBED + HIDDEN


def stage_of(rank):
    return rank // (TP * DP)


def stage_params(stage):
    """Elements of one rank's train shard and its tensor count."""
    elems = (LAYERS // PP) * LAYER_PARAMS // TP + EMBED // TP
    tensors = (LAYERS // PP) * 6 + 1
    if stage == PP - 1:
        elems += HIDDEN
        tensors += 1
    return elems, tensors


events = []


def emit(time, type_, rank=None, iteration=None, **fields):
    event = {"type": type_, "time": round(T0 + time, 6)}
    if rank is not None:
        event["rank"] = rank
        event["iteration"] = iteration
    event.update(fields)
    events.append(event)


def jitter(rank, salt):
    """A small deterministic per-rank offset (seconds)."""
    return ((rank * 7919 + salt * 104729) % 97) / 97.0 * 0.02


class Rank:
    def __init__(self, rank):
        self.rank = rank
        self.stage = stage_of(rank)
        self.buffers = {}  # name -> [kind, dtype, bytes, residency, shape]
        self.iteration = -1

    def create(self, t, name, kind, dtype, nbytes, shape):
        self.buffers[name] = [kind, dtype, nbytes, "none", shape]
        emit(t, "buffer_created", self.rank, self.iteration, buffer=name, kind=kind, dtype=dtype, bytes=nbytes,
             shape=shape)

    def move(self, t, name, to):
        kind, dtype, nbytes, frm, _ = self.buffers[name]
        self.buffers[name][3] = to
        emit(t, "residency", self.rank, self.iteration, buffer=name, kind=kind, dtype=dtype, bytes=nbytes,
             **{"from": frm, "to": to})

    def destroy(self, t, name):
        kind, _, nbytes, _, _ = self.buffers.pop(name)
        emit(t, "buffer_destroyed", self.rank, self.iteration, buffer=name, kind=kind, bytes=nbytes)

    def on_gpu(self):
        by_kind = {}
        for kind, _, nbytes, residency, _ in self.buffers.values():
            if residency == "gpu":
                by_kind[kind] = by_kind.get(kind, 0) + nbytes
        return by_kind


ranks = [Rank(r) for r in range(WORLD)]
emit(0.0, "job", world_size=WORLD,
     model={"architecture": "llama", "num_hidden_layers": LAYERS, "hidden_size": HIDDEN, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "intermediate_size": FFN, "vocab_size": VOCAB,
            "tie_word_embeddings": False, "dtype": "bf16"},
     train={"tp": TP, "pp": PP, "vpp": 1, "dp": DP}, rollout={"tp": 1, "dp": WORLD}, backend="nccl",
     strategy="hybridshard", iterations=ITERATIONS, job_file="examples/llama3-8b-tp2pp2-tp1.yaml")

# Phases of every rank, as (name, begin, end) in seconds since T0; filled below, used for memory samples.
phase_log = {r: [] for r in range(WORLD)}


def phase(rank, name, begin, end):
    emit(begin, "phase_begin", rank.rank, rank.iteration, phase=name)
    phase_log[rank.rank].append((name, begin, end, rank.iteration))


def phase_end(rank, name, begin, end):
    emit(end, "phase_end", rank.rank, rank.iteration, phase=name, seconds=round(end - begin, 6))


for rank in ranks:
    emit(0.2 + 0.05 * rank.rank, "rank_up", rank.rank, -1, host=HOSTS[rank.rank], pid=41200 + rank.rank,
         device=f"cuda:{rank.rank % 2}")
for rank in ranks:
    begin = 0.5
    phase(rank, "init", begin, 2.0)
    elems, tensors = stage_params(rank.stage)
    suffix = f"pp{rank.stage}.vpp0"
    shape = f"[{tensors} tensors] {elems} elems"
    t = 0.6 + jitter(rank.rank, 1)
    for name, kind, dtype, width in [(f"train.params.{suffix}", "params", "bf16", 2),
                                     (f"train.grads.{suffix}", "grads", "fp32", 4),
                                     (f"train.master.{suffix}", "master_params", "fp32", 4),
                                     (f"train.exp_avg.{suffix}", "optimizer", "fp32", 4),
                                     (f"train.exp_avg_sq.{suffix}", "optimizer", "fp32", 4)]:
        rank.create(t, name, kind, dtype, elems * width, shape)
        rank.move(t + 0.001, name, "gpu")
        t += 0.2
    phase_end(rank, "init", begin, 2.0 + jitter(rank.rank, 2))

ROLLOUT_BYTES = TOTAL_PARAMS * 2
KV_BYTES = 24 * GIB
HOST_COPY = 50e9   # pinned device<->host, B/s
NETWORK = 46e9     # per-rank receive bandwidth of the enter gather, B/s

for it in range(ITERATIONS):
    start = 2.0 + 18.0 * it
    for rank in ranks:
        rank.iteration = it
        suffix = f"pp{rank.stage}.vpp0"
        offloaded = [f"train.grads.{suffix}", f"train.master.{suffix}", f"train.exp_avg.{suffix}",
                     f"train.exp_avg_sq.{suffix}"]
        # train
        train_begin = start + jitter(rank.rank, 10 + it)
        train_end = start + 9.0 + jitter(rank.rank, 20 + it)
        phase(rank, "train", train_begin, train_end)
        phase_end(rank, "train", train_begin, train_end)
        # enter: offload the optimizer side, gather the inference shard through staging buckets
        enter_begin = train_end + 0.002
        phase(rank, "enter", enter_begin, None)
        t = enter_begin + 0.005
        for name in offloaded:
            nbytes = rank.buffers[name][2]
            seconds = nbytes / HOST_COPY
            emit(t + seconds, "transfer", rank.rank, it, path="device_to_host", bytes=nbytes, seconds=round(seconds, 6),
                 peer=-1, operation="enter.offload")
            t += seconds
            rank.move(t, name, "cpu")
        if it == 0:
            rank.create(t + 0.001, "rollout.params", "inference_params", "bf16", ROLLOUT_BYTES,
                        f"[291 tensors] {TOTAL_PARAMS} elems")
        rank.move(t + 0.002, "rollout.params", "gpu")
        for name in ("enter.staging.send", "enter.staging.recv"):
            rank.create(t + 0.003, name, "staging", "bf16", BUCKET, f"[1 tensors] {BUCKET // 2} elems")
            rank.move(t + 0.004, name, "gpu")
        t += 0.005
        own = stage_params(rank.stage)[0] * 2
        received = ROLLOUT_BYTES - own
        rounds = math.ceil(received / BUCKET)
        for k in range(rounds):
            nbytes = min(BUCKET, received - k * BUCKET)
            seconds = nbytes / NETWORK
            t += seconds
            emit(t, "transfer", rank.rank, it, path="network", bytes=nbytes, seconds=round(seconds, 6),
                 peer=(rank.rank + 1 + k % (WORLD - 1)) % WORLD, operation=f"enter.round{k}.recv")
        seconds = own / 1.49e12
        t += seconds
        emit(t, "transfer", rank.rank, it, path="device_to_device", bytes=own, seconds=round(seconds, 6), peer=-1,
             operation="enter.own_shard")
        for name in ("enter.staging.send", "enter.staging.recv"):
            rank.move(t + 0.001, name, "none")
            rank.destroy(t + 0.002, name)
        enter_end = t + 0.003
        phase_log[rank.rank][-1] = ("enter", enter_begin, enter_end, it)
        phase_end(rank, "enter", enter_begin, enter_end)
        # rollout
        rollout_begin = start + 10.0 + jitter(rank.rank, 30 + it)
        rollout_end = start + 17.0 + jitter(rank.rank, 40 + it)
        phase(rank, "rollout", rollout_begin, rollout_end)
        if it == 0:
            rank.create(rollout_begin + 0.01, "rollout.kv_cache", "kv_cache", "bf16", KV_BYTES,
                        "32 layers x 2 x 49152 blocks x 8 heads x 128")
        rank.move(rollout_begin + 0.02, "rollout.kv_cache", "gpu")
        emit(rollout_end - 0.05, "check", rank.rank, it, name="rollout_reference", ok=True,
             detail="64 prompts x 128 new tokens match the single-rank reference")
        phase_end(rank, "rollout", rollout_begin, rollout_end)
        # exit: free what only the rollout needed, bring the optimizer side back
        exit_begin = rollout_end + 0.002
        phase(rank, "exit", exit_begin, None)
        rank.move(exit_begin + 0.003, "rollout.params", "none")
        rank.move(exit_begin + 0.004, "rollout.kv_cache", "none")
        t = exit_begin + 0.005
        for name in offloaded:
            nbytes = rank.buffers[name][2]
            seconds = nbytes / HOST_COPY
            emit(t + seconds, "transfer", rank.rank, it, path="host_to_device", bytes=nbytes, seconds=round(seconds, 6),
                 peer=-1, operation="exit.reload")
            t += seconds
            rank.move(t, name, "gpu")
        exit_end = t + 0.002
        phase_log[rank.rank][-1] = ("exit", exit_begin, exit_end, it)
        phase_end(rank, "exit", exit_begin, exit_end)

end = 2.0 + 18.0 * ITERATIONS
for rank in ranks:
    rank.iteration = ITERATIONS - 1
    phase(rank, "shutdown", end, end + 0.3)
    t = end + 0.05
    for name in list(rank.buffers):
        if rank.buffers[name][3] != "none":
            rank.move(t, name, "none")
        t += 0.01
    phase_end(rank, "shutdown", end, end + 0.3)
    emit(end + 0.35 + 0.01 * rank.rank, "rank_down", rank.rank, ITERATIONS - 1, host=HOSTS[rank.rank], reason="exited (0)",
         phase="shutdown")
emit(end + 0.5, "job_end", ok=True, message="3 iterations, all rollout checks passed", seconds=round(end + 0.5, 6))


# Memory samples every 0.25 s per rank, from the residency state the events above describe.
def untracked(rank, t):
    base = 1.1 * GIB  # CUDA context, NCCL buffers
    for name, begin, end_, it in phase_log[rank]:
        if begin <= t < (end_ if end_ is not None else begin):
            cache = [0.0, 3.0, 10.0][max(it, 0)] * GIB  # reserved-but-free blocks of the caching allocator
            if name == "train":
                peak = (28.0 if stage_of(rank) == 0 else 15.0) * GIB
                x = t - begin
                ramp = min(1.0, x / 2.0) if x < 7.5 else max(0.0, (8.5 - x) / 1.0)
                wave = 1.0 + 0.15 * math.sin(2 * math.pi * x / 0.9 + rank)
                return base + cache + peak * ramp * wave
            if name == "rollout":
                return base + cache + 1.5 * GIB
            return base + cache
    return base if t > 1.0 else 0.6 * GIB


state = {r: {} for r in range(WORLD)}  # buffer -> (kind, bytes, residency)
ordered = sorted(events, key=lambda e: e["time"])
samples = []
index = 0
t = 0.25
while t <= end + 0.5:
    while index < len(ordered) and ordered[index]["time"] - T0 <= t:
        e = ordered[index]
        if e["type"] in ("buffer_created", "residency"):
            state[e["rank"]][e["buffer"]] = (e["kind"], e["bytes"], e.get("to", "none"))
        elif e["type"] == "buffer_destroyed":
            state[e["rank"]].pop(e["buffer"], None)
        index += 1
    for r in range(WORLD):
        by_kind = {}
        for kind, nbytes, residency in state[r].values():
            if residency == "gpu":
                by_kind[kind] = by_kind.get(kind, 0) + nbytes
        tracked = sum(by_kind.values())
        iteration = max([it for _, b, _, it in phase_log[r] if b <= t] + [-1])
        samples.append({"type": "memory", "time": round(T0 + t + 0.003 * r, 6), "rank": r, "iteration": iteration,
                        "device_used": int(tracked + untracked(r, t)), "device_total": DEVICE_TOTAL,
                        "tracked": tracked, "by_kind": by_kind})
    t = round(t + 0.25, 6)

events.extend(samples)
events.sort(key=lambda e: e["time"])
out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart_tp2pp2_tp1.jsonl")
with open(out, "w") as f:
    for e in events:
        f.write(json.dumps(e, separators=(",", ":")) + "\n")
print(f"wrote {out}: {len(events)} events")
