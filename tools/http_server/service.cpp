// The service: model, workers, capture and reports. The only file of the server that runs
// LibTorch (output_json.cpp converts outputs).
#include "service.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <fmt/format.h>
#include <torch/script.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "output_json.h"
#include "qkscope/capture_gate.h"
#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/capture_sink.h"
#include "qkscope/error.h"
#include "qkscope/joint_report.h"
#include "qkscope/metrics.h"
#include "qkscope/qk_file.h"
#include "qkscope/qk_merge.h"
#include "qkscope/qk_store.h"
#include "qkscope/report.h"
#include "qkscope/serving.h"
#include "qkscope/text/tokenizer.h"
#include "request_json.h"
#include "worker_pool.h"

namespace qkscope::http {
namespace {

using json = nlohmann::json;

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// OpenBLAS (Debian's libopenblas0-pthread, reached through LibTorch's BLAS calls) runs each GEMM
// on a pool of its own whose threads spin (sched_yield) between calls. A server's parallelism
// comes from its workers, each running its own forward; a BLAS pool on top of them spins against
// them: with 2 workers on 2 cores and qkscope's default (OpenBLAS keeps every core when LibTorch
// has one intra-op thread), perf showed ~45 % of the server's CPU in sched_yield. Found by
// symbol, so nothing is linked and other BLAS libraries are left alone.
void set_blas_threads(int threads) {
  using SetThreads = void (*)(int);
  auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set != nullptr) set(threads);
}

double milliseconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

json config_json(const CaptureConfig& c) {
  return json{{"every", c.every},
              {"layers", c.layers},
              {"heads", c.heads},
              {"max_tokens", c.max_tokens ? json(*c.max_tokens) : json(nullptr)},
              {"seed", c.seed}};
}

// One store and its sink, for one set of layers, heads and budget. Replaced (not changed) when
// those change: a StoreSink's filter and a QkStore's budget are fixed at construction. The
// store is offered requests first_request, first_request + 1, ... (numbers are given under the
// lock that picks the store, so a store's requests are one run of numbers).
struct CaptureState {
  CaptureState(const CaptureConfig& c, int64_t first)
      : store(StoreOptions{c.max_tokens, c.seed}), sink(store, SiteFilter{c.layers, c.heads}),
        first_request(first) {}
  QkStore store;
  StoreSink sink;
  const int64_t first_request;
};

}  // namespace

struct Service::Impl {
  Impl(const std::string& path, ServiceOptions o)
      : options(std::move(o)), identity(options.sequence_prefix, "http-server"),
        module(CaptureModule::load(path)), model_path(path) {}

  ServiceOptions options;
  tools::SequenceIdentity identity;  // request n is sequence identity.sequence(n)
  CaptureModule module;
  std::string model_path;
  std::unique_ptr<text::Tokenizer> tokenizer;
  int64_t vocab = 0;
  int64_t max_tokens = 0;  // tokens per request: option, capped by the position table
  CachedDecoder decoder;   // forward's argument positions (input_ids, attention_mask first)
  bool cached = false;     // forward takes past_k, past_v

  // Capture settings and the store they feed. `config_mutex` guards both pointers' values;
  // a captured forward copies `state` under it while holding a gate pass, so a replacement
  // (which drains the gate) never pulls the store from under a forward.
  mutable std::mutex config_mutex;
  CaptureConfig config;
  std::shared_ptr<CaptureState> state;
  CaptureGate gate;
  std::mutex report_mutex;  // reports are numbered and written one at a time
  int reports = 0;

  // next_request grows under config_mutex (with the choice of store); read freely.
  std::atomic<int64_t> next_request{0}, captured{0};
  std::atomic<bool> stopping{false};
  std::unique_ptr<WorkerPool> pool;

  // ---- Requests.

  std::vector<int64_t> ids_of(const json& request) const {
    const bool has_ids = request.contains("ids"), has_text = request.contains("text");
    if (has_ids == has_text)
      throw HttpError(400, "expected exactly one of \"ids\" (token ids) and \"text\"");
    std::vector<int64_t> ids;
    if (has_ids) {
      ids = get_ids(request, vocab);
    } else {
      if (!tokenizer)
        throw HttpError(400, "\"text\": this server has no tokenizer (start it with "
                             "--tokenizer, --vocab-txt or --spm), send \"ids\"");
      const std::string text = get_string(request, "text").value_or("");
      try {
        ids = tokenizer->encode(text);
      } catch (const Error& e) {
        throw HttpError(400, "text: " + first_line(e.what()));
      }
      for (int64_t id : ids)
        if (id >= vocab)
          throw HttpError(400, fmt::format("text: the tokenizer gave id {}, past the model's {} "
                                           "embedding rows", id, vocab));
    }
    if (ids.empty()) throw HttpError(400, "ids: expected at least one token, got none");
    return ids;
  }

