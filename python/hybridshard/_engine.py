"""The Engine: one rank of a hybridshard job inside a Python process (see docs/python.md)."""

import contextlib
import gc
import json
import os
import time
from collections.abc import Mapping

import torch
import torch.utils.dlpack

from . import _hybridshard

_TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# Short keys accepted in the train= and rollout= keyword arguments, and the job file keys they stand for.
_LAYOUT_KEYS = {
    "tp": "tensor_model_parallel_size",
    "pp": "pipeline_model_parallel_size",
    "vpp": "virtual_pipeline_model_parallel_size",
}


class TensorMismatchError(_hybridshard.ConfigError):
    """Tensors handed to Engine.attach() do not match the job's train layout (names, dtype, shape, device)."""


def _layout_section(section, what):
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise TypeError(f"{what}= must be a mapping of job keys (e.g. {{'tp': 2, 'pp': 2}}), not {type(section).__name__}")
    return {_LAYOUT_KEYS.get(key, key): value for key, value in section.items()}


def _model_section(model):
    if model is None:
        return {}
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        # A Hugging Face directory, or the name of a preset ("tiny", "llama3-8b", ...).
        return {"checkpoint": text} if os.path.isdir(text) else {"preset": text}
    if isinstance(model, Mapping):
        return dict(model)
    raise TypeError(f"model= must be a preset name, a checkpoint directory or a mapping of job keys, not {type(model).__name__}")


def _job_text(sections, world_size):
    """The job as JSON text (JSON is YAML), read by the same loader as job files: one home for every check."""
    job = {}
    if sections["model"] is not None:
        job["model"] = _model_section(sections["model"])
    for name in ("train", "rollout"):
        if sections[name] is not None:
            job[name] = _layout_section(sections[name], name)
    for name in ("memory", "schedule"):
        if sections[name] is not None:
            job[name] = dict(sections[name])
    job["runtime"] = dict(sections["runtime"] or {})
    if world_size is not None:
        job["runtime"].setdefault("world_size", world_size)
    return json.dumps(job, indent=2)


class InferenceWeights(Mapping):
    """vLLM parameter name -> torch tensor viewing this rank's inference shard, from Engine.enter().

    Valid until the engine's exit(): then this mapping is emptied and any use of it raises hybridshard.Error.
    Tensors taken out of it must be dropped before exit() (exit refuses while they are referenced).
    """

    def __init__(self, tensors, iteration):
        self._tensors = tensors
        self._iteration = iteration

    def _check(self):
        if self._tensors is None:
            raise _hybridshard.Error(
                f"these inference weights (iteration {self._iteration}) were released by exit(); call enter() again"
            )

    def __getitem__(self, name):
        self._check()
        return self._tensors[name]

    def __iter__(self):
        self._check()
        return iter(self._tensors)

    def __len__(self):
        self._check()
        return len(self._tensors)

    @property
    def released(self):
        return self._tensors is None

    def _release(self):
        self._tensors = None


