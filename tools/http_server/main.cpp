// qkscope_http_server: an HTTP inference server over one TorchScript model with sampled live
// capture (README.md here). This file parses options, binds, serves, and shuts down on SIGTERM
// or SIGINT: the listener closes, requests in flight finish, then the store's tables are
// written. Errors before serving are one line on stderr; exit status 0 success (also after a
// signal), 2 usage error, 1 anything else (as tools/capture: tools/common/cli_main.h).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <httplib.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/cli_main.h"
#include "common/sequence_identity.h"
#include "http_api.h"
#include "qkscope/error.h"
#include "service.h"

namespace {

constexpr const char* kName = "qkscope_http_server";

int g_signal_pipe[2] = {-1, -1};

void on_signal(int) {
  const char byte = 1;
  (void)!::write(g_signal_pipe[1], &byte, 1);
}

struct Options {
  std::string model, host = "127.0.0.1", latency_log;
  int port = 8080;
  bool allow_remote = false;
  int http_threads = 0;
  size_t max_body_bytes = 1 << 20;
  int read_timeout_s = 5, write_timeout_s = 5;
  int64_t max_wait_ms = 10000;
  qkscope::http::ServiceOptions service;
};

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::optional<Options> parse(int argc, char** argv) {
  Options o;
  qkscope::http::ServiceOptions& s = o.service;
  CLI::App app{
      "qkscope_http_server: serves one TorchScript model over HTTP from a pool of worker\n"
      "threads and captures one request in K into a q/k store; POST /v1/report writes the\n"
      "per-head tables (heads.csv, scales.csv, ctable.json, heatmaps.svg, qk.safetensors) to\n"
      "OUT/report-<n>. Endpoints: GET /v1/health, POST /v1/forward, /v1/generate (with\n"
      "--cache-shape), /v1/capture, /v1/report (README.md). SIGTERM/SIGINT: requests in\n"
      "flight finish, the tables are written, exit 0.",
      kName};
  app.get_formatter()->column_width(32);
  app.add_option("--model", o.model, "TorchScript model, forward(input_ids, attention_mask)")
      ->type_name("FILE")->required()->group("Model");
  app.add_option("--out", s.out, "folder of the reports")->type_name("DIR")->required()
      ->group("Model");
  app.add_option("--vocab", s.vocab, "ids must be below V (default: the model's embedding rows)")
      ->type_name("V")->group("Model");
  app.add_option("--tokenizer", s.tokenizer_json, "tokenizer.json for \"text\" requests")
      ->type_name("FILE")->group("Model");
  app.add_option("--vocab-txt", s.vocab_txt, "BERT vocab.txt for \"text\" requests")
      ->type_name("FILE")->group("Model");
  app.add_flag("--cased", s.cased, "with --vocab-txt: do not lowercase")->group("Model");
  app.add_option("--spm", s.spm, "SentencePiece model for \"text\" requests")
      ->type_name("FILE")->group("Model");
  app.add_option("--cache-shape", s.cache_shape,
                 "serve /v1/generate: the model is a cached decoder, forward(input_ids,\n"
                 "attention_mask, past_k, past_v) -> (logits, present_k, present_v), past\n"
                 "[layers, 1, heads, P, head_dim]")
      ->type_name("L,H,D")->delimiter(',')->expected(3)->group("Model");
  app.add_flag("--uninstrumented", s.uninstrumented,
               "serve the original model (no capture ops; for comparisons)")->group("Model");

  app.add_option("--host", o.host, "address to listen on (other than loopback: --allow-remote)")
      ->type_name("ADDR")->default_str("127.0.0.1")->group("Listen");
  app.add_option("--port", o.port, "port; 0 picks a free one (printed at start)")
      ->type_name("N")->default_str("8080")->group("Listen");
  app.add_flag("--allow-remote", o.allow_remote, "allow a --host other than loopback")
      ->group("Listen");

  app.add_option("--threads", s.threads, "inference workers")->type_name("N")->default_str("2")
      ->group("Bounds");
  app.add_option("--intra-op-threads", s.intra_op_threads,
                 "LibTorch threads per forward (0: LibTorch's default)")
      ->type_name("N")->default_str("1")->group("Bounds");
  app.add_option("--blas-threads", s.blas_threads,
                 "OpenBLAS threads per GEMM (0: qkscope's choice; the workers are the\n"
                 "parallelism, a BLAS pool on top spins against them)")
      ->type_name("N")->default_str("1")->group("Bounds");
  app.add_option("--http-threads", o.http_threads,
                 "connection threads (default: threads + max-queue + 4)")
      ->type_name("N")->group("Bounds");
  app.add_option("--max-queue", s.max_queue, "requests waiting for a worker; more: 503")
      ->type_name("N")->default_str("64")->group("Bounds");
  app.add_option("--max-wait-ms", o.max_wait_ms, "longest wait for a worker; longer: 503")
      ->type_name("MS")->default_str("10000")->group("Bounds");
  app.add_option("--max-body-bytes", o.max_body_bytes, "request body limit; larger: 413")
      ->type_name("N")->default_str("1048576")->group("Bounds");
  app.add_option("--max-request-tokens", s.max_request_tokens,
                 "tokens per request (capped by the model's positions); more: 413")
      ->type_name("N")->default_str("512")->group("Bounds");
  app.add_option("--max-new-tokens", s.max_new_tokens, "largest max_new_tokens of /v1/generate")
      ->type_name("N")->default_str("64")->group("Bounds");
  app.add_option("--read-timeout", o.read_timeout_s,
                 "seconds to wait for a client's bytes, also an idle connection's\n"
                 "next request; a client that stalls longer is cut off")
      ->type_name("S")->default_str("5")->group("Bounds");
  app.add_option("--write-timeout", o.write_timeout_s, "seconds to wait for a client to read")
      ->type_name("S")->default_str("5")->group("Bounds");

  app.add_option("--sample-every", s.capture.every,
                 "capture request n when n % K == 0 (0: off; POST /v1/capture changes it)")
      ->type_name("K")->default_str("0")->group("Capture");
  app.add_option("--layers", s.capture.layers, "sites kept (default: all)")
      ->type_name("L,...")->delimiter(',')->group("Capture");
  app.add_option("--heads", s.capture.heads, "heads kept at every kept site (default: all)")
      ->type_name("H,...")->delimiter(',')->group("Capture");
  app.add_option("--store-tokens", s.capture.max_tokens,
                 "the store's token budget: a seeded sample of whole requests (default: all)")
      ->type_name("N")->group("Capture");
  app.add_option("--seed", s.capture.seed, "seed of that sample")->type_name("N")
      ->default_str("0")->group("Capture");
  app.add_option("--sequence-prefix", s.sequence_prefix,
                 "request n is captured as sequence P << 40 | n, P in 0..8191 (default: random),\n"
                 "so that the q/k files of several servers merge (capture --qk a b); give\n"
                 "each process its own P to reproduce a run or to rule out a collision")
      ->type_name("P")->group("Capture");
  app.add_option("--latency-log", o.latency_log,
                 "write one line per request: endpoint status request captured tokens\n"
                 "queue_ms total_ms")
      ->type_name("FILE")->group("Capture");
  if (!qkscope::tools::parse_or_help(app, argc, argv)) return std::nullopt;
  QKSCOPE_CHECK_AS(qkscope::UsageError, o.allow_remote || is_loopback(o.host),
                   "--host {}: not a loopback address; add --allow-remote to listen there",
                   o.host);
  QKSCOPE_CHECK_AS(qkscope::UsageError, o.port >= 0 && o.port <= 65535,
                   "--port: expected 0..65535, got {}", o.port);
  QKSCOPE_CHECK_AS(qkscope::UsageError, o.max_wait_ms >= 1, "--max-wait-ms: expected >= 1, got {}",
                   o.max_wait_ms);
  QKSCOPE_CHECK_AS(qkscope::UsageError, o.read_timeout_s >= 1 && o.write_timeout_s >= 1,
                   "--read-timeout, --write-timeout: expected >= 1 s");
  QKSCOPE_CHECK_AS(qkscope::UsageError, o.http_threads >= 0,
                   "--http-threads: expected >= 1, got {}", o.http_threads);
  s.max_wait = std::chrono::milliseconds(o.max_wait_ms);
  if (o.http_threads == 0)
    o.http_threads = s.threads + static_cast<int>(std::min<size_t>(s.max_queue, 1000)) + 4;
  return o;
}

int run(const Options& o) {
  // SIGTERM and SIGINT wake one thread that stops the listener. Threads that libraries started
  // before main() (OpenBLAS's pool) do not block signals, so a handler takes them, whichever
  // thread runs it, and writes to a pipe (the only thing a handler may safely do here).
  QKSCOPE_CHECK(::pipe(g_signal_pipe) == 0, "cannot create the signal pipe");
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  qkscope::http::Service service(o.model, o.service);
  std::cout << kName << ": " << qkscope::tools::describe(service.identity()) << std::endl;
  std::unique_ptr<qkscope::http::LatencyLog> log;
  if (!o.latency_log.empty()) log = std::make_unique<qkscope::http::LatencyLog>(o.latency_log);

  httplib::Server http;
  const int http_threads = o.http_threads;
  http.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  http.set_payload_max_length(o.max_body_bytes);
  http.set_read_timeout(o.read_timeout_s, 0);
  // An idle connection holds a connection thread as a stalled request does: the same bound
  // (cpp-httplib's own default is 5 s, the read timeout's default).
  http.set_keep_alive_timeout(o.read_timeout_s);
  http.set_write_timeout(o.write_timeout_s, 0);
  http.set_keep_alive_max_count(1000);
  http.set_tcp_nodelay(true);
  qkscope::http::install_routes(http, service, log.get());

  int port = o.port;
  if (port == 0) {
    port = http.bind_to_any_port(o.host);
    QKSCOPE_CHECK(port > 0, "cannot listen on {} (any port)", o.host);
  } else {
    QKSCOPE_CHECK(http.bind_to_port(o.host, port), "cannot listen on {}:{}", o.host, port);
  }

  // Shared with the signal thread, which may outlive this function (it is detached).
  struct Stop {
    std::mutex mutex;
    bool requested = false, listening_done = false;
    httplib::Server* http = nullptr;
  };
  auto stop = std::make_shared<Stop>();
  stop->http = &http;
  std::thread signal_thread([stop] {
    char byte = 0;
    while (::read(g_signal_pipe[0], &byte, 1) != 1) {
    }
    // stop() acts only once the listener runs (and must be called once: a second call finds
    // no socket): wait for it to run, unless it is already over or never started.
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(stop->mutex);
        stop->requested = true;
        if (stop->listening_done) return;
        if (stop->http->is_running()) {
          stop->http->stop();
          return;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  signal_thread.detach();  // blocked in read() when the program ends without a signal

  std::cout << fmt::format("{}: listening on http://{}:{}", kName,
                           o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host,
                           port)
            << std::endl;
  bool requested = false;
  {
    std::lock_guard<std::mutex> lock(stop->mutex);
    requested = stop->requested;
  }
  if (!requested) http.listen_after_bind();
  {
    std::lock_guard<std::mutex> lock(stop->mutex);
    stop->listening_done = true;  // every connection is closed: no request is in flight
  }

  service.shutdown();
  if (log) log->flush();
  if (!o.service.uninstrumented) {
    const nlohmann::json r = service.report(nlohmann::json::object());
    if (!r["dir"].is_null())
      std::cout << fmt::format("{}: final report {} ({} requests, {} tokens)", kName,
                               r["dir"].get<std::string>(), r["requests"].get<int64_t>(),
                               r["tokens"].get<int64_t>())
                << std::endl;
    else
      std::cout << fmt::format("{}: nothing captured, no report written", kName) << std::endl;
  }
  const nlohmann::json h = service.health();
  std::cout << fmt::format("{}: stopped after {} requests, {} captured", kName,
                           h["served"].get<int64_t>(), h["captured"].get<int64_t>())
            << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return qkscope::tools::cli_main(kName, argc, argv, parse, run); }