  void check_length(int64_t tokens, const char* what) const {
    if (tokens > max_tokens)
      throw HttpError(413, fmt::format("{}: expected at most {} tokens per request, got {}", what,
                                       max_tokens, tokens));
  }

  // Runs `work(number, capture_state)` on a worker and returns its result; capture_state is
  // null for a request not captured. Refusals (queue full, waited too long, stopping) are 503.
  template <typename Result, typename Work>
  Result on_worker(Served& served, const Work& work) {
    if (stopping) throw HttpError(503, "the server is shutting down");
    std::promise<Result> promise;
    std::future<Result> result = promise.get_future();
    const bool queued = pool->submit([&](WorkerPool::Clock::duration waited, bool expired) {
      try {
        served.queue_ms = milliseconds(waited);
        if (expired)
          throw HttpError(503, fmt::format("waited {:.0f} ms for a worker (limit {} ms)",
                                           served.queue_ms, options.max_wait.count()));
        int64_t number = 0;
        std::shared_ptr<CaptureState> capture;
        {
          // The number and the store together: a store replaced meanwhile gets only later ones.
          std::lock_guard<std::mutex> lock(config_mutex);
          if (next_request >= tools::kMaxRequests)
            throw HttpError(503, fmt::format("this server has numbered 2^{} requests, the most "
                                             "its sequence prefix {} allows; restart it",
                                             tools::kRequestBits, identity.prefix()));
          number = next_request++;
          if (config.every > 0 && number % config.every == 0) capture = state;
        }
        served.request = number;
        served.captured = capture != nullptr;
        promise.set_value(work(number, std::move(capture)));
      } catch (...) {
        promise.set_exception(std::current_exception());
      }
    });
    if (!queued) {
      if (stopping) throw HttpError(503, "the server is shutting down");
      throw HttpError(503, fmt::format("queue full: {} requests wait for {} workers (limit {})",
                                       pool->queued(), options.threads, options.max_queue));
    }
    return result.get();
  }

  std::vector<c10::IValue> inputs(const std::vector<int64_t>& ids) const {
    const auto opts = at::TensorOptions().dtype(at::kLong);
    const int64_t n = static_cast<int64_t>(ids.size());
    std::vector<c10::IValue> in(cached ? 4 : 2);
    in[static_cast<size_t>(decoder.ids)] = at::tensor(ids, opts).view({1, n});
    in[static_cast<size_t>(decoder.mask)] = at::ones({1, n}, opts);
    if (cached) {
      const std::vector<int64_t>& c = options.cache_shape;
      in[static_cast<size_t>(decoder.past_k)] = at::zeros({c[0], 1, c[1], 0, c[2]});
      in[static_cast<size_t>(decoder.past_v)] = at::zeros({c[0], 1, c[1], 0, c[2]});
    }
    return in;
  }

  // One forward of request `number`; captured into `capture` when it is not null.
  c10::IValue run_forward(const std::vector<int64_t>& ids, int64_t number,
                          const std::shared_ptr<CaptureState>& capture) {
    // A request not captured runs the original graph: the instrumented one, even with no
    // session, costs ~2 % of a small model's request (the ops' calls and their profiling).
    if (options.uninstrumented || !capture) return module.forward_original(inputs(ids));
    CaptureGate::Pass pass(gate);
    CaptureSession session(capture->sink);
    c10::IValue out = module.forward(inputs(ids), {identity.sequence(number)});
    ++captured;
    return out;
  }

