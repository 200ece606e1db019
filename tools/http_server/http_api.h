// The HTTP routes of the server over a Service, and the per-request latency log. Torch-free.
#pragma once

#include <cstdio>
#include <mutex>
#include <string>

#include "service.h"

namespace httplib {
class Server;
}

namespace qkscope::http {

// One line per request, for load measurements that split captured from uncaptured requests:
//   endpoint status request captured tokens queue_ms total_ms
// total_ms: from the handler's start (request read) to the response built; request -1 when no
// worker took it. Thread-safe; written through stdio's buffer, flushed by flush() and at close.
class LatencyLog {
 public:
  explicit LatencyLog(const std::string& path);  // throws qkscope::Error
  ~LatencyLog();
  LatencyLog(const LatencyLog&) = delete;
  LatencyLog& operator=(const LatencyLog&) = delete;
  void add(const char* endpoint, int status, const Served& served, double total_ms);
  void flush();

 private:
  std::mutex mutex_;
  std::FILE* file_;
};

// GET /v1/health; POST /v1/forward, /v1/generate, /v1/capture, /v1/report. Every error
// answer is {"error": "<one line>"} with its status; unknown paths 404, known paths with the
// wrong method 405. `log` may be null.
void install_routes(httplib::Server& server, Service& service, LatencyLog* log);

}  // namespace qkscope::http
