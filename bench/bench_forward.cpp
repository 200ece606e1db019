// Cost of capture on a BERT-base-shaped model (12 layers x 12 heads, hidden 768, batch 8 x 128,
// random weights; CMake target qkscope_bench_models), as a ratio to the plain model measured in
// the same process, interleaved:
//   BM_Forward/plain        the plain model against itself: the noise floor of the ratios
//   BM_Forward/no_session   instrumented model, no CaptureSession on the thread
//   BM_Forward/full_store   a session storing every head of every site into a QkStore (StoreSink)
//   BM_Forward/full_gather  a session taking every head of every site, sink does nothing
//                           (the capture op's own cost, without the store's copy)
//   BM_Forward/one_head     a session wanting one head of one site (StoreSink, SiteFilter)
//   BM_GraphDiff/no_session the optimised graphs the executor ran, plain vs instrumented
//   BM_CaptureOp/no_session one call of the capture op, no session (12 per BERT-base forward)
//   BM_StoreAdd/fresh, /prefaulted  the store's copy of one forward's q/k alone (no model)
//   BM_ForwardOnce/plain    the plain forward alone, for BLAS comparisons (few iterations; the
//                           label lists the BLAS libraries mapped into the process)
//   BM_Request/<model>/<variant>  one HTTP-server-sized request (1 x 33 tokens, ids and an
//                           all-ones mask, explicit sequence index as tools/http_server passes)
//                           on the small reference BERT (`small`, models/bert.pt: 3 sites x 4
//                           heads x 16) and on BERT-base (`base`): /plain against itself,
//                           /no_session (the instrumented model, capture off), /captured into one QkStore kept over the whole run (no budget: the
//                           store grows) and /budget (a 5,000-token budget: the steady state
//                           evicts a sequence per request). Counters as BM_Forward, in
//                           microseconds, plus delta_us (median of the per-pair differences
//                           variant - plain: what a captured request costs) and the p10s.
//
// Each iteration of BM_Forward runs one plain forward and one variant forward, in alternating
// order (ABBA), on the same inputs; a fresh store is built outside the timed forwards. The time
// reported is the variant's. Counters:
//   plain_ms, variant_ms  medians of wall time
//   ratio                 median of the per-pair ratios variant / plain (ratio_p25, ratio_p75:
//                         their quartiles, the spread the machine's load leaves)
//   ratio_min             min variant / min plain; ratio_cpu: median per-pair ratio of CPU time
//   captured_MB           q/k bytes handed to the sink per forward
//   sink_ms, ratio_sink   (full_store, one_head) wall time inside the sink's consume() per
//                         forward, and the per-pair median of 1 + sink / plain: the store's
//                         share, measured on the same forwards but without their noise
//
// Environment: QKSCOPE_BENCH_MODEL (default: the generated bert_base.pt), QKSCOPE_BENCH_PAIRS
// (iterations of BM_Forward, default 10), QKSCOPE_BENCH_ONCE (iterations of BM_ForwardOnce,
// default 3), QKSCOPE_BENCH_THREADS (at::set_num_threads; default: LibTorch's own choice),
// QKSCOPE_BENCH_SMALL_MODEL (default: the generated bert.pt), QKSCOPE_BENCH_REQUEST_PAIRS
// (iterations of BM_Request/small, default 2000; /base runs a tenth of them).
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/capture_sink.h"
#include "qkscope/qk_store.h"
#include "qkscope/safetensors.h"

#ifndef QKSCOPE_BENCH_MODELS_DIR
#define QKSCOPE_BENCH_MODELS_DIR "models"
#endif

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::max(1, std::atoi(v)) : fallback;
}

std::string model_path() {
  const char* v = std::getenv("QKSCOPE_BENCH_MODEL");
  return v != nullptr && *v != '\0' ? v : std::string(QKSCOPE_BENCH_MODELS_DIR) + "/bert_base.pt";
}

// "x/bert_base.pt" -> "x/bert_base_inputs.safetensors"
std::string inputs_path(const std::string& model) {
  std::string stem = model.size() > 3 && model.compare(model.size() - 3, 3, ".pt") == 0
                         ? model.substr(0, model.size() - 3)
                         : model;
  return stem + "_inputs.safetensors";
}