  // Greedy decoding of `steps` tokens with the cache (qkscope/serving.h, as
  // tools/server_example). A captured request's forwards go to an assembler of its own; the
  // whole sequence reaches the store at the end, under a gate pass.
  at::Tensor run_generate(const std::vector<int64_t>& prompt, int64_t steps, int64_t number,
                          const std::shared_ptr<CaptureState>& capture) {
    if (options.uninstrumented || !capture)  // not captured: the original graph, as run_forward
      return greedy_decode(module, decoder, prompt, steps, DecodeForward::original);
    SequenceAssembler assembler(capture->sink);
    at::Tensor ids;
    {
      CaptureSession session(assembler);
      ids = greedy_decode(module, decoder, prompt, steps, DecodeForward::captured,
                          identity.sequence(number));
    }
    CaptureGate::Pass pass(gate);
    assembler.flush();
    ++captured;
    return ids;
  }

  // ---- Reports.

  // The store's content, left in the store (take, then merge back: the sample stays the one
  // a single store offered every request keeps). Holds the gate only for the copy.
  QkData snapshot(CaptureState& s) {
    return gate.drain([&] {
      QkData data = s.store.take();
      if (data.n_tokens() > 0) s.store.merge(data, QkStore::Counts{0, 0, 2.0});
      return data;
    });
  }

  // The range of requests a store was offered: from its first to `end` (exclusive).
  SequenceRange range_of(const CaptureState& s, int64_t end) const {
    return identity.range(s.first_request, end);
  }

  // Writes the tables of `data` (which `config` captured, from the requests of `range`) to
  // out/report-<n>; its q/k file records `range` as sequences.* metadata.
  json write(const QkData& data, const CaptureConfig& c, bool html, const SequenceRange& range) {
    json r{{"requests", 0},   {"tokens", data.n_tokens()}, {"requests_seen", data.sequences_seen},
           {"tokens_seen", data.tokens_seen}, {"sequences", json::array()},
           {"dir", nullptr},  {"files", json::array()},    {"capture", config_json(c)},
           {"sequence_prefix", identity.prefix()},
           {"sequence_range", {range.begin, range.end}}};
    std::vector<int64_t> sequences = data.sequence;
    sequences.erase(std::unique(sequences.begin(), sequences.end()), sequences.end());
    r["requests"] = sequences.size();
    r["sequences"] = sequences;
    if (data.n_tokens() == 0) return r;  // nothing to write

    MetricOptions metrics;
    metrics.threads = 1;  // the workers keep the other cores
    const CTable table = compute_ctable(data, metrics);
    RunInfo run;
    run.model = model_path;
    run.input = fmt::format("HTTP requests, one in {} captured (qkscope_http_server)", c.every);
    run.max_tokens = c.max_tokens;
    run.seed = c.seed;
    for (const SiteDescription& s : module.sites())
      if (!s.skipped.empty()) run.skipped_sites.push_back({s.site, s.kind, s.module, s.skipped});
    const std::string dir = options.out + "/report-" + std::to_string(++reports);
    std::vector<std::string> files = write_outputs(dir, table, run);
    const std::string qk = dir + "/qk.safetensors";
    // The q/k themselves (capture --qk recomputes these tables), with where they come from:
    // capture --qk merges the files of several servers by these ranges.
    write_qk_file(qk, data, sequence_metadata({range}, data));
    files.push_back(qk);
    if (html) {
      ReportOptions report;
      report.seed = c.seed;
      if (tokenizer) {
        const text::Tokenizer* t = tokenizer.get();
        report.token_text = [t](int64_t id) { return t->id_to_token(id).value_or(""); };
      }
      for (std::string& f : write_report(dir, data, table, run, report)) files.push_back(f);
    }
    r["dir"] = dir;
    r["files"] = files;
    return r;
  }
};

