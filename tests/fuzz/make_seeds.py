#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into corpus/<target>/ (run from anywhere; idempotent).

Seeds are small valid inputs plus the bad cases the issue names, so that the fuzzer starts next to every branch:
job files (the shipped configs, broken examples, alias bombs, duplicate keys, huge numbers, wrong types, binary),
safetensors files (valid, truncated, offsets beyond the file, a header claiming gigabytes, unknown dtype), checkpoint
directories (parts joined by the line "@@@@": config.json, index, shards), and event lines / records / status bodies.
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(HERE, "corpus")
SEP = b"\n@@@@\n"


def put(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as out:
        out.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None, header_override=None, data_override=None):
    """tensors: [(name, dtype, shape)] stored back to back; element bytes are a simple counter."""
    sizes = {"BF16": 2, "F16": 2, "F32": 4}
    header = {}
    offset = 0
    for name, dtype, shape in tensors:
        count = 1
        for dim in shape:
            count *= dim
        nbytes = count * sizes.get(dtype, 2)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode() if header_override is None else header_override
    text += b" " * ((8 - len(text) % 8) % 8)
    data = bytes((i * 7) & 0x3F for i in range(offset)) if data_override is None else data_override
    return struct.pack("<Q", len(text)) + text + data


# A small Llama / Qwen2: 1 layer, hidden 8, 2 heads (1 KV head), intermediate 16, vocabulary 16.
SHAPE = dict(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, num_key_value_heads=1,
             intermediate_size=16, vocab_size=16)