// The model and its inputs, loaded once per process.
struct Fixture {
  std::optional<qkscope::CaptureModule> module;
  std::vector<c10::IValue> inputs;  // in forward's argument order
  std::string error;                // non-empty: the benchmarks skip with it
  bool warm_plain = false, warm_instrumented = false;
};

Fixture load_fixture(const std::string& model) {
  Fixture f;
  const std::string inputs = inputs_path(model);
  if (!std::filesystem::is_regular_file(model) || !std::filesystem::is_regular_file(inputs)) {
    f.error = "missing " + model + " or " + inputs +
              " (build the CMake target qkscope_bench_models)";
    return f;
  }
  try {
    f.module = qkscope::CaptureModule::load(model);
    qkscope::SafetensorsFile file = qkscope::SafetensorsFile::open(inputs);
    for (const std::string& arg : f.module->argument_names()) {
      if (!file.has(arg)) break;  // trailing arguments take their defaults
      std::vector<int64_t> values = file.read<int64_t>(arg);
      const qkscope::TensorInfo& info = file.info(arg);
      f.inputs.emplace_back(torch::from_blob(values.data(), info.shape, torch::kLong).clone());
    }
    if (f.inputs.empty())
      f.error = "no input of " + inputs + " matches " + f.module->forward_schema();
  } catch (const std::exception& e) {
    f.error = e.what();
  }
  return f;
}

Fixture& fixture() {
  static Fixture f = load_fixture(model_path());
  return f;
}

double now_wall() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double now_cpu() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Timing {
  double wall = 0, cpu = 0;
};

Timing timed(const std::function<void()>& fn) {
  const double w0 = now_wall(), c0 = now_cpu();
  fn();
  return {now_wall() - w0, now_cpu() - c0};
}

// Quantile with linear interpolation (numpy's default); p in [0, 1].
double quantile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const double frac = pos - static_cast<double>(lo);
  return lo + 1 < v.size() ? v[lo] + frac * (v[lo + 1] - v[lo]) : v[lo];
}

double median(const std::vector<double>& v) { return quantile(v, 0.5); }

// The BLAS libraries mapped into this process (libblas/libopenblas paths), for the label.
std::string blas_libraries() {
  std::ifstream maps("/proc/self/maps");
  std::vector<std::string> found;
  for (std::string line; std::getline(maps, line);) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const bool blas = path.find("libblas") != std::string::npos ||
                      path.find("libopenblas") != std::string::npos;
    if (blas && std::find(found.begin(), found.end(), path) == found.end())
      found.push_back(path);
  }
  std::string out;
  for (const std::string& path : found) out += (out.empty() ? "" : " ") + path;
  return out.empty() ? "no BLAS mapped" : out;
}

// Forwards to another sink and adds up the wall time spent in its consume() (the store's copy),
// which runs inside the capture op, on the forward's thread, while the model waits.
class TimedSink : public qkscope::CaptureSink {
 public:
  explicit TimedSink(std::unique_ptr<qkscope::CaptureSink> inner) : inner_(std::move(inner)) {}
  void prepare(const std::vector<qkscope::SiteDescription>& sites) override {
    inner_->prepare(sites);
  }
  std::vector<int> wants_heads(const qkscope::SiteDescription& site) override {
    return inner_->wants_heads(site);
  }
  void consume(const qkscope::SiteDescription& site, const qkscope::QkBatch& batch) override {
    const double t0 = now_wall();
    inner_->consume(site, batch);
    seconds_ += now_wall() - t0;
  }
  double seconds() const { return seconds_; }

 private:
  std::unique_ptr<qkscope::CaptureSink> inner_;
  double seconds_ = 0;
};

enum class Variant { plain, no_session, full_store, full_gather, one_head };

// One variant forward: the sink and store are built by `setup` outside the timed part.
struct VariantRun {
  std::unique_ptr<qkscope::QkStore> store;
  std::unique_ptr<qkscope::CaptureSink> sink;
  int64_t bytes = 0;  // q/k bytes handed to the sink
};

