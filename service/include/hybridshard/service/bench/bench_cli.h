// The flags of `hybridshard bench`, for CLI11 (header only, so that the bench library needs no CLI11). Usage:
//
//   hybridshard::service::bench::BenchOptions bench_options;
//   CLI::App* bench = app.add_subcommand("bench", "...");
//   hybridshard::service::bench::add_bench_flags(*bench, bench_options);
//   bench->callback([&] { std::exit(hybridshard::service::bench::run_bench(bench_options, std::cout)); });
//
// Values are checked by resolve_bench_options() (inside run_bench), which reports every problem at once.
#pragma once

#include <CLI/CLI.hpp>

#include "hybridshard/service/bench/bench.h"

namespace hybridshard::service::bench {

inline void add_bench_flags(CLI::App& app, BenchOptions& o) {
  // A flag given twice takes its last value (scripts append overrides to their defaults).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--model", o.model,
                 "Model preset: tiny, llama3-8b, llama3-70b, qwen2.5-7b, qwen2.5-32b, qwen3-8b, qwen3-30b-a3b, "
                 "qwen3-235b-a22b, mixtral-8x7b, qwen1.5-moe-a2.7b, qwen2-57b-a14b");
  app.add_option("--job", o.job_file, "Job file (YAML): model, layouts, bucket, exit policy, timeout");
  app.add_option("--architecture", o.architecture,
                 "Shape override: llama | qwen2 | qwen3 | qwen2_moe | qwen3_moe | mixtral (the expert shapes come from "
                 "--model or --job)");
  app.add_option("--layers", o.num_hidden_layers, "Shape override: num_hidden_layers");
  app.add_option("--hidden-size", o.hidden_size, "Shape override: hidden_size");
  app.add_option("--heads", o.num_attention_heads, "Shape override: num_attention_heads");
  app.add_option("--kv-heads", o.num_key_value_heads, "Shape override: num_key_value_heads");
  app.add_option("--intermediate-size", o.intermediate_size, "Shape override: intermediate_size");
  app.add_option("--vocab-size", o.vocab_size, "Shape override: vocab_size");
  app.add_option("--dtype", o.dtype, "Shape override: bf16 | fp16 | fp32");
  app.add_option("--tie-word-embeddings", o.tie_word_embeddings, "Shape override: true | false");
  app.add_option("--world", o.world, "World size (train dp = world / (tp * pp))");
  app.add_option("--tp", o.tp, "Train tensor parallel size");
  app.add_option("--pp", o.pp, "Train pipeline parallel size");
  app.add_option("--vpp", o.vpp, "Train virtual pipeline chunks per stage");
  app.add_option("--dp", o.dp, "Train data parallel size");
  app.add_option("--rollout-tp", o.rollout_tp, "Rollout (inference) tensor parallel size tp'");
  app.add_option("--ep", o.ep, "Train expert parallel size (Megatron expert_model_parallel_size)");
  app.add_option("--etp", o.etp, "Train expert tensor parallel size (default: --tp)");
  app.add_flag("--rollout-expert-parallel", o.rollout_expert_parallel,
               "Rollout experts whole on each rank (vLLM enable_expert_parallel); default: split over tp'");
  app.add_option("--strategy", o.strategy, "hybridshard | seed | both (default both, side by side)");
  app.add_option("--comm", o.comm, "loopback | gloo | nccl (default loopback)");
  app.add_option("--device", o.device, "Loopback device: auto | cpu | cuda (default auto)");
  app.add_option("--rank", o.rank, "Loopback: the rank this process plays (default 0)");
  app.add_option("--ranks", o.ranks,
                 "gloo, nccl: run the ranks as thread | process: process starts one process per rank, as jobs run "
                 "(their own CUDA contexts: memory allocated and freed without the driver serializing the ranks); "
                 "thread runs them in this process (default: process for nccl, thread for gloo)");
  app.add_option("-n,--iters", o.iterations, "Timed iterations (default 20)");
  app.add_option("-w,--warmup_iters", o.warmup, "Warm-up iterations (default 5)");
  app.add_option("-c,--check", o.check, "Check the inference shards bit for bit: 0 | 1 (default 1)");
  app.add_option("--json", o.json_file, "Write the report as JSON to this file");
  app.add_option("--exit-policy", o.exit_policy, "free | offload | both (default both)");
  app.add_option("--release-on-exit", o.release_on_exit,
                 "After each exit, hand the device cache back to the driver or keep it: driver | cache | both "
                 "(default both, or the job's memory.release_on_exit)");
  app.add_option("--bucket", o.bucket_bytes, "Staging bucket bytes (default 268435456)");
  app.add_option("--transport", o.transport,
                 "hybridshard's peer transport: auto | peer | sendrecv (default auto: read peers directly where the "
                 "device can)");
  app.add_option("--direct-min", o.direct_min_bytes,
                 "Send/recv path: runs of at least this many contiguous bytes travel without a bucket (default "
                 "4194304)");
  app.add_option("--peer-copy-min-row", o.peer_copy_min_row,
                 "Peer path: strided pieces with narrower rows go to the piece kernel, not the copy engines (default "
                 "2048; sets HYBRIDSHARD_PEER_COPY_MIN_ROW)");
  app.add_option("--coalesce-rows", o.coalesce_rows,
                 "Plan: pieces that continue one another at one pair of strides become one 2-D piece: 0 | 1 "
                 "(default 1)");
  app.add_flag("--work-only", o.work_only,
               "Print what enter issues for the plan (pieces, copy-engine calls, kernel launches) and stop: no device "
               "is used, nothing is timed");
  app.add_option("--batch-rows", o.batch_rows, "Batch rows per train replica (default 4 per inference group)");
  app.add_option("--batch-cols", o.batch_cols, "Tokens per batch row (default 1024)");
  app.add_option("--cpu-device-memory", o.cpu_device_memory, "Device bytes a CPU rank reports (default 64 GiB)");
  app.add_option("--timeout-ms", o.timeout_ms, "Timeout of every wait in ms (default 120000)");
  // Hidden: what the bench passes to the rank processes it starts (--ranks process).
  app.add_option("--run-rank", o.run_rank)->group("");
  app.add_option("--rank-dir", o.rank_dir)->group("");
}

}  // namespace hybridshard::service::bench
