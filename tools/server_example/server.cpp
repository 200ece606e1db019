// The serving loop of the example, and the only file of it that includes LibTorch.
#include "server.h"

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "qkscope/capture_gate.h"
#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/capture_sink.h"
#include "qkscope/error.h"
#include "qkscope/metrics.h"
#include "qkscope/qk_file.h"
#include "qkscope/qk_merge.h"
#include "qkscope/qk_store.h"
#include "qkscope/report.h"
#include "qkscope/serving.h"

namespace qkscope::server {

std::vector<Request> make_requests(int64_t count, int max_length, int64_t vocab, uint64_t seed) {
  QKSCOPE_CHECK_AS(UsageError, count >= 0 && count <= tools::kMaxRequests,
                   "--requests: expected 0..2^{} (request n is sequence prefix << {} | n), got {}",
                   tools::kRequestBits, tools::kRequestBits, count);
  QKSCOPE_CHECK_AS(UsageError, max_length >= 1, "expected a max length >= 1, got {}", max_length);
  QKSCOPE_CHECK_AS(UsageError, vocab >= 2, "expected a vocabulary of >= 2 ids, got {}", vocab);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> length_dist(1, max_length);
  std::uniform_int_distribution<int64_t> id_dist(1, vocab - 1);  // 0 is the padding id
  std::vector<Request> requests(static_cast<size_t>(count));
  for (int64_t n = 0; n < count; ++n) {
    Request& r = requests[static_cast<size_t>(n)];
    r.number = n;
    r.length = length_dist(rng);
    r.padded_length = std::min<int64_t>((r.length + 7) / 8 * 8, max_length);
    r.input_ids.assign(static_cast<size_t>(r.padded_length), 0);
    r.attention_mask.assign(static_cast<size_t>(r.padded_length), 0);
    for (int64_t s = 0; s < r.length; ++s) {
      r.input_ids[static_cast<size_t>(s)] = id_dist(rng);
      r.attention_mask[static_cast<size_t>(s)] = 1;
    }
  }
  return requests;
}

struct Server::Impl {
  Impl(const std::string& model_path, ServerOptions o)
      : options(std::move(o)), identity(options.sequence_prefix, "server-example"),
        module(CaptureModule::load(model_path)), sink(store) {}

  // forward's inputs for one request, in the order of its arguments. Each forward gets tensors
  // of its own: nothing is shared between workers but the (read-only) weights.
  std::vector<c10::IValue> inputs(const Request& r) const {
    QKSCOPE_CHECK(r.length >= 1 && r.padded_length >= r.length &&
                      static_cast<int64_t>(r.input_ids.size()) == r.padded_length &&
                      static_cast<int64_t>(r.attention_mask.size()) == r.padded_length,
                  "request {}: expected 1 <= length <= padded_length = size of input_ids and "
                  "attention_mask, got length {}, padded_length {}, sizes {} and {}",
                  r.number, r.length, r.padded_length, r.input_ids.size(),
                  r.attention_mask.size());
    const auto opts = at::TensorOptions().dtype(at::kLong);
    std::vector<c10::IValue> out(2);
    out[static_cast<size_t>(decoder.ids)] = at::tensor(r.input_ids, opts).view({1, r.padded_length});
    out[static_cast<size_t>(decoder.mask)] = at::tensor(r.attention_mask, opts).view({1, r.padded_length});
    return out;
  }

  // One request, as a server's request handler would run it.
  c10::IValue serve(const Request& r, bool capture) {
    if (!capture) {
      // Not sampled: the original graph. forward() with no session would be right too (its
      // capture ops see no active forward and return at once), but the ops' calls and their
      // profiling still cost ~2 % of a small model's request; forward_original costs nothing.
      return module.forward_original(inputs(r));
    }
    // Sampled. The pass keeps a report from taking the store while this forward is only part
    // way through the layers; the session binds the shared sink to this thread for this one
    // forward only (a session open for a worker's lifetime would capture all its requests).
    // The explicit sequence index makes the store key this request by its number, whichever
    // worker serves it and in whatever order.
    CaptureGate::Pass pass(gate);
    CaptureSession session(sink);
    return module.forward(inputs(r), {identity.sequence(r.number)});
  }

  // One generation request (generation mode): greedy decoding of options.generate tokens with
  // the key/value cache (qkscope/serving.h), as a server's generation loop would run it.
  // Returns the ids [1, length + generate].
  c10::IValue generate(const Request& r, bool capture) {
    QKSCOPE_CHECK(r.length >= 1 && static_cast<int64_t>(r.input_ids.size()) >= r.length,
                  "request {}: expected 1 <= length <= size of input_ids, got length {}, size {}",
                  r.number, r.length, r.input_ids.size());
    const std::vector<int64_t> prompt(r.input_ids.begin(), r.input_ids.begin() + r.length);
    if (!capture)  // not sampled: the original graph, as serve()
      return greedy_decode(module, decoder, prompt, options.generate, DecodeForward::original);
    // Sampled: every forward of this generation captures, under the same sequence index, into
    // an assembler of its own; nothing reaches the store until flush(). The generation's
    // forwards hold no gate: a report may take the store meanwhile.
    SequenceAssembler assembler(sink);
    at::Tensor ids;
    {
      CaptureSession session(assembler);
      ids = greedy_decode(module, decoder, prompt, options.generate, DecodeForward::captured,
                          identity.sequence(r.number));
    }
    // The whole sequence goes to the shared store, layer by layer: that must not overlap a
    // take (rule 3).
    CaptureGate::Pass pass(gate);
    assembler.flush();
    return ids;
  }

