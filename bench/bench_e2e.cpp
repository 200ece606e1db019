// The baseline of the end-to-end benchmark (bench/e2e.py): plain inference of a model over an
// ids file (one sequence of space-separated ids per line), with the batching `capture --ids`
// uses (the same read_id_file and make_batch of tools/capture/corpus.cpp: batches of
// --batch-size rows in file order, right-padded with id 0 to the batch's longest sequence).
//
//   bench_e2e --model FILE --ids FILE [--batch-size N] [--threads N]
//
// Prints one JSON object on stdout: sequences, tokens, batches, load_s (model load),
// forward_s (all forwards), total_s (from main() to the end).
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "corpus.h"
#include "qkscope/capture_module.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int usage() {
  std::fprintf(stderr, "usage: bench_e2e --model FILE --ids FILE [--batch-size N] [--threads N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const auto start = std::chrono::steady_clock::now();
  std::string model_path, ids_path;
  int batch_size = 8, threads = 0;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--model") && has_value) model_path = argv[++i];
    else if (!std::strcmp(argv[i], "--ids") && has_value) ids_path = argv[++i];
    else if (!std::strcmp(argv[i], "--batch-size") && has_value) batch_size = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && has_value) threads = std::atoi(argv[++i]);
    else return usage();
  }
  if (model_path.empty() || ids_path.empty() || batch_size <= 0 || threads < 0) return usage();
  try {
    if (threads > 0) at::set_num_threads(threads);  // as capture --threads does
    const qkscope::CaptureModule module = qkscope::CaptureModule::load(model_path);
    const double load_s = seconds_since(start);
    const std::vector<qkscope::cli::Sequence> sequences = qkscope::cli::read_id_file(ids_path);
    const std::vector<std::string>& arguments = module.argument_names();

    const auto forwards = std::chrono::steady_clock::now();
    int64_t tokens = 0, batches = 0;
    for (size_t begin = 0; begin < sequences.size(); begin += batch_size) {
      const size_t end = std::min(sequences.size(), begin + static_cast<size_t>(batch_size));
      auto batch = qkscope::cli::make_batch(sequences, begin, end, /*pad_id=*/0, std::nullopt,
                                            arguments);
      std::vector<c10::IValue> inputs;
      for (const std::string& arg : arguments) {
        auto it = batch->tensors.find(arg);
        if (it == batch->tensors.end()) break;  // trailing arguments take their defaults
        inputs.emplace_back(torch::from_blob(const_cast<void*>(it->second.data), it->second.shape,
                                             torch::kLong));
      }
      module.forward_original(std::move(inputs));
      tokens += batch->tokens;
      ++batches;
    }
    const double forward_s = seconds_since(forwards);
    std::printf("{\"sequences\": %zu, \"tokens\": %lld, \"batches\": %lld, \"threads\": %d, "
                "\"load_s\": %.6f, \"forward_s\": %.6f, \"total_s\": %.6f}\n",
                sequences.size(), static_cast<long long>(tokens), static_cast<long long>(batches),
                at::get_num_threads(), load_s, forward_s, seconds_since(start));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_e2e: error: %s\n", e.what());
    return 1;
  }
}