void setup(Variant v, VariantRun& run) {
  run.store.reset();
  run.sink.reset();
  run.bytes = 0;
  int64_t* bytes = &run.bytes;
  auto count = [bytes](const qkscope::SiteDescription&, const qkscope::QkBatch& b) {
    *bytes += 2 * b.n_tokens * b.n_heads * b.head_dim * static_cast<int64_t>(sizeof(float));
  };
  switch (v) {
    case Variant::full_store:
      run.store = std::make_unique<qkscope::QkStore>();
      run.sink = std::make_unique<TimedSink>(std::make_unique<qkscope::StoreSink>(*run.store));
      break;
    case Variant::one_head: {
      run.store = std::make_unique<qkscope::QkStore>();
      qkscope::SiteFilter filter;
      filter.layers = {0};
      filter.heads = {0};
      run.sink =
          std::make_unique<TimedSink>(std::make_unique<qkscope::StoreSink>(*run.store, filter));
      break;
    }
    case Variant::full_gather:
      run.sink = std::make_unique<qkscope::CallbackSink>(count);
      break;
    default:
      break;
  }
}

void forward_plain(const Fixture& f) { f.module->forward_original(f.inputs); }

void forward_variant(const Fixture& f, Variant v, VariantRun& run) {
  switch (v) {
    case Variant::plain:
      f.module->forward_original(f.inputs);
      break;
    case Variant::no_session:
      f.module->forward(f.inputs);
      break;
    default: {
      qkscope::CaptureSession session(*run.sink);
      f.module->forward(f.inputs);
    }
  }
}

// The profiling executor optimises a graph after its first runs, and the first forward with a
// session learns the site sizes: none of that belongs in the figures.
void warm_up(Fixture& f) {
  if (!f.warm_plain) {
    for (int i = 0; i < 2; ++i) forward_plain(f);
    f.warm_plain = true;
  }
  if (!f.warm_instrumented) {
    for (int i = 0; i < 2; ++i) f.module->forward(f.inputs);
    qkscope::CallbackSink sink([](const qkscope::SiteDescription&, const qkscope::QkBatch&) {});
    qkscope::CaptureSession session(sink);
    f.module->forward(f.inputs);
    f.warm_instrumented = true;
  }
}

void BM_Forward(benchmark::State& state, Variant variant) {
  Fixture& f = fixture();
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  warm_up(f);
  std::vector<double> plain_wall, variant_wall, ratio, ratio_cpu, sink_wall;
  int64_t bytes = 0;
  VariantRun run;
  int64_t i = 0;
  for (auto _ : state) {
    setup(variant, run);
    Timing tp, tv;
    if (i++ % 2 == 0) {
      tp = timed([&] { forward_plain(f); });
      tv = timed([&] { forward_variant(f, variant, run); });
    } else {
      tv = timed([&] { forward_variant(f, variant, run); });
      tp = timed([&] { forward_plain(f); });
    }
    state.SetIterationTime(tv.wall);
    plain_wall.push_back(tp.wall);
    variant_wall.push_back(tv.wall);
    ratio.push_back(tv.wall / tp.wall);
    ratio_cpu.push_back(tv.cpu / tp.cpu);
    if (auto* timed = dynamic_cast<TimedSink*>(run.sink.get()))
      sink_wall.push_back(timed->seconds());
    bytes = run.bytes;
    if (run.store) {  // what the store kept
      qkscope::QkData data = run.store->take();
      for (const auto& site : data.sites)
        bytes += static_cast<int64_t>((site.q.size() + site.k.size()) * sizeof(float));
    }
    run.store.reset();  // freed outside the timed forwards
    run.sink.reset();
  }
  const double pm = median(plain_wall), vm = median(variant_wall);
  state.counters["plain_ms"] = 1e3 * pm;
  state.counters["variant_ms"] = 1e3 * vm;
  state.counters["ratio"] = median(ratio);
  state.counters["ratio_p25"] = quantile(ratio, 0.25);
  state.counters["ratio_p75"] = quantile(ratio, 0.75);
  state.counters["ratio_medians"] = vm / pm;
  state.counters["ratio_min"] = *std::min_element(variant_wall.begin(), variant_wall.end()) /
                                *std::min_element(plain_wall.begin(), plain_wall.end());
  state.counters["ratio_cpu"] = median(ratio_cpu);
  state.counters["captured_MB"] = static_cast<double>(bytes) / 1e6;
  if (!sink_wall.empty()) {
    // The store's share alone: 1 + (time in the sink) / plain, from the same forwards.
    state.counters["sink_ms"] = 1e3 * median(sink_wall);
    std::vector<double> accounted;
    for (size_t j = 0; j < sink_wall.size(); ++j)
      accounted.push_back(1 + sink_wall[j] / plain_wall[j]);
    state.counters["ratio_sink"] = median(accounted);
  }
  state.counters["pairs"] = static_cast<double>(plain_wall.size());
}

