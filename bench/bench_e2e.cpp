// The baseline of the end-to-end benchmark (bench/e2e.py): plain inference of a model over an
// ids file (one sequence of space-separated ids per line), with the batching `capture --ids`
// uses (the same read_id_file and make_batch of tools/capture/corpus.cpp: batches of
// --batch-size rows in file order, right-padded with id 0 to the batch's longest sequence).
//
//   bench_e2e --model FILE --ids FILE [--batch-size N] [--threads N]
//
// Prints one JSON object on stdout: sequences, tokens, batches, load_s (model load),
// forward_s (all forwards), total_s (from main() to the end).
//
//   bench_e2e --model FILE --ids FILE --compare [--max-tokens N] [--rounds R] [--graphs DIR]
//
// --compare runs, in one process over the same batches, the plain forward (forward_original)
// and the instrumented forward capturing into a QkStore (--max-tokens budget, default 2000)
// as `capture` does, alternating per batch (AB, then BA on the next batch) so that both see
// the same machine load and the same shapes in the same order. Repeated --rounds times (the
// first round warms the executors; its times are reported apart). Adds plain_s, captured_s
// (forwards of the later rounds), ratio, median_pair_ratio (of the per-batch ratios) and the
// CPU times plain_cpu_s, captured_cpu_s, cpu_ratio. --graphs DIR writes the graphs the executor last
// ran for each (plain.graph, instrumented.graph) after the last batch.
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include "corpus.h"
#include <torch/csrc/jit/runtime/graph_executor.h>

#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/capture_sink.h"
#include "qkscope/qk_store.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// CPU time of the whole process (all threads): less sensitive than wall time to other jobs on
// the machine, though OpenBLAS's waiting threads spin (sched_yield) and count in it.
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

int usage() {
  std::fprintf(stderr, "usage: bench_e2e --model FILE --ids FILE [--batch-size N] [--threads N] "
                       "[--compare [--max-tokens N] [--rounds R] [--graphs DIR]]\n");
  return 2;
}

std::vector<c10::IValue> batch_inputs(const qkscope::cli::Batch& batch,
                                      const std::vector<std::string>& arguments) {
  std::vector<c10::IValue> inputs;
  for (const std::string& arg : arguments) {
    auto it = batch.tensors.find(arg);
    if (it == batch.tensors.end()) break;  // trailing arguments take their defaults
    inputs.emplace_back(torch::from_blob(const_cast<void*>(it->second.data), it->second.shape,
                                         torch::kLong));
  }
  return inputs;
}

void write_graph(const std::string& dir, const std::string& name) {
  std::ofstream out(dir + "/" + name);
  out << *torch::jit::lastExecutedOptimizedGraph();
}