Service::Service(const std::string& model_path, ServiceOptions o) {
  QKSCOPE_CHECK_AS(UsageError, o.threads >= 1, "--threads: expected >= 1, got {}", o.threads);
  QKSCOPE_CHECK_AS(UsageError, o.intra_op_threads >= 0,
                   "--intra-op-threads: expected >= 0, got {}", o.intra_op_threads);
  QKSCOPE_CHECK_AS(UsageError, o.max_request_tokens >= 1,
                   "--max-request-tokens: expected >= 1, got {}", o.max_request_tokens);
  QKSCOPE_CHECK_AS(UsageError, o.max_wait.count() >= 1, "--max-wait-ms: expected >= 1, got {}",
                   o.max_wait.count());
  QKSCOPE_CHECK_AS(UsageError, o.capture.every >= 0, "--sample-every: expected >= 0, got {}",
                   o.capture.every);
  QKSCOPE_CHECK_AS(UsageError, !o.capture.max_tokens || *o.capture.max_tokens >= 1,
                   "--store-tokens: expected >= 1, got {}", o.capture.max_tokens.value_or(0));
  QKSCOPE_CHECK_AS(UsageError, !o.out.empty(), "--out: expected the reports' folder");
  QKSCOPE_CHECK_AS(UsageError,
                   o.cache_shape.empty() ||
                       (o.cache_shape.size() == 3 && o.cache_shape[0] >= 1 &&
                        o.cache_shape[1] >= 1 && o.cache_shape[2] >= 1),
                   "--cache-shape: expected LAYERS,HEADS,HEAD_DIM, each >= 1");
  QKSCOPE_CHECK_AS(UsageError, o.max_new_tokens >= 1, "--max-new-tokens: expected >= 1, got {}",
                   o.max_new_tokens);
  QKSCOPE_CHECK_AS(UsageError,
                   (!o.tokenizer_json.empty()) + (!o.vocab_txt.empty()) + (!o.spm.empty()) <= 1,
                   "--tokenizer, --vocab-txt, --spm: expected at most one");
  // Process-wide: N workers x 1 thread each is the usual server setting.
  if (o.intra_op_threads > 0) at::set_num_threads(o.intra_op_threads);
  QKSCOPE_CHECK_AS(UsageError, o.blas_threads >= 0, "--blas-threads: expected >= 0, got {}",
                   o.blas_threads);
  impl_ = std::make_unique<Impl>(model_path, std::move(o));
  // After load: loading sizes OpenBLAS's pool (qkscope's runtime choice); the server's is this.
  if (impl_->options.blas_threads > 0) set_blas_threads(impl_->options.blas_threads);
  Impl& m = *impl_;
  const ServiceOptions& opt = m.options;

  const std::vector<std::string>& args = m.module.argument_names();
  auto index = [&](const char* name) {
    return static_cast<int>(std::find(args.begin(), args.end(), name) - args.begin());
  };
  m.decoder.ids = index("input_ids");
  m.decoder.mask = index("attention_mask");
  m.decoder.cache_shape = opt.cache_shape;
  m.cached = !opt.cache_shape.empty();
  if (m.cached) {
    m.decoder.past_k = index("past_k");
    m.decoder.past_v = index("past_v");
    QKSCOPE_CHECK(args.size() == 4 && m.decoder.ids < 4 && m.decoder.mask < 4 &&
                      m.decoder.past_k < 4 && m.decoder.past_v < 4,
                  "model '{}': --cache-shape expects forward(input_ids, attention_mask, past_k, "
                  "past_v) in any order, got {}", model_path, m.module.forward_schema());
  } else {
    QKSCOPE_CHECK(args.size() == 2 && m.decoder.ids < 2 && m.decoder.mask < 2,
                  "model '{}': expected forward(input_ids, attention_mask) in any order (or "
                  "give --cache-shape for a cached decoder), got {}",
                  model_path, m.module.forward_schema());
  }

  const torch::jit::Module& original = m.module.original();
  const std::optional<int64_t> vocab = opt.vocab ? opt.vocab : vocabulary_size(original);
  QKSCOPE_CHECK_AS(UsageError, vocab.has_value(),
                   "--vocab: no token embedding found in '{}', give the vocabulary size",
                   model_path);
  QKSCOPE_CHECK_AS(UsageError, *vocab >= 1, "--vocab: expected >= 1, got {}", *vocab);
  m.vocab = *vocab;
  m.max_tokens = opt.max_request_tokens;
  if (const auto positions = position_count(original))
    m.max_tokens = std::min(m.max_tokens, *positions);

  if (!opt.tokenizer_json.empty()) m.tokenizer = text::load_tokenizer_json(opt.tokenizer_json);
  if (!opt.vocab_txt.empty()) m.tokenizer = text::load_bert_vocab(opt.vocab_txt, !opt.cased);
  if (!opt.spm.empty()) m.tokenizer = text::load_sentencepiece(opt.spm);

  // Warm-up: TorchScript optimises a graph over its first runs; do them before the first
  // client. A session whose sink wants no head also fills in every site's head count, so that
  // /v1/capture can check the heads it is given.
  {
    CallbackSink none([](const SiteDescription&, const QkBatch&) {},
                      [](const SiteDescription&) { return std::vector<int>{}; });
    const std::vector<int64_t> ids(static_cast<size_t>(std::min<int64_t>(m.max_tokens, 8)), 0);
    for (int i = 0; i < 3; ++i) {
      CaptureSession session(none);
      m.module.forward(m.inputs(ids));
      m.module.forward_original(m.inputs(ids));
    }
  }
  m.config = opt.capture;
  if (!opt.uninstrumented) {
    // The same checks as a later /v1/capture.
    capture(json{{"layers", opt.capture.layers}, {"heads", opt.capture.heads}});
    m.state = std::make_shared<CaptureState>(m.config, 0);
  } else {
    QKSCOPE_CHECK_AS(UsageError, opt.capture.every == 0,
                     "--sample-every: the uninstrumented model cannot capture");
  }
  m.pool = std::make_unique<WorkerPool>(opt.threads, opt.max_queue,
                                        std::chrono::duration_cast<WorkerPool::Clock::duration>(
                                            opt.max_wait));
}

