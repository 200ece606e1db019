// qkscope_server_example: an inference server in miniature, with qkscope embedded. Worker
// threads serve synthetic forward requests on one model; one request in K is captured; the
// per-head table is written every M requests and at exit (--generate N: each request generates
// N tokens with a key/value cache, captured whole). The serving logic is in server.cpp;
// this file parses, runs and reports. Errors are one line on stderr; exit status 0 success,
// 2 usage error, 1 anything else (as tools/capture: tools/common/cli_main.h).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <iostream>
#include <optional>
#include <string>

#include "common/cli_main.h"
#include "common/sequence_identity.h"
#include "qkscope/error.h"
#include "server.h"

namespace {

constexpr const char* kName = "qkscope_server_example";

struct Options {
  std::string model;
  std::string out;
  qkscope::server::ServerOptions server;
  int64_t requests = 200;
  int max_length = 32;
  std::optional<int64_t> vocab;
  uint64_t seed = 0;
};

// Parses argv; nullopt when --help was printed.
std::optional<Options> parse(int argc, char** argv) {
  Options o;
  CLI::App app{
      "qkscope_server_example: N worker threads serve synthetic forward requests (random ids,\n"
      "random lengths, right padding) on one model; one request in K is captured, and the\n"
      "per-head table (heads.csv, scales.csv, ctable.json, heatmaps.svg) of the captured\n"
      "requests is written to OUT/report-1, OUT/report-2, ... every M requests and at exit.\n"
      "Exit status: 0 success, 2 usage error, 1 any other failure.",
      kName};
  app.get_formatter()->column_width(30);
  app.add_option("--model", o.model, "TorchScript model with forward(input_ids, attention_mask)")
      ->type_name("FILE")->required();
  app.add_option("--out", o.out, "folder of the reports")->type_name("DIR")->required();
  app.add_option("--threads", o.server.threads, "worker threads serving requests")
      ->type_name("N")->default_str("4");
  app.add_option("--requests", o.requests, "requests to serve")->type_name("R")->default_str("200");
  app.add_option("--sample-every", o.server.sample_every, "capture request n when n % K == 0")
      ->type_name("K")->default_str("10");
  app.add_option("--report-every", o.server.report_every,
                 "also write a report every M served requests (0: only at exit)")
      ->type_name("M")->default_str("0");
  app.add_option("--max-length", o.max_length, "longest request in tokens")
      ->type_name("N")->default_str("32");
  app.add_option("--vocab", o.vocab, "token ids are drawn from 1..V-1 (default: the model's)")
      ->type_name("V");
  app.add_option("--intra-op-threads", o.server.intra_op_threads,
                 "LibTorch threads per forward (0: LibTorch's default)")
      ->type_name("N")->default_str("1");
  app.add_option("--generate", o.server.generate,
                 "generation mode: each request is a prompt from which N tokens are generated\n"
                 "greedily with a key/value cache, forward(input_ids, attention_mask, past_k,\n"
                 "past_v) -> (logits, present_k, present_v); a sampled request is captured whole")
      ->type_name("N")->default_str("0");
  app.add_option("--cache-shape", o.server.cache_shape,
                 "with --generate: the past's layers, heads and head_dim (e.g. 2,4,8)")
      ->type_name("L,H,D")->delimiter(',')->expected(3);
  app.add_option("--seed", o.seed, "seed of the synthetic requests")->type_name("N")->default_str("0");
  app.add_option("--sequence-prefix", o.server.sequence_prefix,
                 "request n is captured as sequence P << 40 | n, P in 0..8191 (default:\n"
                 "random), so that the reports' qk.safetensors of several processes merge\n"
                 "(capture --qk a b); give each process its own P to reproduce a run")
      ->type_name("P");
  if (!qkscope::tools::parse_or_help(app, argc, argv)) return std::nullopt;
  QKSCOPE_CHECK_AS(qkscope::UsageError, o.requests >= 0, "--requests: expected >= 0, got {}",
                   o.requests);
  QKSCOPE_CHECK_AS(qkscope::UsageError, o.max_length >= 1, "--max-length: expected >= 1, got {}",
                   o.max_length);
  QKSCOPE_CHECK_AS(qkscope::UsageError, !o.vocab || *o.vocab >= 2, "--vocab: expected >= 2, got {}",
                   *o.vocab);
  o.server.out = o.out;
  return o;
}

void print_report(const qkscope::server::ReportSummary& r) {
  if (r.number == 0) return;
  std::cout << fmt::format("report {}: {} requests, {} tokens -> {}\n", r.number,
                           r.sequences.size(), r.tokens, r.dir)
            << std::flush;
}

int run(const Options& o) {
  // Start-up: load, instrument and validate the model once. Everything after this is shared.
  qkscope::server::Server server(o.model, o.server);
  std::cout << kName << ": " << qkscope::tools::describe(server.identity()) << std::endl;
  const std::optional<int64_t> vocab = o.vocab ? o.vocab : server.vocab_size();
  QKSCOPE_CHECK_AS(qkscope::UsageError, vocab.has_value(),
                   "--vocab: no token embedding found in '{}', give the vocabulary size", o.model);
  if (const auto positions = server.max_positions())
    QKSCOPE_CHECK_AS(qkscope::UsageError,
                     o.max_length + std::max<int64_t>(o.server.generate - 1, 0) <= *positions,
                     "--max-length{}: '{}' has {} positions, got {}",
                     o.server.generate > 0 ? " + --generate - 1" : "", o.model, *positions,
                     o.max_length + std::max<int64_t>(o.server.generate - 1, 0));

  const auto requests = qkscope::server::make_requests(o.requests, o.max_length, *vocab, o.seed);
  const qkscope::server::RunStats stats = server.run(requests, {}, print_report);
  // At exit (a real server: on shutdown, or on an admin command): what is left since the
  // last report.
  print_report(server.report());
  std::cout << fmt::format(
      "served {} requests{} ({} tokens) on {} threads in {:.3f} s ({:.0f} requests/s); captured "
      "{} (one in {})\n",
      stats.requests,
      o.server.generate > 0 ? fmt::format(", {} new tokens each", o.server.generate) : "",
      stats.tokens, o.server.threads, stats.seconds,
      stats.seconds > 0 ? stats.requests / stats.seconds : 0.0, stats.captured,
      o.server.sample_every);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return qkscope::tools::cli_main(kName, argc, argv, parse, run); }