  // The sequences.* ranges of the sampled requests `sequences` (ascending): a run of sampled
  // requests with none between them that another report holds (request numbers s, s + K, ...
  // all here) is one range [first, last + 1). Reports of one run hold disjoint sets of sampled
  // requests, so their ranges never overlap and they merge.
  std::vector<SequenceRange> ranges(const std::vector<int64_t>& sequences) const {
    std::vector<SequenceRange> out;
    const int64_t base = identity.prefix() << tools::kRequestBits;
    for (int64_t s : sequences) {
      if (!out.empty() && s == out.back().end - 1 + options.sample_every)
        out.back().end = s + 1;  // the next sampled request after the range's last
      else
        out.push_back(identity.range(s - base, s - base + 1));
    }
    return out;
  }

  ServerOptions options;
  tools::SequenceIdentity identity;  // request n is sequence identity.sequence(n)
  CaptureModule module;  // one wrapped model; forward() is safe from every worker at once
  QkStore store;         // no token budget: the one-in-K choice of requests is the sampling
  StoreSink sink;        // thread-safe; shared by the sessions of every sampled request
  CaptureGate gate;
  CachedDecoder decoder;  // forward's argument positions; the cache's shape in generation mode
  std::mutex report_mutex;  // reports are numbered and written one at a time
  int reports = 0;
};

Server::Server(const std::string& model_path, ServerOptions options) {
  QKSCOPE_CHECK_AS(UsageError, options.threads >= 1, "--threads: expected >= 1, got {}",
                   options.threads);
  QKSCOPE_CHECK_AS(UsageError, options.sample_every >= 1, "--sample-every: expected >= 1, got {}",
                   options.sample_every);
  QKSCOPE_CHECK_AS(UsageError, options.report_every >= 0, "--report-every: expected >= 0, got {}",
                   options.report_every);
  QKSCOPE_CHECK_AS(UsageError, options.intra_op_threads >= 0,
                   "--intra-op-threads: expected >= 0, got {}", options.intra_op_threads);
  QKSCOPE_CHECK_AS(UsageError, options.generate >= 0, "--generate: expected >= 0, got {}",
                   options.generate);
  if (options.generate > 0) {
    const std::vector<int64_t>& c = options.cache_shape;
    QKSCOPE_CHECK_AS(UsageError, c.size() == 3 && c[0] >= 1 && c[1] >= 1 && c[2] >= 1,
                     "--cache-shape: expected LAYERS,HEADS,HEAD_DIM (each >= 1) with --generate, "
                     "got {} numbers", c.size());
  }
  // Process-wide: every forward, on every worker, uses this many threads for its own
  // operators (ATen applies it to each new thread). N workers x 1 is the usual server setting:
  // the parallelism comes from the requests. BLAS keeps its own (OPENBLAS_NUM_THREADS).
  if (options.intra_op_threads > 0) at::set_num_threads(options.intra_op_threads);
  impl_ = std::make_unique<Impl>(model_path, std::move(options));

  // Validate at load, not on the first request.
  const std::vector<std::string>& args = impl_->module.argument_names();
  auto index = [&](const char* name) {
    return static_cast<int>(std::find(args.begin(), args.end(), name) - args.begin());
  };
  impl_->decoder.ids = index("input_ids");
  impl_->decoder.mask = index("attention_mask");
  if (impl_->options.generate > 0) {
    impl_->decoder.past_k = index("past_k");
    impl_->decoder.past_v = index("past_v");
    impl_->decoder.cache_shape = impl_->options.cache_shape;
    QKSCOPE_CHECK(args.size() == 4 && impl_->decoder.ids < 4 && impl_->decoder.mask < 4 &&
                      impl_->decoder.past_k < 4 && impl_->decoder.past_v < 4,
                  "model '{}': --generate expects forward(input_ids, attention_mask, past_k, "
                  "past_v) in any order, got {}", model_path, impl_->module.forward_schema());
    return;
  }
  QKSCOPE_CHECK(args.size() == 2 && impl_->decoder.ids < 2 && impl_->decoder.mask < 2,
                "model '{}': expected forward(input_ids, attention_mask) in any order, got {}",
                model_path, impl_->module.forward_schema());
}

Server::~Server() = default;

const CaptureModule& Server::module() const { return impl_->module; }
const ServerOptions& Server::options() const { return impl_->options; }

std::optional<int64_t> Server::vocab_size() const {
  return vocabulary_size(impl_->module.original());
}

std::optional<int64_t> Server::max_positions() const {
  return position_count(impl_->module.original());
}

QkData Server::take_captured() {
  return impl_->gate.drain([&] { return impl_->store.take(); });
}

ReportSummary Server::report() {
  std::lock_guard<std::mutex> lock(impl_->report_mutex);
  // Only the take holds the gate; the table is computed while sampled requests capture again.
  QkData data = take_captured();
  ReportSummary summary;
  summary.tokens = data.n_tokens();
  summary.sequences = data.sequence;
  summary.sequences.erase(std::unique(summary.sequences.begin(), summary.sequences.end()),
                          summary.sequences.end());  // tokens come sorted by sequence
  if (summary.tokens == 0) return summary;

  MetricOptions metrics;
  metrics.threads = 1;  // a background job: leave the other cores to the workers
  const CTable table = compute_ctable(data, metrics);
  RunInfo run;
  run.model = impl_->module.name();
  run.input = impl_->options.generate > 0
                  ? fmt::format("synthetic generation requests ({} new tokens each, greedy), one "
                                "in {} captured", impl_->options.generate,
                                impl_->options.sample_every)
                  : fmt::format("synthetic requests, one in {} captured",
                                impl_->options.sample_every);
  summary.number = ++impl_->reports;
  summary.dir = impl_->options.out + "/report-" + std::to_string(summary.number);
  write_outputs(summary.dir, table, run);
  // The q/k themselves (capture --qk recomputes the tables), with their sequence ranges.
  write_qk_file(summary.dir + "/qk.safetensors", data,
                sequence_metadata(impl_->ranges(summary.sequences), data));
  return summary;
}

const tools::SequenceIdentity& Server::identity() const { return impl_->identity; }

RunStats Server::run(const std::vector<Request>& requests, const ResponseFn& on_response,
                     const ReportFn& on_report) {
  Impl& impl = *impl_;
  const auto start = std::chrono::steady_clock::now();
  std::atomic<size_t> next{0};  // stands in for the server's request queue
  std::atomic<int64_t> captured{0}, tokens{0};

  // The first error stops every thread and is rethrown on this one.
  std::mutex error_mutex;
  std::exception_ptr error;
  std::atomic<bool> stop{false};
  auto fail = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (!error) error = std::move(e);
    stop = true;
  };

