// The inference service behind the HTTP routes: one wrapped TorchScript model served by a pool
// of worker threads, sampled capture into one store, reports written on demand. Torch-free
// header (JSON in and out), so that the HTTP layer and main() do not compile LibTorch.
//
// The rules of tools/server_example/server.h apply, as it applies them:
//   1. capture is per request: the worker serving a sampled request opens a CaptureSession for
//      that one forward; every other forward runs with none (one thread_local check per site);
//   2. one CaptureModule, one StoreSink, one QkStore for all workers;
//   3. taking the store never overlaps a captured forward (a gate lets captured forwards in
//      together, a take in alone; uncaptured forwards never touch it).
// Requests are numbered 0, 1, 2, ... in the order workers start them; with capture on, request
// n is captured when n % every == 0, under the sequence index prefix << 40 | n, the prefix
// being this process's (tools/common/sequence_identity.h). The q/k file of a report records the
// requests its store was offered as one sequences.* range (core/include/qkscope/qk_merge.h), so
// that the files of several server processes merge with capture --qk and those of one process
// (or of two that share a prefix) are refused as overlapping.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/sequence_identity.h"

namespace qkscope::http {

// A failure to report to the client: an HTTP status and a one-line reason.
class HttpError : public std::runtime_error {
 public:
  HttpError(int status, const std::string& reason) : std::runtime_error(reason), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// What is captured. Changing layers, heads, max_tokens or seed starts a new store (the old one's
// tables are written first when it holds anything); changing `every` keeps it.
struct CaptureConfig {
  int64_t every = 0;                  // capture request n when n % every == 0; 0: off
  std::vector<int> layers;            // site numbers kept; empty: all
  std::vector<int> heads;             // model heads kept at every kept site; empty: all
  std::optional<int64_t> max_tokens;  // the store's token budget (seeded sample of requests)
  uint64_t seed = 0;                  // seed of that sample
};

struct ServiceOptions {
  int threads = 2;                 // inference workers, >= 1
  int intra_op_threads = 1;        // LibTorch threads per forward; 0: LibTorch's default
  int blas_threads = 1;            // OpenBLAS threads per GEMM; 0: leave qkscope's choice
  size_t max_queue = 64;           // requests waiting for a worker beyond those running
  std::chrono::milliseconds max_wait{10000};  // longest wait in the queue (then 503)
  int64_t max_request_tokens = 512;  // tokens per request (capped by the model's positions)
  bool uninstrumented = false;     // serve the original model; capture unavailable
  std::string out;                 // reports go to out/report-1, out/report-2, ...
  CaptureConfig capture;           // at start
  std::optional<int64_t> vocab;    // ids must be in 0..vocab-1 (default: the model's table)
  // Tokenizer for "text" requests (at most one of the three).
  std::string tokenizer_json, vocab_txt, spm;
  bool cased = false;              // vocab.txt: do not lowercase
  // /v1/generate (causal models with a key/value cache, as tools/server_example --generate):
  // {layers, heads, head_dim} of the cache; empty: /v1/generate is not served.
  std::vector<int64_t> cache_shape;
  int64_t max_new_tokens = 64;     // per /v1/generate request
  // --sequence-prefix: the prefix of this process's sequence indices, 0..8191; nullopt: random.
  std::optional<int64_t> sequence_prefix;
};

// What one served request took, for the latency log.
struct Served {
  int64_t request = -1;  // its number; -1 when it was refused before a worker took it
  bool captured = false;
  int64_t tokens = 0;    // tokens fed to the model
  double queue_ms = 0;   // time waiting for a worker
};

class Service {
 public:
  // Loads and instruments the model (the original too, with `uninstrumented`), checks its
  // forward (input_ids, attention_mask; with cache_shape also past_k, past_v), loads the
  // tokenizer, runs two warm-up forwards and starts the workers. Throws qkscope::Error
  // (UsageError for bad options).
  Service(const std::string& model_path, ServiceOptions options);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // POST /v1/forward: {"ids": [..]} or {"text": ".."}, "return": "summary" (default) |
  // "tensors". Blocks until a worker served it. Throws HttpError (400 bad request, 413 too many
  // tokens, 503 queue full / waited too long / shutting down / 2^40 requests numbered).
  nlohmann::json forward(const nlohmann::json& request, Served& served);
  // POST /v1/generate: {"ids" | "text", "max_new_tokens": N}: greedy decoding with the cache;
  // returns the generated ids. Same errors; 404 when the server has no cache shape.
  nlohmann::json generate(const nlohmann::json& request, Served& served);
  // POST /v1/capture: changes the capture settings given (every, layers, heads, max_tokens,
  // seed); an empty object only reads them. Returns the settings and the store's counts.
  nlohmann::json capture(const nlohmann::json& request);
  // POST /v1/report: {"html": bool} writes the tables of everything in the store (cumulative
  // since the store was started) to out/report-<n>; returns the paths and counts.
  nlohmann::json report(const nlohmann::json& request);
  // GET /v1/health.
  nlohmann::json health() const;
  // This process's sequence prefix and source.
  const tools::SequenceIdentity& identity() const;

  // Stops taking requests, lets the queued and running ones finish, joins the workers.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qkscope::http
