// Diagnostic::format and the quickstart job.
#include "hybridshard/service/config/job_config.h"

namespace hybridshard::service {

std::string Diagnostic::format() const {
  std::string text = file.empty() ? std::string("<job>") : file;
  if (line > 0) {
    text += ":" + std::to_string(line);
    if (column > 0) text += ":" + std::to_string(column);
  }
  text += severity == Severity::kWarning ? ": warning: " : ": error: ";
  if (!key.empty()) text += key + ": ";
  text += message;
  return text;
}

std::string default_job_yaml() {
  return R"(# The quickstart: 4 CPU ranks over Gloo on this host, a tiny Llama (the "tiny" preset, spelled out),
# trained with tensor parallel 2 x pipeline parallel 2 and generating with tensor parallel 1.
model:
  architecture: llama
  num_hidden_layers: 4
  hidden_size: 64
  num_attention_heads: 4
  num_key_value_heads: 2
  intermediate_size: 128
  vocab_size: 500
  tie_word_embeddings: false
  dtype: bf16
  rope_theta: 10000
  rms_norm_eps: 1.0e-6
  seed: 1
train:
  tensor_model_parallel_size: 2
  pipeline_model_parallel_size: 2
  virtual_pipeline_model_parallel_size: 1
rollout:
  tensor_model_parallel_size: 1
  gpu_memory_utilization: 0.5
  max_new_tokens: 8
  prompt_length: 8
  prompts_per_train_replica: 4
  check: true
memory:
  exit_policy: free
  release_on_exit: driver
  offload_optimizer_in_rollout: true
  offload_grads_in_rollout: true
  free_kv_cache_in_train: true
  bucket_bytes: 1MiB
schedule:
  iterations: 3
  learning_rate: 0.01
runtime:
  world_size: 4
  backend: gloo
  strategy: hybridshard
  master_addr: 127.0.0.1
  master_port: 0
  timeout: 30s
  cpu_device_memory: 1GiB
metrics:
  listen: 127.0.0.1:9464
  record: ""
  sample_interval_seconds: 0.5
)";
}

}  // namespace hybridshard::service
