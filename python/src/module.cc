// The extension module hybridshard._hybridshard: the Engine, DLPack capsules of its buffers, and the engine's
// errors as Python exceptions. The Python package (python/hybridshard) wraps it; see docs/python.md.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "dlpack_tensor.h"
#include "engine.h"
#include "engine_settings.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/dtype.h"
#include "hybridshard/service/events/event_json.h"

namespace py = pybind11;

namespace hybridshard::python {
namespace {

constexpr const char* kCapsuleName = "dltensor";
constexpr const char* kUsedCapsuleName = "used_dltensor";

// Frees the DLPack tensor when no one consumed the capsule (torch renames it to "used_dltensor" and owns it then).
void capsule_destructor(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, kCapsuleName) == 0) return;
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kCapsuleName));
  if (managed != nullptr && managed->deleter != nullptr) managed->deleter(managed);
}

py::object capsule_of(const TensorView& view) {
  DLManagedTensor* managed = to_dlpack(view);
  PyObject* capsule = PyCapsule_New(managed, kCapsuleName, capsule_destructor);
  if (capsule == nullptr) {
    managed->deleter(managed);
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(capsule);
}

// [(name, capsule)] in the layout's order.
py::list named_capsules(const std::vector<TensorView>& views) {
  py::list result;
  for (const TensorView& view : views) {
    result.append(py::make_tuple(view.lease->names()[view.index], capsule_of(view)));
  }
  return result;
}

// [(name, shape)] of a buffer layout, for the Python side's checks.
py::list layout_of(const core::BufferLayout& layout) {
  py::list result;
  for (const core::LocalTensor& tensor : layout.tensors) result.append(py::make_tuple(tensor.name, tensor.shape));
  return result;
}

std::optional<core::ExitPolicy> parse_policy(const std::string& name) {
  if (name == "free") return core::ExitPolicy::kFree;
  if (name == "offload") return core::ExitPolicy::kOffload;
  return std::nullopt;
}

// The engine's errors as Python exception classes (made with the C API and kept for the process's life, which works
// the same with every pybind11 version), raised with the message without its C++ source place.
struct PythonErrors {
  PyObject* error = nullptr;
  PyObject* config = nullptr;
  PyObject* comm = nullptr;
  PyObject* timeout = nullptr;
  PyObject* out_of_memory = nullptr;
  PyObject* live_views = nullptr;
};
PythonErrors errors;

PyObject* add_error(py::module_& module, const char* name, PyObject* base) {
  const std::string qualified = std::string("hybridshard._hybridshard.") + name;
  PyObject* type = PyErr_NewException(qualified.c_str(), base, nullptr);
  if (type == nullptr) throw py::error_already_set();
  module.add_object(name, py::handle(type).inc_ref());
  return type;
}

void translate_errors(std::exception_ptr pointer) {
  const auto raise = [](PyObject* type, const core::Error& error) {
    PyErr_SetString(type, service::error_message(error).c_str());
  };
  try {
    if (pointer) std::rethrow_exception(pointer);
  } catch (const LiveViewsError& error) {
    raise(errors.live_views, error);
  } catch (const core::TimeoutError& error) {
    raise(errors.timeout, error);
  } catch (const core::CommError& error) {
    raise(errors.comm, error);
  } catch (const core::OutOfMemoryError& error) {
    raise(errors.out_of_memory, error);
  } catch (const core::ConfigError& error) {
    raise(errors.config, error);
  } catch (const core::Error& error) {
    raise(errors.error, error);
  }
}

}  // namespace
}  // namespace hybridshard::python

