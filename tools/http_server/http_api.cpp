#include "http_api.h"

#include <httplib.h>

#include <chrono>
#include <exception>

#include <fmt/format.h>

#include "qkscope/error.h"
#include "request_json.h"

namespace qkscope::http {
namespace {

using json = nlohmann::json;

std::string one_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "unknown error" : line;
}

void answer(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // Invalid UTF-8 from a client (echoed in a reason) must not make dump() throw.
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n",
                  "application/json");
}

void answer_error(httplib::Response& res, int status, const std::string& reason) {
  answer(res, status, json{{"error", one_line(reason)}});
}

// Runs `handle(body)` and answers its JSON, or the error it threw. No exception leaves.
template <typename Handle>
void serve(const httplib::Request& req, httplib::Response& res, LatencyLog* log,
           const char* endpoint, const Handle& handle) {
  const auto start = std::chrono::steady_clock::now();
  Served served;
  try {
    const json request = parse_object(req.body);
    answer(res, 200, handle(request, served));
  } catch (const HttpError& e) {
    answer_error(res, e.status(), e.what());
  } catch (const UsageError& e) {  // a setting the service refused
    answer_error(res, 400, e.what());
  } catch (const std::exception& e) {  // the model or the store failed: not the client's fault
    answer_error(res, 500, e.what());
  }
  if (log)
    log->add(endpoint, res.status, served,
             std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                 .count());
}

}  // namespace

LatencyLog::LatencyLog(const std::string& path) : file_(std::fopen(path.c_str(), "w")) {
  QKSCOPE_CHECK(file_ != nullptr, "--latency-log: cannot write '{}'", path);
  std::fputs("endpoint status request captured tokens queue_ms total_ms\n", file_);
}

LatencyLog::~LatencyLog() { std::fclose(file_); }

void LatencyLog::add(const char* endpoint, int status, const Served& s, double total_ms) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::fprintf(file_, "%s %d %lld %d %lld %.3f %.3f\n", endpoint, status,
               static_cast<long long>(s.request), s.captured ? 1 : 0,
               static_cast<long long>(s.tokens), s.queue_ms, total_ms);
}

void LatencyLog::flush() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::fflush(file_);
}

void install_routes(httplib::Server& server, Service& service, LatencyLog* log) {
  server.Get("/v1/health", [&service](const httplib::Request&, httplib::Response& res) {
    answer(res, 200, service.health());
  });
  server.Post("/v1/forward", [&service, log](const httplib::Request& req, httplib::Response& res) {
    serve(req, res, log, "forward",
          [&](const json& r, Served& served) { return service.forward(r, served); });
  });
  server.Post("/v1/generate", [&service, log](const httplib::Request& req, httplib::Response& res) {
    serve(req, res, log, "generate",
          [&](const json& r, Served& served) { return service.generate(r, served); });
  });
  server.Post("/v1/capture", [&service](const httplib::Request& req, httplib::Response& res) {
    serve(req, res, nullptr, "capture",
          [&](const json& r, Served&) { return service.capture(r); });
  });
  server.Post("/v1/report", [&service](const httplib::Request& req, httplib::Response& res) {
    serve(req, res, nullptr, "report",
          [&](const json& r, Served&) { return service.report(r); });
  });
  // The right path with the wrong method.
  auto wrong_method = [](const char* allowed) {
    return [allowed](const httplib::Request& req, httplib::Response& res) {
      res.set_header("Allow", allowed);
      answer_error(res, 405, fmt::format("{} {}: expected {}", req.method, req.path, allowed));
    };
  };
  for (const char* path : {"/v1/forward", "/v1/generate", "/v1/capture", "/v1/report"}) {
    server.Get(path, wrong_method("POST"));
    server.Put(path, wrong_method("POST"));
    server.Delete(path, wrong_method("POST"));
  }
  server.Post("/v1/health", wrong_method("GET"));
  server.Put("/v1/health", wrong_method("GET"));
  server.Delete("/v1/health", wrong_method("GET"));

  // Whatever httplib answers itself (no route: 404; body over the limit: 413; malformed
  // request: 400) gets a JSON reason too; answers that already have a body keep it.
  server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string reason;
    switch (res.status) {
      case 404: reason = fmt::format("no such endpoint: {} {}", req.method, req.path); break;
      case 413:
        // httplib also refuses form-encoded bodies (curl -d's default type) over 8 KiB.
        reason = "request body too large (the limit is the server's --max-body-bytes; a "
                 "form-encoded body's is 8 KiB: send Content-Type: application/json)";
        break;
      default: reason = fmt::format("HTTP {}", res.status);
    }
    answer_error(res, res.status, reason);
  });
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr e) {
        std::string reason = "unknown error";
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          reason = x.what();
        } catch (...) {
        }
        answer_error(res, 500, reason);
      });
}

}  // namespace qkscope::http