def hf_tensors(qwen=False, tied=False):
    h, i, v = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    kv = h // SHAPE["num_attention_heads"] * SHAPE["num_key_value_heads"]
    out = [("model.embed_tokens.weight", [v, h])]
    for layer in range(SHAPE["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        out += [(p + "input_layernorm.weight", [h]),
                (p + "self_attn.q_proj.weight", [h, h]), (p + "self_attn.k_proj.weight", [kv, h]),
                (p + "self_attn.v_proj.weight", [kv, h]), (p + "self_attn.o_proj.weight", [h, h])]
        if qwen:
            out += [(p + "self_attn.q_proj.bias", [h]), (p + "self_attn.k_proj.bias", [kv]),
                    (p + "self_attn.v_proj.bias", [kv])]
        out += [(p + "post_attention_layernorm.weight", [h]), (p + "mlp.gate_proj.weight", [i, h]),
                (p + "mlp.up_proj.weight", [i, h]), (p + "mlp.down_proj.weight", [h, i])]
    out.append(("model.norm.weight", [h]))
    if not tied:
        out.append(("lm_head.weight", [v, h]))
    return out


def config_json(model_type="llama", dtype="bfloat16", **overrides):
    config = {"architectures": ["LlamaForCausalLM" if model_type == "llama" else "Qwen2ForCausalLM"],
              "model_type": model_type, "torch_dtype": dtype, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
              "tie_word_embeddings": False}
    config.update(SHAPE)
    config.update(overrides)
    return json.dumps(config, indent=1).encode()


def job_seeds():
    for name in sorted(os.listdir(os.path.join(ROOT, "configs"))):
        if name.endswith(".yaml"):
            put("job_config", "config-" + name, open(os.path.join(ROOT, "configs", name), "rb").read())
    data = os.path.join(ROOT, "tests", "service", "config", "data")
    if os.path.isdir(data):
        for name in sorted(os.listdir(data)):
            put("job_config", "broken-" + name, open(os.path.join(data, name), "rb").read())
    put("job_config", "empty.yaml", b"")
    put("job_config", "binary.yaml", bytes(range(256)))
    put("job_config", "syntax.yaml", b"model:\n  num_hidden_layers: [1, 2\ntrain: {\n")
    put("job_config", "tabs.yaml", b"model:\n\tnum_hidden_layers: 2\n")
    put("job_config", "duplicate.yaml", b"model:\n  preset: tiny\n  preset: llama3-8b\nruntime:\n  world_size: 4\n")
    put("job_config", "huge-numbers.yaml",
        b"model:\n  preset: tiny\n  num_hidden_layers: 99999999999999999999\n  hidden_size: 1e400\n"
        b"memory:\n  bucket_bytes: 9999999PiB\nruntime:\n  world_size: -2147483649\n  timeout: 1e30h\n")
    put("job_config", "wrong-types.yaml",
        b"model: [1, 2]\ntrain:\n  tensor_model_parallel_size: two\nschedule: {iterations: {a: b}}\n"
        b"runtime:\n  timeout: [30s]\n  cpu_device_memory: true\n")
    bomb = b"a: &a [x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefghij":
        prev = chr(ord(level) - 1)
        bomb += ("%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n" % ((level, level) + (prev,) * 9)).encode()
    put("job_config", "alias-bomb.yaml", bomb)
    put("job_config", "alias-merge.yaml",
        b"base: &base {tensor_model_parallel_size: 2}\ntrain:\n  <<: *base\n  pipeline_model_parallel_size: 2\n")
    put("job_config", "prompts.yaml",
        b"model: {preset: tiny}\nrollout:\n  prompts: [[1, 2, 3], [4, 5, 6]]\n  max_new_tokens: 4\n"
        b"runtime: {world_size: 2, backend: gloo, timeout: 5s, cpu_device_memory: 64MiB}\n"
        b"train: {tensor_model_parallel_size: 2}\n")
    put("job_config", "checkpoint.yaml", b"model:\n  checkpoint: /nonexistent/dir\nruntime: {world_size: 1}\n")


def safetensors_seeds():
    tensors = [("a", "BF16", [2, 3]), ("b", "F32", [4]), ("c", "F16", [1, 2, 2])]
    put("safetensors", "valid.safetensors", safetensors(tensors, metadata={"format": "pt"}))
    put("safetensors", "empty-header.safetensors", safetensors([]))
    full = safetensors(tensors)
    put("safetensors", "truncated.safetensors", full[:-5])
    put("safetensors", "short.safetensors", full[:6])
    put("safetensors", "huge-header.safetensors", struct.pack("<Q", 8 << 30) + b"{}")
    put("safetensors", "beyond.safetensors",
        safetensors([], header_override=b'{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,1048576]}}',
                    data_override=b"\0" * 16))
    put("safetensors", "overlap.safetensors",
        safetensors([], header_override=b'{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                        b'"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}',
                    data_override=b"\0" * 16))
    put("safetensors", "unknown-dtype.safetensors",
        safetensors([], header_override=b'{"x":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}',
                    data_override=b"\0" * 8))
    put("safetensors", "shape-mismatch.safetensors",
        safetensors([], header_override=b'{"x":{"dtype":"BF16","shape":[3,3],"data_offsets":[0,4]}}',
                    data_override=b"\0" * 8))
    put("safetensors", "huge-shape.safetensors",
        safetensors([], header_override=b'{"x":{"dtype":"BF16","shape":[4294967296,4294967296,4],'
                                        b'"data_offsets":[0,8]}}', data_override=b"\0" * 8))
    put("safetensors", "not-json.safetensors", safetensors([], header_override=b"{not json"))


def checkpoint_seeds():
    llama = hf_tensors()
    put("hf_checkpoint", "single-bf16", config_json() + SEP + b"" + SEP + safetensors([(n, "BF16", s) for n, s in llama]))
    put("hf_checkpoint", "single-f32", config_json(dtype="float32") + SEP + SEP +
        safetensors([(n, "F32", s) for n, s in llama]))
    qwen = hf_tensors(qwen=True, tied=True)
    put("hf_checkpoint", "qwen-tied",
        config_json("qwen2", tie_word_embeddings=True) + SEP + SEP + safetensors([(n, "BF16", s) for n, s in qwen]))
    half = len(llama) // 2
    first, second = llama[:half], llama[half:]
    weight_map = {n: "model-00001-of-00002.safetensors" for n, _ in first}
    weight_map.update({n: "model-00002-of-00002.safetensors" for n, _ in second})
    index = json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}).encode()
    put("hf_checkpoint", "sharded", config_json() + SEP + index + SEP +
        safetensors([(n, "BF16", s) for n, s in first]) + SEP + safetensors([(n, "BF16", s) for n, s in second]))
    escape = json.dumps({"weight_map": {n: "../../etc/passwd" for n, _ in llama}}).encode()
    put("hf_checkpoint", "index-escape", config_json() + SEP + escape + SEP + b"")
    put("hf_checkpoint", "missing-tensor", config_json() + SEP + SEP +
        safetensors([(n, "BF16", s) for n, s in llama[:-1]]))
    put("hf_checkpoint", "bad-config", b'{"model_type": "gpt2", "hidden_size": -1}' + SEP + SEP + b"")
    put("hf_checkpoint", "config-only", config_json())