PYBIND11_MODULE(_hybridshard, module) {
  using namespace hybridshard;
  using namespace hybridshard::python;
  module.doc() = "hybridshard's engine for Python (see the hybridshard package and docs/python.md)";

  errors.error = add_error(module, "Error", PyExc_RuntimeError);
  errors.config = add_error(module, "ConfigError", errors.error);
  errors.comm = add_error(module, "CommError", errors.error);
  errors.timeout = add_error(module, "TimeoutError", errors.comm);
  errors.out_of_memory = add_error(module, "OutOfMemoryError", errors.error);
  errors.live_views = add_error(module, "LiveViewsError", errors.error);
  py::register_exception_translator(translate_errors);

#ifdef HYBRIDSHARD_WITH_CUDA
  module.attr("built_with_cuda") = true;
#else
  module.attr("built_with_cuda") = false;
#endif
  module.attr("cuda_device_count") = core::cuda_device_count();

  py::class_<Engine>(module, "Engine")
      .def(py::init([](std::string job_file, std::string job_text, std::string job_source,
                       std::optional<std::string> device, std::optional<int> rank, std::optional<int> world_size,
                       std::optional<int> local_rank, std::optional<std::string> master_addr,
                       std::optional<int> master_port, std::optional<std::string> serve,
                       std::optional<std::string> job_name, double serve_timeout) {
             EngineRequest request;
             request.job_file = std::move(job_file);
             request.job_text = std::move(job_text);
             request.job_source = std::move(job_source);
             request.device = std::move(device);
             request.rank = rank;
             request.world_size = world_size;
             request.local_rank = local_rank;
             request.master_addr = std::move(master_addr);
             request.master_port = master_port;
             request.serve = std::move(serve);
             request.job_name = std::move(job_name);
             request.serve_timeout_seconds = serve_timeout;
             const EngineSettings settings = resolve_settings(request);
             py::gil_scoped_release release;  // the rendezvous waits for the other ranks
             return std::make_unique<Engine>(settings);
           }),
           py::arg("job_file") = "", py::arg("job_text") = "", py::arg("job_source") = "<keyword arguments>",
           py::arg("device") = py::none(), py::arg("rank") = py::none(), py::arg("world_size") = py::none(),
           py::arg("local_rank") = py::none(), py::arg("master_addr") = py::none(), py::arg("master_port") = py::none(),
           py::arg("serve") = py::none(), py::arg("job_name") = py::none(), py::arg("serve_timeout") = 3.0)
      .def_property_readonly("rank", &Engine::rank)
      .def_property_readonly("world_size", &Engine::world_size)
      .def_property_readonly("inference_tp_rank", &Engine::inference_tp_rank)
      .def_property_readonly("iteration", &Engine::iteration)
      .def_property_readonly("entered", &Engine::entered)
      .def_property_readonly("closed", &Engine::closed)
      .def_property_readonly("dtype",
                             [](const Engine& engine) { return std::string(core::dtype_name(engine.dtype())); })
      .def_property_readonly("device",
                             [](const Engine& engine) {
                               return engine.device_type() == core::DeviceType::kCuda
                                          ? "cuda:" + std::to_string(engine.device_index())
                                          : std::string("cpu");
                             })
      .def_property_readonly("device_description", &Engine::device_description)
      .def_property_readonly("train_chunks",
                             [](const Engine& engine) { return static_cast<int>(engine.plan().train_buffers.size()); })
      .def("train_layout",
           [](const Engine& engine, int chunk) {
             const auto& buffers = engine.plan().train_buffers;
             if (chunk < 0 || chunk >= static_cast<int>(buffers.size())) throw py::index_error("no such train chunk");
             return layout_of(buffers[static_cast<std::size_t>(chunk)]);
           })
      .def("inference_layout", [](const Engine& engine) { return layout_of(engine.plan().inference_buffer); })
      .def("train_capsules", [](Engine& engine, int chunk) { return named_capsules(engine.train_views(chunk)); })
      .def("load_train_tensor",
           [](Engine& engine, int chunk, const std::string& name, py::capsule source) {
             if (std::string(source.name() ? source.name() : "") != kCapsuleName) {
               throw py::value_error("'" + name + "': not an unused DLPack capsule");
             }
             auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(source.ptr(), kCapsuleName));
             {
               py::gil_scoped_release release;
               engine.load_train_tensor(chunk, name, managed->dl_tensor);
             }
           })
      .def("enter",
           [](Engine& engine) {
             std::vector<TensorView> views;
             {
               py::gil_scoped_release release;
               views = engine.enter();
             }
             return named_capsules(views);
           })
      .def("inference_capsules", [](Engine& engine) { return named_capsules(engine.inference_views()); })
      .def(
          "exit",
          [](Engine& engine, const std::string& policy, const std::optional<std::string>& release) {
            const std::optional<core::ExitPolicy> parsed = parse_policy(policy);
            if (!parsed) throw py::value_error("exit policy '" + policy + "' is not 'free' or 'offload'");
            std::optional<core::ReleaseOnExit> release_parsed;
            if (release) {
              release_parsed = core::parse_release_on_exit(*release);
              if (!release_parsed) throw py::value_error("release '" + *release + "' is not 'driver' or 'cache'");
            }
            py::gil_scoped_release unlocked;
            engine.exit(*parsed, release_parsed);
          },
          py::arg("policy"), py::arg("release") = py::none())
      .def("close",
           [](Engine& engine) {
             py::gil_scoped_release release;
             engine.close();
           })
      .def("live_inference_views", [](const Engine& engine) { return engine.live_inference_views(); })
      .def("train_address", &Engine::train_address)
      .def("inference_address", &Engine::inference_address)
      .def("phase_begin", &Engine::phase_begin)
      .def("phase_end", &Engine::phase_end);
}