void BM_ForwardOnce(benchmark::State& state) {
  Fixture& f = fixture();
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  forward_plain(f);  // one warm-up: the profiling run
  std::vector<double> wall;
  for (auto _ : state) {
    Timing t = timed([&] { forward_plain(f); });
    state.SetIterationTime(t.wall);
    wall.push_back(t.wall);
  }
  state.counters["plain_ms"] = 1e3 * median(wall);
  state.counters["threads"] = at::get_num_threads();
  state.SetLabel(blas_libraries());
}

// The capture op as the interpreter calls it (boxed, through the dispatcher), without a session:
// the whole per-site cost of an instrumented model that nobody captures from.
void BM_CaptureOp(benchmark::State& state) {
  fixture();  // loads the plugin's model code, which registers the op
  const auto handle = c10::Dispatcher::singleton().findSchema({"qkscope::capture", ""});
  if (!handle) {
    state.SkipWithError("qkscope::capture is not registered");
    return;
  }
  const at::Tensor q = at::zeros({8, 12, 128, 64}), k = at::zeros({8, 12, 128, 64});
  torch::jit::Stack stack;
  for (auto _ : state) {
    stack.emplace_back(q);
    stack.emplace_back(k);
    stack.emplace_back(int64_t{0});  // site
    stack.emplace_back(0.125);        // prescale
    stack.emplace_back(1.0);          // q_unscale
    stack.emplace_back(1.0);          // k_unscale
    handle->callBoxed(&stack);
    stack.clear();
  }
}

// Node kinds of a graph, nested blocks included.
void count_kinds(const torch::jit::Block* block, std::map<std::string, int>& counts) {
  for (const torch::jit::Node* node : block->nodes()) {
    ++counts[node->kind().toQualString()];
    for (const torch::jit::Block* inner : node->blocks()) count_kinds(inner, counts);
  }
}

// What the instrumented model runs that the plain one does not: the node kinds of the optimised
// graphs the executor last ran for each (after warm-up), compared. Counters: nodes_plain,
// nodes_instrumented, capture_nodes (qkscope::capture), other_differences (nodes of any other
// kind present in one graph and not the other); the label lists those kinds.
void BM_GraphDiff(benchmark::State& state) {
  Fixture& f = fixture();
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  warm_up(f);
  std::map<std::string, int> plain, instrumented;
  for (auto _ : state) {
    forward_plain(f);
    plain.clear();
    count_kinds(torch::jit::lastExecutedOptimizedGraph()->block(), plain);
    f.module->forward(f.inputs);
    instrumented.clear();
    count_kinds(torch::jit::lastExecutedOptimizedGraph()->block(), instrumented);
  }
  int n_plain = 0, n_instrumented = 0, other = 0;
  std::string label;
  for (const auto& [kind, n] : plain) n_plain += n;
  for (const auto& [kind, n] : instrumented) n_instrumented += n;
  std::map<std::string, int> diff = instrumented;
  for (const auto& [kind, n] : plain) diff[kind] -= n;
  for (const auto& [kind, d] : diff) {
    if (d == 0 || kind == "qkscope::capture") continue;
    other += std::abs(d);
    label += (label.empty() ? "" : " ") + kind + (d > 0 ? "+" : "") + std::to_string(d);
  }
  state.counters["nodes_plain"] = n_plain;
  state.counters["nodes_instrumented"] = n_instrumented;
  state.counters["capture_nodes"] = diff["qkscope::capture"];
  state.counters["other_differences"] = other;
  state.SetLabel(label.empty() ? "same nodes apart from qkscope::capture" : label);
}

