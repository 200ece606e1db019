// run_model: named input tensors -> forward arguments, batch by batch, under capture sessions.
#include <atomic>
#include <mutex>
#include <thread>

#include "libtorch_utils.h"
#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/error.h"
#include "qkscope/model_runner.h"

namespace qkscope {
namespace {

at::ScalarType scalar_type(const std::string& dtype, const std::string& name) {
  static const std::pair<const char*, at::ScalarType> table[] = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}};
  for (const auto& [n, t] : table)
    if (dtype == n) return t;
  throw Error(fmt::format("input '{}': unsupported dtype '{}' (expected F64, F32, F16, BF16, I64, "
                          "I32, I16, I8, U8 or BOOL)", name, dtype));
}

}  // namespace

void run_model(const CaptureModule& module, const std::map<std::string, InputTensor>& inputs,
               CaptureSink& sink, const RunOptions& options) {
  QKSCOPE_CHECK_AS(UsageError, options.batch_size > 0, "batch size must be > 0, got {}",
                   options.batch_size);
  QKSCOPE_CHECK_AS(UsageError, options.threads > 0, "threads must be > 0, got {}", options.threads);
  QKSCOPE_CHECK(!inputs.empty(), "no input tensors given; model '{}' takes {}", module.name(),
                module.forward_schema());

  // Views of the inputs, and their row count.
  std::map<std::string, at::Tensor> tensors;
  int64_t rows = -1;
  std::string first_name;
  for (const auto& [name, input] : inputs) {
    QKSCOPE_CHECK(!input.shape.empty() && input.data != nullptr,
                  "input '{}': expected a tensor with a batch dimension", name);
    at::Tensor t = torch::from_blob(const_cast<void*>(input.data), input.shape,
                                    at::TensorOptions().dtype(scalar_type(input.dtype, name)));
    if (rows < 0) {
      rows = t.size(0);
      first_name = name;
    }
    QKSCOPE_CHECK(t.size(0) == rows, "inputs disagree on the batch dimension: '{}' has {} rows, "
                  "'{}' has {}", first_name, rows, name, t.size(0));
    tensors.emplace(name, t);
  }

  // Bind by name; unnamed trailing arguments take their defaults.
  const auto& arguments =
      module.instrumented().get_method("forward").function().getSchema().arguments();
  for (const auto& [name, t] : tensors) {
    bool found = false;
    for (size_t i = 1; i < arguments.size(); ++i) found = found || arguments[i].name() == name;
    QKSCOPE_CHECK(found, "input '{}' matches no argument of model '{}': {}", name, module.name(),
                  module.forward_schema());
  }
  struct Slot {
    std::string name;  // empty: default value
    c10::IValue fixed;
  };
  std::vector<Slot> slots;
  size_t used = 0;
  for (size_t i = 1; i < arguments.size() && used < tensors.size(); ++i) {
    const auto& arg = arguments[i];
    if (tensors.count(arg.name())) {
      slots.push_back({arg.name(), {}});
      ++used;
    } else {
      QKSCOPE_CHECK(arg.default_value().has_value(),
                    "model '{}' needs argument '{}' but no input has that name: {}",
                    module.name(), arg.name(), module.forward_schema());
      slots.push_back({"", *arg.default_value()});
    }
  }
  for (size_t i = slots.size() + 1; i < arguments.size(); ++i)
    QKSCOPE_CHECK(arguments[i].default_value().has_value(),
                  "model '{}' needs argument '{}' but no input has that name: {}", module.name(),
                  arguments[i].name(), module.forward_schema());

  const int64_t n_batches = (rows + options.batch_size - 1) / options.batch_size;
  std::atomic<int64_t> next_batch{0};
  std::mutex mutex;  // progress, errors
  int64_t rows_done = 0;
  std::exception_ptr error;
  const c10::Device device = module.device();

  auto worker = [&] {
    try {
      CaptureSession session(sink, options.first_sequence);
      for (;;) {
        {
          std::lock_guard<std::mutex> lock(mutex);
          if (error) return;
        }
        const int64_t b = next_batch.fetch_add(1);
        if (b >= n_batches) return;
        const int64_t begin = b * options.batch_size;
        const int64_t n = std::min(options.batch_size, rows - begin);
        std::vector<c10::IValue> args;
        for (const Slot& slot : slots) {
          if (slot.name.empty()) args.push_back(slot.fixed);
          else args.push_back(tensors.at(slot.name).narrow(0, begin, n).to(device, /*non_blocking=*/false, /*copy=*/true));
        }
        std::vector<int64_t> sequences(n);
        for (int64_t r = 0; r < n; ++r) sequences[r] = options.first_sequence + begin + r;
        try {
          module.forward(std::move(args), sequences);
        } catch (const Error&) {
          throw;
        } catch (const std::exception& e) {
          // The interpreter's message is a traceback: keep its reason and the failing line.
          throw Error(fmt::format("model '{}' failed on input rows {}..{}: {}", module.name(),
                                  begin, begin + n - 1, detail::forward_error_summary(e)));
        }
        std::lock_guard<std::mutex> lock(mutex);
        rows_done += n;
        if (options.progress) options.progress(rows_done, rows);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!error) error = std::current_exception();
    }
  };

  const int n_threads = static_cast<int>(std::min<int64_t>(options.threads, n_batches));
  if (n_threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> threads;
    for (int i = 0; i < n_threads; ++i) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace qkscope
