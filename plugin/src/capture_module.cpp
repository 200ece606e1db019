// CaptureModule: loading, validation, instrumentation and the guarded forward.
#include <filesystem>

#include "capture_context.h"
#include "qkscope/capture_session.h"
#include "qkscope/error.h"
#include "torch_runtime.h"

namespace qkscope {
namespace {

struct ActiveForwardGuard {
  explicit ActiveForwardGuard(detail::ForwardContext* context)
      : previous(detail::active_forward()) {
    detail::set_active_forward(context);
  }
  ~ActiveForwardGuard() { detail::set_active_forward(previous); }
  detail::ForwardContext* previous;
};

}  // namespace

CaptureModule CaptureModule::load(const std::string& path, const LoadOptions& options) {
  std::error_code ec;
  QKSCOPE_CHECK(std::filesystem::is_regular_file(path, ec), "model file not found: '{}'", path);
  torch::jit::Module module;
  try {
    c10::InferenceMode inference;
    module = torch::jit::load(path, options.device);
  } catch (const std::exception& e) {
    throw Error(fmt::format("failed to load model '{}': {}", path,
                            detail::describe_load_failure(path, e)));
  }
  return instrument(module, path, options);
}

CaptureModule CaptureModule::instrument(const torch::jit::Module& module, const std::string& name,
                                        const LoadOptions& options) {
  detail::ensure_capture_op_registered();
  detail::configure_torch_runtime();  // also for modules loaded by the caller (once per process)
  QKSCOPE_CHECK(module.find_method("forward").has_value(), "model '{}' has no forward method",
                name);
  auto state = std::make_shared<State>();
  state->name = name;
  state->options = options;
  state->original = module;
  try {
    c10::InferenceMode inference;
    // A clone gets its own class types and methods: editing its graph leaves `module` as is.
    state->instrumented = module.clone(/*inplace=*/true);
    // The model runs where the options say (a module loaded by load() is there already; one
    // handed to instrument() may not be). Parameters are shared with the caller's module, so
    // they move for both, and forward_original() runs on the same device.
    state->instrumented.to(options.device);
    state->sites = detail::instrument_attention_sites(state->instrumented, name);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(fmt::format("failed to instrument model '{}': {}", name, detail::first_line(e)));
  }
  const c10::FunctionSchema& schema = state->instrumented.get_method("forward").function().getSchema();
  const auto& arguments = schema.arguments();
  for (size_t i = 1; i < arguments.size(); ++i) {  // 0 is self
    const std::string& arg = arguments[i].name();
    if (arg == options.mask_argument) state->mask_argument = static_cast<int>(i - 1);
    if (arg == options.ids_argument) state->ids_argument = static_cast<int>(i - 1);
    state->argument_names.push_back(arg);
  }
  std::ostringstream os;
  os << "forward(";
  for (size_t i = 1; i < arguments.size(); ++i) os << (i > 1 ? ", " : "") << arguments[i];
  os << ") -> ";
  const auto& returns = schema.returns();
  if (returns.size() == 1) {
    os << returns[0].type()->annotation_str();
  } else {
    os << "(";
    for (size_t i = 0; i < returns.size(); ++i)
      os << (i ? ", " : "") << returns[i].type()->annotation_str();
    os << ")";
  }
  state->schema = os.str();
  return CaptureModule(std::move(state));
}

c10::IValue CaptureModule::forward(std::vector<c10::IValue> inputs) const {
  return run(std::move(inputs), nullptr);
}

c10::IValue CaptureModule::forward(std::vector<c10::IValue> inputs,
                                   const std::vector<int64_t>& sequences) const {
  return run(std::move(inputs), &sequences);
}

c10::IValue CaptureModule::run(std::vector<c10::IValue> inputs,
                               const std::vector<int64_t>* sequences) const {
  c10::InferenceMode inference;
  torch::NoGradGuard no_grad;
  torch::jit::Module module = state_->instrumented;  // a handle; forward() is not const
  CaptureSession* session = CaptureSession::current();
  if (session == nullptr) {
    ActiveForwardGuard guard(nullptr);
    return module.forward(std::move(inputs));
  }
  detail::ForwardContext context(*state_, session->sink(), *session, inputs, sequences);
  c10::IValue out;
  {
    ActiveForwardGuard guard(&context);
    out = module.forward(std::move(inputs));
  }
  context.finish();
  return out;
}

c10::IValue CaptureModule::forward_original(std::vector<c10::IValue> inputs) const {
  c10::InferenceMode inference;
  torch::NoGradGuard no_grad;
  torch::jit::Module module = state_->original;
  return module.forward(std::move(inputs));
}

std::vector<SiteDescription> CaptureModule::sites() const { return state_->snapshot(); }
const std::vector<std::string>& CaptureModule::argument_names() const {
  return state_->argument_names;
}
std::string CaptureModule::forward_schema() const { return state_->schema; }
const torch::jit::Module& CaptureModule::original() const { return state_->original; }
const torch::jit::Module& CaptureModule::instrumented() const { return state_->instrumented; }
const std::string& CaptureModule::name() const { return state_->name; }
c10::Device CaptureModule::device() const { return state_->options.device; }

}  // namespace qkscope