// The store's side of full capture alone, without a model: the 12 sites of one BERT-base forward
// (8 sequences x 128 tokens, 12 heads x 64) added to a fresh QkStore, as StoreSink does. Time
// per forward; the store is built and freed outside the timing. /prefaulted first sets malloc
// to keep freed memory (no mmap, no trimming). The store's buffers no longer come from malloc
// (QkStore's arena: huge-page chunks of its own), so both now measure the arena on memory the
// store maps afresh; /prefaulted stays for comparison with older figures. It changes malloc for
// the rest of the process, so it is registered last.
void BM_StoreAdd(benchmark::State& state, bool prefaulted) {
  if (prefaulted) {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  }
  constexpr int kSites = 12, kHeads = 12, kDim = 64, kRows = 8, kLen = 128;
  constexpr int64_t n = int64_t{kRows} * kLen;
  std::vector<float> q(n * kHeads * kDim), k(n * kHeads * kDim);
  for (size_t i = 0; i < q.size(); ++i) {
    q[i] = static_cast<float>(i % 97) * 0.01f;
    k[i] = static_cast<float>(i % 89) * 0.01f;
  }
  std::vector<int64_t> sequence(n), position(n), ids(n, 1000);
  int64_t first = 0;
  std::vector<double> wall;
  for (auto _ : state) {
    state.PauseTiming();
    auto store = std::make_unique<qkscope::QkStore>();
    qkscope::SiteMeta meta;
    for (int h = 0; h < kHeads; ++h) meta.head_index.push_back(h);
    for (int l = 0; l < kSites; ++l) store->declare_site(l, meta);
    for (int64_t t = 0; t < n; ++t) {
      sequence[t] = first + t / kLen;
      position[t] = t % kLen;
    }
    first += kRows;
    state.ResumeTiming();
    const double t0 = now_wall();
    for (int l = 0; l < kSites; ++l) {
      qkscope::QkBatch b;
      b.layer = l;
      b.n_tokens = n;
      b.n_heads = kHeads;
      b.head_dim = kDim;
      b.q = q.data();
      b.k = k.data();
      b.sequence = sequence.data();
      b.position = position.data();
      b.token_id = ids.data();
      store->add(b);
    }
    wall.push_back(now_wall() - t0);
    state.PauseTiming();
    store.reset();
    state.ResumeTiming();
  }
  const double bytes = 2.0 * kSites * n * kHeads * kDim * sizeof(float);
  state.counters["ms_per_forward"] = 1e3 * median(wall);
  state.counters["GB/s"] = bytes / median(wall) / 1e9;
}

// ---- one small request, as the HTTP server runs it ------------------------------------------

std::string small_model_path() {
  const char* v = std::getenv("QKSCOPE_BENCH_SMALL_MODEL");
  return v != nullptr && *v != '\0' ? v : std::string(QKSCOPE_BENCH_MODELS_DIR) + "/bert.pt";
}

// A model with the inputs of one request: ids [1, 33] (the model's own sample ids, repeated as
// needed) and an all-ones mask [1, 33], as tools/http_server builds them.
struct RequestFixture {
  Fixture base;
  std::vector<c10::IValue> request;
};

RequestFixture load_request(const std::string& model) {
  constexpr int64_t kTokens = 33;
  RequestFixture r;
  r.base = load_fixture(model);
  if (!r.base.error.empty()) return r;
  const std::vector<std::string> names = r.base.module->argument_names();
  for (size_t i = 0; i < r.base.inputs.size() && i < names.size(); ++i) {
    const at::Tensor sample = r.base.inputs[i].toTensor();
    if (names[i].find("mask") != std::string::npos) {
      r.request.emplace_back(at::ones({1, kTokens}, at::kLong));
    } else {
      const at::Tensor flat = sample.reshape({-1});
      r.request.emplace_back(
          flat.repeat({(kTokens + flat.numel() - 1) / flat.numel()}).narrow(0, 0, kTokens)
              .reshape({1, kTokens}).clone());
    }
  }
  return r;
}

RequestFixture& request_fixture(bool small) {
  if (small) {
    static RequestFixture s = load_request(small_model_path());
    return s;
  }
  static RequestFixture b = load_request(model_path());
  return b;
}

enum class RequestVariant { plain, no_session, captured, budget };

