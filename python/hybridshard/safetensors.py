"""Safetensors files with torch alone (no extra package): read the shards `hybridshard export` writes, write a
Hugging Face checkpoint from torch tensors. The format: an 8-byte little-endian header length, a JSON header
(name -> dtype, shape, data_offsets; "__metadata__" -> strings), then the tensors' bytes."""

import json
import struct

import torch

_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def read(path):
    """(name -> tensor on the CPU, metadata dict) of a .safetensors file."""
    with open(path, "rb") as file:
        data = file.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (header_bytes,) = struct.unpack("<Q", data[:8])
    if 8 + header_bytes > len(data):
        raise ValueError(f"{path}: header length {header_bytes} runs past the end of the file")
    header = json.loads(data[8 : 8 + header_bytes])
    metadata = header.pop("__metadata__", {})
    body = memoryview(data)[8 + header_bytes :]
    tensors = {}
    for name, entry in header.items():
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor '{name}' has dtype {entry['dtype']}, which this reader does not know")
        begin, end = entry["data_offsets"]
        shape = entry["shape"]
        if end == begin:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        tensors[name] = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype).reshape(shape)
    return tensors, metadata


def write(path, tensors, metadata=None):
    """Writes name -> tensor (any device; contiguous bytes in the tensor's dtype) to a .safetensors file."""
    header = {}
    chunks = []
    offset = 0
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        raw = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(key): str(value) for key, value in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)))
        file.write(text)
        for raw in chunks:
            file.write(raw)
