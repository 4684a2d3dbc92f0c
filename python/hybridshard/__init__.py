"""hybridshard for Python: a trainer's torch tensors resharded between Megatron-Core's train layout and vLLM's
inference layout, in place, without copying a weight on the Python side.

    engine = hybridshard.Engine("job.yaml")            # rank and world from torchrun / Slurm / mpirun
    params = engine.train_params()                     # Megatron-Core names -> views of the train buffers
    ...the trainer updates params in place...
    weights = engine.enter()                           # vLLM names -> views of the inference buffer
    for name, tensor in weights.items():               # this rank's shards, in vLLM's parameter shapes
        vllm_params[name].data.copy_(tensor)
    del tensor
    engine.exit("free")                                # releases `weights`; see docs/python.md

See docs/python.md for the API, the zero-copy guarantees, lifetimes and errors.
"""

import torch  # noqa: F401  (first: the extension module uses the libtorch this torch loaded)

from . import _hybridshard
from ._engine import Engine, InferenceWeights, TensorMismatchError
from ._hybridshard import CommError, ConfigError, Error, LiveViewsError, OutOfMemoryError, TimeoutError

built_with_cuda = _hybridshard.built_with_cuda

__all__ = [
    "Engine",
    "InferenceWeights",
    "Error",
    "ConfigError",
    "TensorMismatchError",
    "CommError",
    "TimeoutError",
    "OutOfMemoryError",
    "LiveViewsError",
    "built_with_cuda",
]