void BM_Request(benchmark::State& state, bool small, RequestVariant variant) {
  RequestFixture& r = request_fixture(small);
  if (!r.base.error.empty()) {
    state.SkipWithError(r.base.error.c_str());
    return;
  }
  const qkscope::CaptureModule& module = *r.base.module;
  // One store for the whole run, as the server keeps one per capture configuration.
  qkscope::StoreOptions options;
  if (variant == RequestVariant::budget) options.max_tokens = 5000;
  qkscope::QkStore store(options);
  TimedSink sink(std::make_unique<qkscope::StoreSink>(store));
  int64_t number = 0;
  {
    // Warm-up: the executor's profiling runs and the first session forward (site sizes).
    qkscope::QkStore scratch;
    qkscope::StoreSink warm(scratch);
    for (int i = 0; i < 3; ++i) {
      module.forward_original(r.request);
      module.forward(r.request);
      qkscope::CaptureSession session(warm);
      module.forward(r.request, {number++});
    }
  }
  auto run_variant = [&] {
    if (variant == RequestVariant::plain) {
      module.forward_original(r.request);
      return;
    }
    if (variant == RequestVariant::no_session) {
      module.forward(r.request);
      return;
    }
    qkscope::CaptureSession session(sink);
    module.forward(r.request, {number++});
  };
  std::vector<double> plain_wall, variant_wall, ratio, delta, sink_wall;
  int64_t i = 0;
  for (auto _ : state) {
    const double sink_before = sink.seconds();
    Timing tp, tv;
    if (i++ % 2 == 0) {
      tp = timed([&] { module.forward_original(r.request); });
      tv = timed(run_variant);
    } else {
      tv = timed(run_variant);
      tp = timed([&] { module.forward_original(r.request); });
    }
    state.SetIterationTime(tv.wall);
    plain_wall.push_back(tp.wall);
    variant_wall.push_back(tv.wall);
    ratio.push_back(tv.wall / tp.wall);
    delta.push_back(tv.wall - tp.wall);
    sink_wall.push_back(sink.seconds() - sink_before);
  }
  state.counters["plain_us"] = 1e6 * median(plain_wall);
  state.counters["variant_us"] = 1e6 * median(variant_wall);
  state.counters["plain_p10_us"] = 1e6 * quantile(plain_wall, 0.1);
  state.counters["variant_p10_us"] = 1e6 * quantile(variant_wall, 0.1);
  state.counters["delta_us"] = 1e6 * median(delta);
  state.counters["ratio"] = median(ratio);
  state.counters["ratio_p25"] = quantile(ratio, 0.25);
  state.counters["ratio_p75"] = quantile(ratio, 0.75);
  state.counters["sink_us"] = 1e6 * median(sink_wall);
  state.counters["kept_tokens"] = static_cast<double>(store.tokens_kept());
  state.counters["pairs"] = static_cast<double>(plain_wall.size());
}

void register_all() {
  const int pairs = env_int("QKSCOPE_BENCH_PAIRS", 10);
  const std::pair<const char*, Variant> variants[] = {
      {"BM_Forward/plain", Variant::plain},
      {"BM_Forward/no_session", Variant::no_session},
      {"BM_Forward/full_store", Variant::full_store},
      {"BM_Forward/full_gather", Variant::full_gather},
      {"BM_Forward/one_head", Variant::one_head}};
  for (const auto& [name, v] : variants)
    benchmark::RegisterBenchmark(name, BM_Forward, v)
        ->Iterations(pairs)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  const int request_pairs = env_int("QKSCOPE_BENCH_REQUEST_PAIRS", 2000);
  const std::pair<const char*, RequestVariant> requests[] = {
      {"plain", RequestVariant::plain},
      {"no_session", RequestVariant::no_session},
      {"captured", RequestVariant::captured},
      {"budget", RequestVariant::budget}};
  for (bool small : {true, false})
    for (const auto& [name, v] : requests)
      benchmark::RegisterBenchmark(
          (std::string("BM_Request/") + (small ? "small/" : "base/") + name).c_str(), BM_Request,
          small, v)
          ->Iterations(small ? request_pairs : std::max(1, request_pairs / 10))
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_CaptureOp/no_session", BM_CaptureOp);
  benchmark::RegisterBenchmark("BM_GraphDiff/no_session", BM_GraphDiff)->Iterations(1)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_ForwardOnce/plain", BM_ForwardOnce)
      ->Iterations(env_int("QKSCOPE_BENCH_ONCE", 3))
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_StoreAdd/fresh", BM_StoreAdd, false)
      ->Iterations(30)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_StoreAdd/prefaulted", BM_StoreAdd, true)
      ->Iterations(30)
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* t = std::getenv("QKSCOPE_BENCH_THREADS"); t != nullptr && *t != '\0')
    at::set_num_threads(std::max(1, std::atoi(t)));
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
