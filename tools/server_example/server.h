// How an inference server embeds qkscope: N worker threads serve forward requests on ONE
// wrapped model, one request in K is captured into a shared store, and the per-head table is
// written on demand. Torch-free header (the model's output is only forward-declared), so the
// program's main() and the server's other translation units do not compile LibTorch.
//
// The three rules a server needs, all applied in server.cpp:
//   1. Capture is per request, not per thread: the worker that serves a sampled request opens a
//      CaptureSession for the duration of that one forward. Every other forward runs with no
//      session, and then the capture op inside the model is one thread_local check: no copy,
//      no lock, no allocation; the output is bit-identical either way.
//   2. One CaptureModule, one StoreSink, one QkStore for all workers: forward(), the sink and
//      QkStore::add() are thread-safe.
//   3. QkStore::take() must not overlap a captured forward (it would see sequences that reached
//      some layers only). A small gate lets captured forwards in together and a report in alone;
//      uncaptured forwards never touch it.
// Generation mode (ServerOptions::generate > 0): each request is a prompt from which a causal
// model with a key/value cache generates N tokens greedily, one forward per token. A sampled
// request's forwards capture into a SequenceAssembler of its own (the store needs each sequence
// whole), which hands the whole generated sequence to the shared StoreSink at the end; only that
// hand-over holds the gate.
// Sequence identity (issue 14): request n is captured as sequence prefix << 40 | n, the prefix
// being the server's (ServerOptions::sequence_prefix, else random: tools/common/
// sequence_identity.h); each report's qk.safetensors records the requests it holds as
// sequences.* ranges, so that the files of several server processes merge with capture --qk.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/sequence_identity.h"
#include "qkscope/qk_data.h"

namespace c10 {
struct IValue;  // what forward returns (a tensor or a tuple); complete in <torch/script.h>
}

namespace qkscope {
class CaptureModule;
}

namespace qkscope::server {

// One synthetic request: one sequence of `length` tokens, right-padded to `padded_length`
// (servers pad to a few shape buckets; here the next multiple of 8). Fed to the model as
// input_ids and attention_mask, both [1, padded_length].
struct Request {
  int64_t number = 0;             // arrival order 0, 1, ...; sequence index prefix << 40 | number
  int64_t length = 0;             // valid tokens, >= 1
  int64_t padded_length = 0;      // >= length
  std::vector<int64_t> input_ids;       // [padded_length]: ids in 1..vocab-1, then 0 (padding)
  std::vector<int64_t> attention_mask;  // [padded_length]: `length` ones, then zeros
};

// `count` requests with lengths uniform in 1..max_length and ids uniform in 1..vocab-1, from
// a fixed seed: the same arguments give the same requests. UsageError past 2^40 requests (the
// request bits of a sequence index).
std::vector<Request> make_requests(int64_t count, int max_length, int64_t vocab, uint64_t seed);

struct ServerOptions {
  int threads = 4;             // worker threads serving requests, >= 1
  int64_t sample_every = 10;   // capture request n when n % sample_every == 0; >= 1
  int64_t report_every = 0;    // while run() serves, write a report every M served requests
                               // (on a background thread); 0: only when report() is called
  std::string out;             // reports go to out/report-1, out/report-2, ...
  int intra_op_threads = 1;    // LibTorch threads inside one forward (process-wide setting);
                               // 0 leaves LibTorch's default (all cores for every forward)
  // Generation mode: > 0 generates this many tokens per request (greedy) with a model
  // forward(input_ids [B, T], attention_mask [B, P+T], past_k, past_v) ->
  // (logits [B, T, V], present_k, present_v), past/present [layers, B, heads, P, head_dim]
  // (models/decoder_models.py's gpt2_cache). The prompt is the request's `length` real tokens
  // (batch 1, no padding); the last generated token is never fed, so a captured request holds
  // length + generate - 1 tokens.
  int64_t generate = 0;
  // Generation mode: {layers, heads, head_dim} of the cache, for the empty past of the prompt.
  std::vector<int64_t> cache_shape;
  // Prefix of the sequence indices, 0..8191 (--sequence-prefix); nullopt: a random one.
  std::optional<int64_t> sequence_prefix;
};

// What one report took out of the store.
struct ReportSummary {
  int number = 0;                   // n of out/report-n; 0 when nothing was captured (no files)
  std::string dir;                  // out/report-n; empty when nothing was written
  int64_t tokens = 0;               // tokens captured since the previous report
  std::vector<int64_t> sequences;   // their sequence indices (prefix << 40 | request number),
                                    // ascending
};

struct RunStats {
  int64_t requests = 0;        // requests served
  int64_t captured = 0;        // of which captured
  int64_t tokens = 0;          // valid tokens served (fed to the model: with generation, the
                               // prompt and all generated tokens but the last)
  double seconds = 0;          // wall time of run()
};

// Called by the worker that served `request`, right after its forward, with the model's output
// and whether the request was captured. Runs on several threads at once: must be thread-safe.
// Generation mode: `output` is the generated sequence, int64 [1, length + generate], the prompt
// included.
using ResponseFn =
    std::function<void(const Request& request, const c10::IValue& output, bool captured)>;
// Called with each periodic report, from the reporting thread.
using ReportFn = std::function<void(const ReportSummary&)>;

class Server {
 public:
  // Loads and instruments `model_path` (CaptureModule::load) and checks that its forward takes
  // exactly (input_ids, attention_mask), or in generation mode (input_ids, attention_mask,
  // past_k, past_v). Throws qkscope::Error (UsageError for bad options).
  Server(const std::string& model_path, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves every request on options.threads workers (requests are taken in order, as from a
  // queue) and returns when all are done. A worker never lets an exception escape: the first
  // error stops the run and is rethrown here. Not reentrant: one run() at a time.
  RunStats run(const std::vector<Request>& requests, const ResponseFn& on_response = {},
               const ReportFn& on_report = {});

  // Takes everything captured since the last take or report (QkStore::take()), waiting for
  // captured forwards in flight to finish; sampled forwards that arrive meanwhile wait for it.
  // Thread-safe: may run while run() is serving.
  QkData take_captured();

  // take_captured(), then compute_ctable (on this thread alone, so that the workers keep the
  // other cores) and write_outputs into out/report-<n>, with the q/k as qk.safetensors (its
  // sequences.* ranges: the runs of sampled requests it holds, so that the reports of one run
  // and those of other processes all merge). Writes nothing when nothing was captured.
  // Thread-safe.
  ReportSummary report();

  // This server's sequence prefix and the source its q/k files name.
  const tools::SequenceIdentity& identity() const;

  // Rows of the model's token embedding table (the vocabulary), when it has a recognisable one.
  std::optional<int64_t> vocab_size() const;
  // Rows of its position embedding table (the longest sequence), when it has one.
  std::optional<int64_t> max_positions() const;

  const CaptureModule& module() const;
  const ServerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qkscope::server