class Engine:
    """One rank of a hybridshard job. Collective: every rank of the job makes one (see docs/python.md).

    Either a job file:      Engine("job.yaml", rank=..., world_size=..., master_port=...)
    or keyword arguments:   Engine(model="tiny", train={"tp": 2, "pp": 2}, rollout={"tp": 1}, world_size=4,
                                   rank=r, master_addr="127.0.0.1", master_port=29500, device="cpu")
    rank, world_size, local_rank, master_addr and master_port default to the launcher's environment (torchrun,
    Slurm, mpirun), then to the job's runtime section. device: "cpu" (Gloo), "cuda" or "cuda:N" (NCCL).
    serve: "host:port" of a `hybridshard serve` to report events to (default: $HYBRIDSHARD_SERVE), under job_name
    (default: $HYBRIDSHARD_JOB, else the job file's name); when it cannot be reached within serve_timeout seconds or
    refuses the job, the job goes on and says so once on stderr.
    """

    def __init__(self, job=None, *, model=None, train=None, rollout=None, memory=None, runtime=None, schedule=None,
                 device=None, rank=None, world_size=None, local_rank=None, master_addr=None, master_port=None,
                 serve=None, job_name=None, serve_timeout=3.0):
        keywords = {"model": model, "train": train, "rollout": rollout, "memory": memory, "runtime": runtime,
                    "schedule": schedule}
        if job is not None:
            given = [name for name, value in keywords.items() if value is not None]
            if given:
                raise TypeError(f"give a job file or the job's keyword arguments, not both (got {', '.join(given)})")
            if not os.path.isfile(job):
                raise _hybridshard.ConfigError(f"job file '{os.fspath(job)}' does not exist")
            arguments = {"job_file": os.fspath(job)}
        else:
            arguments = {"job_text": _job_text(keywords, world_size)}
        self._engine = _hybridshard.Engine(
            **arguments, device=device, rank=rank, world_size=world_size, local_rank=local_rank,
            master_addr=master_addr, master_port=master_port, serve=serve, job_name=job_name,
            serve_timeout=serve_timeout,
        )
        self._torch_dtype = _TORCH_DTYPES[self._engine.dtype]
        self._torch_device = torch.device(self._engine.device)
        self._train = {}
        self._weights = None

    # What this rank is.
    rank = property(lambda self: self._engine.rank)
    world_size = property(lambda self: self._engine.world_size)
    inference_tp_rank = property(lambda self: self._engine.inference_tp_rank)
    iteration = property(lambda self: self._engine.iteration)
    entered = property(lambda self: self._engine.entered)
    closed = property(lambda self: self._engine.closed)
    train_chunks = property(lambda self: self._engine.train_chunks)
    dtype = property(lambda self: self._torch_dtype)
    device = property(lambda self: self._torch_device)

    def train_layout(self, chunk=0):
        """[(Megatron-Core name, shape)] of train chunk `chunk` on this rank."""
        return [(name, tuple(shape)) for name, shape in self._engine.train_layout(chunk)]

    def inference_layout(self):
        """[(vLLM name, shape)] of this rank's inference shard."""
        return [(name, tuple(shape)) for name, shape in self._engine.inference_layout()]

    def train_params(self, chunk=0):
        """Megatron-Core name -> tensor viewing train buffer `chunk` (a virtual-pipeline chunk; layers numbered
        within the chunk, as Megatron-Core's model chunks name them). The same tensors on every call; valid for as
        long as they are referenced, even past close(). Update them in place (optimizer.step(), copy_, add_)."""
        if chunk not in self._train:
            self._train[chunk] = {
                name: torch.utils.dlpack.from_dlpack(capsule) for name, capsule in self._engine.train_capsules(chunk)
            }
        return dict(self._train[chunk])

    def attach(self, params, chunk=0):
        """Makes a trainer's own parameters views of train buffer `chunk`: checks that they are exactly the job's
        tensors (names, dtype, shape, device), copies their values in once, and points each tensor's .data at its
        view, so that from then on the trainer updates the engine's buffer in place.

        params: a torch.nn.Module (its named_parameters()), a mapping or (name, tensor) pairs. Raises
        TensorMismatchError listing every problem, and changes nothing, when they do not match.
        """
        if isinstance(params, torch.nn.Module):
            params = params.named_parameters()
        elif isinstance(params, Mapping):
            params = params.items()
        given = list(params)
        self._check_attach(given, chunk)
        self._synchronize()  # the trainer's tensors are written
        views = self.train_params(chunk)
        for name, tensor in given:
            self._engine.load_train_tensor(chunk, name, torch.utils.dlpack.to_dlpack(tensor.detach()))
        for name, tensor in given:
            tensor.data = views[name]

    def _check_attach(self, given, chunk):
        layout = dict(self.train_layout(chunk))
        problems = []
        names = [name for name, _ in given]
        unknown = [name for name in names if name not in layout]
        missing = [name for name in layout if name not in set(names)]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        where = f"rank {self.rank}'s train layout (chunk {chunk})"
        if unknown:
            problems.append(f"{len(unknown)} tensor(s) are not in {where}: {_listing(unknown)}")
        if missing:
            problems.append(f"{len(missing)} tensor(s) of {where} were not given: {_listing(missing)}")
        if duplicated:
            problems.append(f"given more than once: {_listing(duplicated)}")
        for name, tensor in given:
            if name not in layout:
                continue
            if not isinstance(tensor, torch.Tensor):
                problems.append(f"'{name}': a {type(tensor).__name__}, not a torch.Tensor")
                continue
            if tensor.dtype != self._torch_dtype:
                problems.append(f"'{name}': dtype {tensor.dtype}, but the job's weights are {self._torch_dtype}")
            if tuple(tensor.shape) != layout[name]:
                problems.append(f"'{name}': shape {list(tensor.shape)}, but {where} has {list(layout[name])}")
            if tensor.device != self._torch_device:
                problems.append(f"'{name}': on device {tensor.device}, but the engine's is {self._torch_device}")
            elif not tensor.is_contiguous():
                problems.append(f"'{name}': not contiguous")
        if problems:
            raise TensorMismatchError(
                f"attach(): the tensors do not match the job ({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
            )

    def _synchronize(self):
        if self._torch_device.type == "cuda":
            torch.cuda.synchronize(self._torch_device)

    def enter(self):
        """Collective. Reshards the train buffers into this rank's inference shard and returns InferenceWeights:
        vLLM parameter name -> tensor viewing it (vLLM shapes and fused layouts: qkv_proj, gate_up_proj)."""
        self._synchronize()  # the trainer's last writes on torch's stream come first
        started = time.monotonic()
        self._weights = InferenceWeights(self._views(self._engine.enter()), self.iteration)
        self._last_enter_seconds = time.monotonic() - started
        return self._weights

    def exit(self, policy="free", release=None):
        """Collective. Back to training: the inference shard is freed ("free") or kept in pinned host memory
        ("offload"). `release`: the device memory exit freed goes back to the driver ("driver": torch's allocator
        can use it) or stays in the engine's cache for the next enter ("cache"); None: the job's
        memory.release_on_exit. The InferenceWeights of enter() are released; raises LiveViewsError (and leaves the
        engine entered) while any tensor taken from them is still referenced."""
        self._synchronize()  # what read the views on torch's stream (copies out of them) is done
        weights = self._weights
        self._release_weights()
        try:
            self._engine.exit(policy, release)
        except _hybridshard.LiveViewsError:
            # Still entered: the weights are usable again.
            if weights is not None:
                weights._tensors = self._views(self._engine.inference_capsules())
                self._weights = weights
            raise

    def _views(self, capsules):
        return {name: torch.utils.dlpack.from_dlpack(capsule) for name, capsule in capsules}

    def _release_weights(self):
        if self._weights is not None:
            self._weights._release()
            self._weights = None
        if self._engine.live_inference_views():
            gc.collect()  # views held only by reference cycles

    def close(self):
        """Collective: a barrier, then the communicator and the store go. Views of the train buffers stay valid."""
        self._release_weights()
        self._engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        return False

    @contextlib.contextmanager
    def phase(self, name):
        """Reports a phase the trainer runs itself ("train", "rollout") to `serve`: begin, end and its seconds."""
        self._engine.phase_begin(name)
        started = time.monotonic()
        try:
            yield
        finally:
            self._engine.phase_end(name, time.monotonic() - started)

    # For tests and checks: where the engine keeps a tensor (a zero-copy view has this data_ptr()).
    def train_address(self, name, chunk=0):
        return self._engine.train_address(chunk, name)

    def inference_address(self, name):
        return self._engine.inference_address(name)

    def __repr__(self):
        return (f"hybridshard.Engine(rank={self.rank}, world_size={self.world_size}, device='{self._torch_device}', "
                f"dtype={self._torch_dtype}, iteration={self.iteration}, entered={self.entered})")


def _listing(names, at_most=4):
    shown = ", ".join(names[:at_most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > at_most else "")