def event_seeds():
    record = os.path.join(ROOT, "tests", "gui", "data", "quickstart_tp2pp2_tp1.jsonl")
    lines = open(record, "rb").read().splitlines(keepends=True) if os.path.exists(record) else []
    if lines:
        put("event_json", "record-head.jsonl", b"".join(lines[:80]))
        put("event_json", "record-tail.jsonl", b"".join(lines[-40:]))
        put("event_json", "record-truncated.jsonl", b"".join(lines[:20]) + lines[20][:30])
        put("dashboard_data", "record-head.jsonl", b"".join(lines[:120]))
        put("dashboard_data", "record-truncated.jsonl", b"".join(lines[:20]) + lines[20][:30])
        # Each event type once.
        seen = {}
        for line in lines:
            try:
                kind = json.loads(line).get("type")
            except ValueError:
                continue
            seen.setdefault(kind, line)
        put("event_json", "one-of-each.jsonl", b"".join(seen.values()))
        put("dashboard_data", "one-of-each.jsonl", b"".join(seen.values()))
    put("event_json", "not-object.jsonl", b"[1,2,3]\n\"text\"\n42\n{\"time\": 1}\n")
    put("event_json", "rank-down.jsonl",
        b'{"type":"rank_down","time":1.5,"rank":2,"host":"h","reason":"killed","phase":"enter","iteration":0}\n'
        b'{"type":"job_end","time":2.0,"ok":false,"message":"rank 2 failed","seconds":1.0}\n')
    put("event_json", "huge-rank.jsonl",
        b'{"type":"rank_up","time":1,"rank":2147483647,"iteration":-1,"host":"x","pid":1,"device":"cpu"}\n'
        b'{"type":"memory","time":1e308,"rank":0,"iteration":0,"device_used":-1,"device_total":1e300,"tracked":0}\n')
    status = {"time": 1.0, "state": "running", "job": {"world_size": 1, "model": {"architecture": "llama",
              "num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
              "intermediate_size": 16, "vocab_size": 16, "tie_word_embeddings": False, "dtype": "bf16"},
              "train": {"tp": 1, "pp": 1, "vpp": 1, "dp": 1}, "rollout": {"tp": 1, "dp": 1}},
              "ranks": [{"rank": 0, "host": "h", "phase": "enter", "iteration": 0, "device_used": 10,
                         "device_total": 100, "tracked": 5,
                         "buffers": [{"name": "params.stage0", "kind": "params", "residency": "gpu", "bytes": 5,
                                      "dtype": "bf16"}]}]}
    put("dashboard_data", "status.json", json.dumps(status).encode())
    status["ranks"][0]["buffers"][0]["residency"] = "disk"
    put("dashboard_data", "status-bad-residency.json", json.dumps(status).encode())
    put("dashboard_data", "empty", b"")


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    job_seeds()
    safetensors_seeds()
    checkpoint_seeds()
    event_seeds()
    for target in sorted(os.listdir(CORPUS)):
        print("%-16s %3d seeds" % (target, len(os.listdir(os.path.join(CORPUS, target)))))


if __name__ == "__main__":
    main()