// --compare: plain and captured forwards alternating over the same batches (see the top).
int run_compare(const qkscope::CaptureModule& module,
                const std::vector<qkscope::cli::Sequence>& sequences, size_t batch_size,
                int64_t max_tokens, int rounds, const std::string& graphs_dir, double load_s,
                std::chrono::steady_clock::time_point start) {
  qkscope::StoreOptions options;
  options.max_tokens = max_tokens;
  qkscope::QkStore store(options);
  qkscope::StoreSink sink(store);
  const std::vector<std::string>& arguments = module.argument_names();
  double warm_plain = 0, warm_captured = 0, plain = 0, captured = 0, cpu_plain = 0,
         cpu_captured = 0;
  int64_t batches = 0, tokens = 0, next_sequence = 0;
  std::vector<double> pair_ratios;  // per batch: captured / plain
  for (int round = 0; round < rounds; ++round) {
    for (size_t begin = 0; begin < sequences.size(); begin += batch_size) {
      const size_t end = std::min(sequences.size(), begin + batch_size);
      auto batch = qkscope::cli::make_batch(sequences, begin, end, /*pad_id=*/0, std::nullopt,
                                            arguments);
      std::vector<int64_t> ids(end - begin);
      for (auto& id : ids) id = next_sequence++;
      double t_plain = 0, t_captured = 0, c_plain = 0, c_captured = 0;
      for (int leg = 0; leg < 2; ++leg) {
        const bool plain_now = (leg == 0) == (batches % 2 == 0);
        const auto t0 = std::chrono::steady_clock::now();
        const double cpu0 = cpu_seconds();
        if (plain_now) {
          module.forward_original(batch_inputs(*batch, arguments));
          t_plain = seconds_since(t0);
          c_plain = cpu_seconds() - cpu0;
        } else {
          qkscope::CaptureSession session(sink);
          module.forward(batch_inputs(*batch, arguments), ids);
          t_captured = seconds_since(t0);
          c_captured = cpu_seconds() - cpu0;
        }
        if (!graphs_dir.empty() && round == rounds - 1 && end == sequences.size())
          write_graph(graphs_dir, plain_now ? "plain.graph" : "instrumented.graph");
      }
      if (round > 0 || rounds == 1) {  // the first of several rounds warms up
        pair_ratios.push_back(t_captured / t_plain);
        cpu_plain += c_plain;
        cpu_captured += c_captured;
      }
      (round == 0 ? warm_plain : plain) += t_plain;
      (round == 0 ? warm_captured : captured) += t_captured;
      ++batches;
      if (round == 0) tokens += batch->tokens;
    }
  }
  if (rounds == 1) {
    plain = warm_plain;
    captured = warm_captured;
  }
  std::sort(pair_ratios.begin(), pair_ratios.end());
  const double median_ratio = pair_ratios[pair_ratios.size() / 2];
  std::printf("{\"sequences\": %zu, \"tokens\": %lld, \"rounds\": %d, \"threads\": %d, "
              "\"max_tokens\": %lld, \"load_s\": %.6f, \"warm_plain_s\": %.6f, "
              "\"warm_captured_s\": %.6f, \"plain_s\": %.6f, \"captured_s\": %.6f, "
              "\"ratio\": %.4f, \"median_pair_ratio\": %.4f, \"plain_cpu_s\": %.6f, "
              "\"captured_cpu_s\": %.6f, \"cpu_ratio\": %.4f, \"tokens_seen\": %lld, \"total_s\": %.6f}\n",
              sequences.size(), static_cast<long long>(tokens), rounds, at::get_num_threads(),
              static_cast<long long>(max_tokens), load_s, warm_plain, warm_captured, plain,
              captured, captured / plain, median_ratio, cpu_plain, cpu_captured,
              cpu_captured / cpu_plain, static_cast<long long>(store.counts().tokens_seen),
              seconds_since(start));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const auto start = std::chrono::steady_clock::now();
  std::string model_path, ids_path;
  std::string graphs_dir;
  int batch_size = 8, threads = 0, rounds = 2;
  bool compare = false;
  int64_t max_tokens = 2000;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--model") && has_value) model_path = argv[++i];
    else if (!std::strcmp(argv[i], "--ids") && has_value) ids_path = argv[++i];
    else if (!std::strcmp(argv[i], "--batch-size") && has_value) batch_size = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && has_value) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--compare")) compare = true;
    else if (!std::strcmp(argv[i], "--max-tokens") && has_value) max_tokens = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--rounds") && has_value) rounds = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--graphs") && has_value) graphs_dir = argv[++i];
    else return usage();
  }
  if (model_path.empty() || ids_path.empty() || batch_size <= 0 || threads < 0 || rounds < 1 ||
      max_tokens <= 0)
    return usage();
  try {
    if (threads > 0) at::set_num_threads(threads);  // as capture --threads does
    const qkscope::CaptureModule module = qkscope::CaptureModule::load(model_path);
    const double load_s = seconds_since(start);
    const std::vector<qkscope::cli::Sequence> sequences = qkscope::cli::read_id_file(ids_path);
    const std::vector<std::string>& arguments = module.argument_names();

    if (compare)
      return run_compare(module, sequences, static_cast<size_t>(batch_size), max_tokens, rounds,
                         graphs_dir, load_s, start);
    const auto forwards = std::chrono::steady_clock::now();
    const double cpu0 = cpu_seconds();
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
    const double forward_cpu_s = cpu_seconds() - cpu0;
    std::printf("{\"sequences\": %zu, \"tokens\": %lld, \"batches\": %lld, \"threads\": %d, "
                "\"load_s\": %.6f, \"forward_s\": %.6f, \"forward_cpu_s\": %.6f, \"total_s\": %.6f}\n",
                sequences.size(), static_cast<long long>(tokens), static_cast<long long>(batches),
                at::get_num_threads(), load_s, forward_s, forward_cpu_s, seconds_since(start));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_e2e: error: %s\n", e.what());
    return 1;
  }
}