Service::~Service() {
  if (impl_) shutdown();
}

void Service::shutdown() {
  impl_->stopping = true;
  impl_->pool->shutdown();
}

json Service::forward(const json& request, Served& served) {
  Impl& m = *impl_;
  check_keys(request, {"ids", "text", "return"});
  const std::string ret = get_string(request, "return").value_or("summary");
  if (ret != "summary" && ret != "tensors")
    throw HttpError(400, fmt::format("return: expected \"summary\" or \"tensors\", got \"{}\"",
                                     ret));
  const std::vector<int64_t> ids = m.ids_of(request);
  m.check_length(static_cast<int64_t>(ids.size()), "ids");
  served.tokens = static_cast<int64_t>(ids.size());
  const c10::IValue out = m.on_worker<c10::IValue>(
      served, [&](int64_t number, std::shared_ptr<CaptureState> capture) {
        return m.run_forward(ids, number, capture);
      });
  // The conversion runs on this (HTTP) thread: the worker is free for the next forward.
  return json{{"request", served.request},
              {"sequence", m.identity.sequence(served.request)},
              {"captured", served.captured},
              {"tokens", served.tokens},
              {"outputs", ret == "tensors" ? output_tensors(out) : output_summary(out)}};
}

json Service::generate(const json& request, Served& served) {
  Impl& m = *impl_;
  if (!m.cached)
    throw HttpError(404, "/v1/generate: this server was started without --cache-shape (it "
                         "serves a model without a key/value cache)");
  check_keys(request, {"ids", "text", "max_new_tokens"});
  const int64_t steps =
      get_int(request, "max_new_tokens", 1, m.options.max_new_tokens).value_or(16);
  const std::vector<int64_t> ids = m.ids_of(request);
  // The last generated token is never fed: the model sees prompt + steps - 1 positions.
  m.check_length(static_cast<int64_t>(ids.size()) + steps - 1, "ids + max_new_tokens - 1");
  served.tokens = static_cast<int64_t>(ids.size()) + steps - 1;
  const at::Tensor out = m.on_worker<at::Tensor>(
      served, [&](int64_t number, std::shared_ptr<CaptureState> capture) {
        return m.run_generate(ids, steps, number, capture);
      });
  const at::Tensor flat = out.reshape({-1}).contiguous();
  std::vector<int64_t> all(flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + flat.numel());
  return json{{"request", served.request},
              {"sequence", m.identity.sequence(served.request)},
              {"captured", served.captured},
              {"tokens", served.tokens},
              {"ids", all},
              {"new_ids", std::vector<int64_t>(all.begin() + static_cast<long>(ids.size()),
                                               all.end())}};
}