  // Periodic reports run on their own thread, so no request waits for a table to be computed.
  const int64_t every = impl.options.report_every;
  std::mutex served_mutex;
  std::condition_variable served_cv;
  int64_t served = 0, reported = 0;  // requests served; served count at the last report
  bool workers_done = false;
  std::thread reporter;
  if (every > 0) {
    reporter = std::thread([&] {
      std::unique_lock<std::mutex> lock(served_mutex);
      for (;;) {
        served_cv.wait(lock, [&] { return workers_done || served - reported >= every; });
        if (served - reported < every) break;  // done, and no report due
        reported = served;
        lock.unlock();
        try {
          ReportSummary summary = report();
          if (on_report) on_report(summary);
        } catch (...) {
          fail(std::current_exception());
        }
        lock.lock();
      }
    });
  }

  auto worker = [&] {
    while (!stop) {
      const size_t i = next++;
      if (i >= requests.size()) return;
      const Request& r = requests[i];
      try {
        const bool capture = r.number % impl.options.sample_every == 0;
        const bool generating = impl.options.generate > 0;
        c10::IValue output = generating ? impl.generate(r, capture) : impl.serve(r, capture);
        captured += capture;
        tokens += generating ? r.length + impl.options.generate - 1 : r.length;
        if (on_response) on_response(r, output, capture);
      } catch (...) {
        fail(std::current_exception());
        return;
      }
      if (every > 0) {
        std::lock_guard<std::mutex> lock(served_mutex);
        if (++served - reported >= every) served_cv.notify_one();
      }
    }
  };
  std::vector<std::thread> workers;
  auto join_all = [&] {  // also when starting a thread failed: none may be left joinable
    for (std::thread& t : workers) t.join();
    if (reporter.joinable()) {
      {
        std::lock_guard<std::mutex> lock(served_mutex);
        workers_done = true;
      }
      served_cv.notify_one();
      reporter.join();
    }
  };
  try {
    workers.reserve(static_cast<size_t>(impl.options.threads));
    for (int t = 0; t < impl.options.threads; ++t) workers.emplace_back(worker);
  } catch (...) {
    stop = true;
    join_all();
    throw;
  }
  join_all();
  if (error) std::rethrow_exception(error);

  RunStats stats;
  stats.requests = static_cast<int64_t>(requests.size());
  stats.captured = captured;
  stats.tokens = tokens;
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace qkscope::server