json Service::capture(const json& request) {
  Impl& m = *impl_;
  if (m.options.uninstrumented)
    throw HttpError(409, "capture: this server runs the uninstrumented model (--uninstrumented)");
  check_keys(request, {"every", "layers", "heads", "max_tokens", "seed"});
  std::lock_guard<std::mutex> report_lock(m.report_mutex);  // no report while the store changes
  CaptureConfig next;
  {
    std::lock_guard<std::mutex> lock(m.config_mutex);
    next = m.config;
  }
  if (auto v = get_int(request, "every", 0, int64_t{1} << 40)) next.every = *v;
  const std::vector<SiteDescription> sites = m.module.sites();
  int n_sites = 0, max_heads = 0;
  for (const SiteDescription& s : sites) {
    if (!s.skipped.empty()) continue;
    ++n_sites;
    max_heads = std::max(max_heads, s.n_heads);
  }
  if (auto v = get_int_list(request, "layers", std::max(n_sites - 1, 0))) next.layers = *v;
  if (auto v = get_int_list(request, "heads", std::max(max_heads - 1, 0))) next.heads = *v;
  // Every kept site must have the heads asked for (sites may differ in head count).
  for (const SiteDescription& s : sites) {
    const bool kept = s.skipped.empty() && s.layer >= 0 &&
                      (next.layers.empty() || std::find(next.layers.begin(), next.layers.end(),
                                                        s.layer) != next.layers.end());
    for (int h : next.heads)
      if (kept && s.n_heads >= 0 && h >= s.n_heads)
        throw HttpError(400, fmt::format("heads: layer {} has {} heads, got head {}", s.layer,
                                         s.n_heads, h));
  }
  if (request.contains("max_tokens")) {
    if (request["max_tokens"].is_null())
      next.max_tokens.reset();
    else
      next.max_tokens = get_int(request, "max_tokens", 1, int64_t{1} << 40);
  }
  if (auto v = get_int(request, "seed", 0, std::numeric_limits<int64_t>::max()))
    next.seed = static_cast<uint64_t>(*v);

  json response;
  if (m.state) {  // not yet at start-up
    std::sort(next.layers.begin(), next.layers.end());
    const bool new_store = next.layers != m.config.layers || next.heads != m.config.heads ||
                           next.max_tokens != m.config.max_tokens || next.seed != m.config.seed;
    if (new_store) {
      // The store is replaced, then the old one's tables are written (nothing captured is
      // dropped). Captured requests hold the store they were sampled into until they are done
      // (a generation's tokens reach it only at its end): the old store is taken once no
      // request holds it any more, and none can take it again (m.state no longer points to it).
      std::shared_ptr<CaptureState> old;
      const CaptureConfig old_config = m.config;
      {
        std::lock_guard<std::mutex> lock(m.config_mutex);
        old = m.state;
        m.state = std::make_shared<CaptureState>(next, m.next_request.load());
        m.config = next;
      }
      while (old.use_count() > 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      QkData data = old->store.take();
      if (data.n_tokens() > 0)
        response["report"] = m.write(data, old_config, /*html=*/false,
                                     m.range_of(*old, m.state->first_request));
    } else {
      std::lock_guard<std::mutex> lock(m.config_mutex);
      m.config.every = next.every;
    }
  } else {
    std::sort(next.layers.begin(), next.layers.end());
    m.config = next;
  }
  response["capture"] = config_json(m.config);
  return response;
}

json Service::report(const json& request) {
  Impl& m = *impl_;
  check_keys(request, {"html"});
  const bool html = get_bool(request, "html").value_or(false);
  if (m.options.uninstrumented)
    throw HttpError(409, "report: this server runs the uninstrumented model (--uninstrumented)");
  std::lock_guard<std::mutex> report_lock(m.report_mutex);
  std::shared_ptr<CaptureState> state;
  CaptureConfig config;
  int64_t end = 0;
  {
    std::lock_guard<std::mutex> lock(m.config_mutex);
    state = m.state;
    config = m.config;
    end = m.next_request;
  }
  const QkData data = m.snapshot(*state);
  return m.write(data, config, html, m.range_of(*state, end));
}

json Service::health() const {
  const Impl& m = *impl_;
  CaptureConfig config;
  {
    std::lock_guard<std::mutex> lock(m.config_mutex);
    config = m.config;
  }
  return json{{"status", m.stopping ? "stopping" : "ok"},
              {"model", m.model_path},
              {"instrumented", !m.options.uninstrumented},
              {"workers", m.options.threads},
              {"queue", {{"waiting", m.pool->queued()},
                         {"running", m.pool->running()},
                         {"limit", m.options.max_queue}}},
              {"max_request_tokens", m.max_tokens},
              {"vocab", m.vocab},
              {"generate", m.cached},
              {"text", m.tokenizer != nullptr},
              {"served", m.next_request.load()},
              {"captured", m.captured.load()},
              {"sequence_prefix", m.identity.prefix()},
              {"sequence_source", m.identity.source()},
              {"capture", config_json(config)}};
}

const tools::SequenceIdentity& Service::identity() const { return impl_->identity; }

}  // namespace qkscope::http
