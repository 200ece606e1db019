// The HTTP inference server (tools/http_server) as clients see it: each test starts the program
// on an ephemeral loopback port and talks HTTP to it. Outputs are checked bit for bit against
// the model run here; the tables against the capture program over the same requests and over
// the server's own q/k; every kind of bad request against its status; SIGTERM under load
// against the requests the clients saw answered; the q/k files of two server processes merged by
// capture --qk against their tokens put together here; a client that stalls against the read
// timeout.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>
#include <torch/script.h>

#include "cli_test_util.h"
#include "qkscope/checkpoint.h"
#include "qkscope/qk_file.h"
#include "qkscope/qk_merge.h"
#include "server_test_util.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string model_path(const std::string& file) {
  const char* env = std::getenv("QKSCOPE_MODELS_DIR");
  return std::string(env ? env : QKSCOPE_MODELS_DIR) + "/" + file;
}

fs::path fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The server program, started with `args`; its stdout is read until it says its port.
class ServerProcess {
 public:
  explicit ServerProcess(const std::vector<std::string>& args) {
    err_path_ = fs::temp_directory_path() /
                ("qkscope_http_err_" + std::to_string(::getpid()) + "_" + std::to_string(++count_));
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      FILE* err = std::fopen(err_path_.c_str(), "w");
      if (err) ::dup2(fileno(err), 2);
      ::close(out[0]);
      std::vector<char*> argv{const_cast<char*>(QKSCOPE_HTTP_SERVER_EXE)};
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_fd_ = out[0];
    const std::string marker = "listening on http://127.0.0.1:";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (stdout_.find(marker) == std::string::npos || stdout_.find('\n', stdout_.find(marker)) ==
                                                             std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline || !read_some(1000)) {
        if (std::chrono::steady_clock::now() > deadline || eof_) break;
      }
    }
    const size_t at = stdout_.find(marker);
    if (at != std::string::npos) port_ = std::stoi(stdout_.substr(at + marker.size()));
  }
  ~ServerProcess() {
    if (pid_ > 0 && status_ < 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) ::close(out_fd_);
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string err() const { return read_text(err_path_); }

  // Sends `signal`, reads stdout to its end and returns the exit status (-1: killed by a
  // signal). Gives up (SIGKILL) after 120 s.
  int stop(int signal = SIGTERM) {
    ::kill(pid_, signal);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!eof_ && std::chrono::steady_clock::now() < deadline) read_some(1000);
    if (!eof_) ::kill(pid_, SIGKILL);
    int raw = 0;
    ::waitpid(pid_, &raw, 0);
    status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
    return status_;
  }
  // The exit status of a program expected to end by itself.
  int wait() {
    while (!eof_) read_some(1000);
    int raw = 0;
    ::waitpid(pid_, &raw, 0);
    status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
    return status_;
  }
  const std::string& out() const { return stdout_; }

 private:
  bool read_some(int timeout_ms) {
    pollfd p{out_fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(out_fd_, buf, sizeof buf);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    stdout_.append(buf, static_cast<size_t>(n));
    return true;
  }

  static inline int count_ = 0;
  pid_t pid_ = -1;
  int out_fd_ = -1, port_ = 0, status_ = -1;
  bool eof_ = false;
  std::string stdout_;
  fs::path err_path_;
};

struct Reply {
  int status = 0;  // 0: no answer (connection failed)
  json body;
};

Reply post(int port, const std::string& path, const std::string& body) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(120, 0);
  auto res = client.Post(path.c_str(), body, "application/json");
  Reply r;
  if (!res) return r;
  r.status = res->status;
  try {
    r.body = json::parse(res->body);
  } catch (...) {
    r.body = json{{"unparsed", res->body}};
  }
  return r;
}
Reply post(int port, const std::string& path, const json& body) {
  return post(port, path, body.dump());
}
Reply get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get(path.c_str());
  Reply r;
  if (!res) return r;
  r.status = res->status;
  r.body = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  return r;
}

std::vector<std::string> base_args(const fs::path& out, const std::string& model = "bert.pt") {
  return {"--model", model_path(model), "--out", out.string(), "--port", "0", "--threads", "2"};
}

std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Random requests: lengths 1..max_length, ids 1..99 (the reference models' vocabulary is 100).
std::vector<std::vector<int64_t>> make_ids(int count, int max_length, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> length(1, max_length);
  std::uniform_int_distribution<int64_t> id(1, 99);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(count));
  for (auto& ids : out) {
    ids.resize(static_cast<size_t>(length(rng)));
    for (int64_t& v : ids) v = id(rng);
  }
  return out;
}

// OpenBLAS's GEMMs give other bits with another thread count: the server's outputs equal the
// model's run with the server's settings (one BLAS thread per worker).
void one_blas_thread() {
  using SetThreads = void (*)(int);
  auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set != nullptr) set(1);
}

// The model, loaded and run here, as the server's clients expect it to behave: one sequence,
// attention mask of ones. Warmed up as the server warms its model up (TorchScript optimises over
// the first calls).
class DirectModel {
 public:
  explicit DirectModel(const std::string& path) {
    torch::jit::setTensorExprFuserEnabled(false);  // as qkscope's loader
    at::set_num_threads(1);                         // as the server's workers
    one_blas_thread();                              // as the server's --blas-threads 1
    module_ = torch::jit::load(path);
    module_.eval();
    for (int i = 0; i < 3; ++i) forward(std::vector<int64_t>(8, 0));
  }
  at::Tensor forward(const std::vector<int64_t>& ids) {
    c10::InferenceMode guard;
    const int64_t n = static_cast<int64_t>(ids.size());
    std::vector<c10::IValue> in{torch::tensor(ids, torch::kLong).view({1, n}),
                                torch::ones({1, n}, torch::kLong)};
    c10::IValue out = module_.forward(in);
    return (out.isTuple() ? out.toTupleRef().elements()[0] : out).toTensor().clone();
  }
  torch::jit::Module& module() { return module_; }

 private:
  torch::jit::Module module_;
};

// A tensor of a "tensors" answer, as float32: its shape checked, its values parsed back.
at::Tensor tensor_of(const json& t) {
  std::vector<int64_t> shape = t.at("shape").get<std::vector<int64_t>>();
  EXPECT_EQ(t.at("dtype"), "float32");
  std::vector<float> data;
  for (const json& v : t.at("data")) data.push_back(static_cast<float>(v.get<double>()));
  return torch::tensor(data, torch::kFloat).view(shape);
}

bool bit_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) == 0;
}

json forward_body(const std::vector<int64_t>& ids, const char* ret = "tensors") {
  return json{{"ids", ids}, {"return", ret}};
}

// heads.csv of a report folder, for table comparisons.
std::string heads_csv(const fs::path& dir) { return read_text(dir / "heads.csv"); }

int run_capture(const std::string& args) {
  const std::string cmd = "OPENBLAS_NUM_THREADS=1 " + std::string(QKSCOPE_CAPTURE_EXE) + " " +
                          args + " --quiet >/dev/null 2>&1";
  const int raw = std::system(cmd.c_str());
  return WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
}

// The first sequence index of a running server (prefix << 40): request n is sequence base + n.
int64_t sequence_base(int port) {
  const Reply h = get(port, "/v1/health");
  EXPECT_EQ(h.status, 200);
  const int64_t prefix = h.body.value("sequence_prefix", int64_t{-1});
  EXPECT_GE(prefix, 0);
  EXPECT_LE(prefix, 8191);
  return prefix << 40;
}

// ---------------------------------------------------------------------------------------------

TEST(HttpServerTest, ForwardAnswersTheModelsOutputsBitForBit) {
  const fs::path out = fresh_dir("qkscope_http_forward");
  ServerProcess server(plus(base_args(out), {"--sample-every", "2"}));
  ASSERT_GT(server.port(), 0) << server.err();
  DirectModel model(model_path("bert.pt"));

  const auto requests = make_ids(12, 64, 11);  // up to the model's 64 positions
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    const Reply r = post(server.port(), "/v1/forward", forward_body(requests[i]));
    ASSERT_EQ(r.status, 200) << r.body.dump();
    EXPECT_EQ(r.body["request"], static_cast<int64_t>(i));
    EXPECT_EQ(r.body["captured"], i % 2 == 0);
    EXPECT_EQ(r.body["tokens"], requests[i].size());
    const json& outputs = r.body["outputs"];
    const json& first = outputs.is_array() ? outputs[0] : outputs;
    EXPECT_TRUE(bit_equal(tensor_of(first), model.forward(requests[i])));
  }
  // The summary: shape and dtype, and the argmax of the last dimension.
  const Reply s = post(server.port(), "/v1/forward", forward_body(requests[3], "summary"));
  ASSERT_EQ(s.status, 200) << s.body.dump();
  const json& summary = s.body["outputs"].is_array() ? s.body["outputs"][0] : s.body["outputs"];
  const at::Tensor direct = model.forward(requests[3]);
  EXPECT_EQ(summary["shape"], json(direct.sizes().vec()));
  EXPECT_FALSE(summary.contains("data"));
  const at::Tensor argmax = direct.argmax(-1)[0];
  ASSERT_EQ(summary["argmax"][0].size(), static_cast<size_t>(argmax.size(0)));
  for (int64_t t = 0; t < argmax.size(0); ++t)
    EXPECT_EQ(summary["argmax"][0][t].get<int64_t>(), argmax[t].item<int64_t>());
  EXPECT_EQ(server.stop(), 0) << server.err();
}

// A BERT vocab.txt written here: "text" requests are the ids WordPiece gives, [CLS] ... [SEP].
TEST(HttpServerTest, TextRequestsGoThroughTheTokenizer) {
  const fs::path out = fresh_dir("qkscope_http_text");
  std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  const std::vector<std::string> words{"the", "cat", "sat", "on", "mat", "a", "dog"};
  for (const std::string& w : words) vocab += w + "\n";
  std::ofstream(out / "vocab.txt") << vocab;
  ServerProcess server(plus(base_args(out), {"--vocab-txt", (out / "vocab.txt").string()}));
  ASSERT_GT(server.port(), 0) << server.err();
  const Reply r = post(server.port(), "/v1/forward",
                       json{{"text", "The cat sat on a MAT"}, {"return", "tensors"}});
  ASSERT_EQ(r.status, 200) << r.body.dump();
  // [CLS]=2, the=5, cat=6, sat=7, on=8, a=10, mat=9, [SEP]=3 (lowercased).
  const std::vector<int64_t> ids{2, 5, 6, 7, 8, 10, 9, 3};
  EXPECT_EQ(r.body["tokens"], ids.size());
  DirectModel model(model_path("bert.pt"));
  const json& outputs = r.body["outputs"];
  EXPECT_TRUE(bit_equal(tensor_of(outputs.is_array() ? outputs[0] : outputs), model.forward(ids)));
  // Not both, not neither.
  EXPECT_EQ(post(server.port(), "/v1/forward", json{{"text", "cat"}, {"ids", {1}}}).status, 400);
  EXPECT_EQ(post(server.port(), "/v1/forward", json::object()).status, 400);
  EXPECT_EQ(server.stop(), 0) << server.err();
}

// 6 clients at once, 60 requests, every 3rd captured: each request numbered once, flagged as
// captured exactly when its number says so, answered with the model's output; the report holds
// exactly the captured requests, and its tables equal capture's over the same ids (one sequence
// a forward, as the server runs them) and capture --qk over the server's own q/k.
TEST(HttpServerTest, ConcurrentClientsAndTablesOfExactlyTheSampledRequests) {
  const fs::path out = fresh_dir("qkscope_http_tables");
  ServerProcess server(plus(base_args(out), {"--sample-every", "3"}));
  ASSERT_GT(server.port(), 0) << server.err();
  constexpr int kClients = 6, kEach = 10;
  const auto requests = make_ids(kClients * kEach, 40, 5);

  std::mutex mutex;
  std::map<int64_t, size_t> by_number;  // request number -> index into requests
  std::map<size_t, json> answers;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kEach; ++i) {
        const size_t index = static_cast<size_t>(c * kEach + i);
        const Reply r = post(server.port(), "/v1/forward", forward_body(requests[index]));
        std::lock_guard<std::mutex> lock(mutex);
        answers[index] = r.status == 200 ? r.body : json{{"status", r.status}, {"body", r.body}};
        if (r.status == 200) by_number[r.body["request"].get<int64_t>()] = index;
      }
    });
  }
  for (std::thread& t : clients) t.join();

  ASSERT_EQ(by_number.size(), requests.size()) << "numbers repeated or requests failed";
  // Sequence identities: this process's (random) prefix, then the request number.
  const int64_t base = sequence_base(server.port());
  for (const auto& [number, index] : by_number)
    EXPECT_EQ(answers[index]["sequence"].get<int64_t>(), base + number);
  EXPECT_EQ(by_number.begin()->first, 0);
  EXPECT_EQ(by_number.rbegin()->first, static_cast<int64_t>(requests.size()) - 1);
  DirectModel model(model_path("bert.pt"));
  std::vector<int64_t> captured;
  int64_t captured_tokens = 0;
  for (const auto& [number, index] : by_number) {
    SCOPED_TRACE("request " + std::to_string(number));
    const json& a = answers[index];
    EXPECT_EQ(a["captured"].get<bool>(), number % 3 == 0);
    const json& first = a["outputs"].is_array() ? a["outputs"][0] : a["outputs"];
    EXPECT_TRUE(bit_equal(tensor_of(first), model.forward(requests[index])));
    if (number % 3 == 0) {
      captured.push_back(number);
      captured_tokens += static_cast<int64_t>(requests[index].size());
    }
  }

  const Reply rep = post(server.port(), "/v1/report", json::object());
  ASSERT_EQ(rep.status, 200) << rep.body.dump();
  EXPECT_EQ(rep.body["requests"], captured.size());
  EXPECT_EQ(rep.body["requests_seen"], captured.size());
  EXPECT_EQ(rep.body["tokens"], captured_tokens);
  EXPECT_EQ(rep.body["tokens_seen"], captured_tokens);
  std::vector<int64_t> captured_sequences;
  for (int64_t number : captured) captured_sequences.push_back(base + number);
  EXPECT_EQ(rep.body["sequences"], json(captured_sequences));
  const fs::path dir = rep.body["dir"].get<std::string>();
  EXPECT_EQ(dir, out / "report-1");
  for (const char* f : {"heads.csv", "scales.csv", "ctable.json", "heatmaps.svg", "qk.safetensors"})
    EXPECT_TRUE(fs::is_regular_file(dir / f)) << f;

  // The q/k file: the captured requests' tokens, in request order, with their ids.
  const qkscope::QkData data = qkscope::read_qk_file((dir / "qk.safetensors").string());
  EXPECT_EQ(data.n_tokens(), captured_tokens);
  std::vector<int64_t> expected_ids, expected_sequence;
  for (int64_t number : captured) {
    const auto& ids = requests[by_number[number]];
    expected_ids.insert(expected_ids.end(), ids.begin(), ids.end());
    expected_sequence.insert(expected_sequence.end(), ids.size(), base + number);
  }
  EXPECT_EQ(data.token_id, expected_ids);
  EXPECT_EQ(data.sequence, expected_sequence);
  // Its sequences.* metadata: one range, every request numbered so far, and where it came from.
  const qkscope::StoreFile file = qkscope::read_store_file((dir / "qk.safetensors").string());
  const auto ranges = qkscope::read_sequence_ranges(file.metadata, file.kept, "qk.safetensors");
  ASSERT_EQ(ranges.size(), 1u);
  EXPECT_EQ(ranges[0].begin, base);
  EXPECT_EQ(ranges[0].end, base + static_cast<int64_t>(requests.size()));
  EXPECT_EQ(ranges[0].source.rfind("http-server:", 0), 0u) << ranges[0].source;
  EXPECT_NE(ranges[0].source.find(":" + std::to_string(server.pid()) + ":"), std::string::npos)
      << ranges[0].source;

  // The same requests through the capture program, one sequence a forward, with the server's
  // thread settings: one intra-op thread, one BLAS thread (capture leaves OpenBLAS's pool alone
  // when the variable is set).
  std::ofstream ids_file(out / "captured_ids.txt");
  for (int64_t number : captured) {
    for (int64_t id : requests[by_number[number]]) ids_file << id << ' ';
    ids_file << '\n';
  }
  ids_file.close();
  ASSERT_EQ(run_capture("--model " + model_path("bert.pt") + " --ids " +
                        (out / "captured_ids.txt").string() + " --batch-size 1 --threads 1 --out " +
                        (out / "cli_model").string()),
            0);
  ASSERT_EQ(run_capture("--qk " + (dir / "qk.safetensors").string() + " --out " +
                        (out / "cli_qk").string()),
            0);
  EXPECT_EQ(heads_csv(dir), heads_csv(out / "cli_qk"));
  EXPECT_EQ(read_text(dir / "scales.csv"), read_text(out / "cli_qk" / "scales.csv"));
  EXPECT_EQ(heads_csv(dir), heads_csv(out / "cli_model"));

  // A report is a snapshot: the store keeps its requests, a second report has them all again.
  const Reply again = post(server.port(), "/v1/report", json::object());
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.body["requests"], captured.size());
  EXPECT_EQ(again.body["dir"], (out / "report-2").string());
  EXPECT_EQ(heads_csv(out / "report-2"), heads_csv(dir));
  EXPECT_EQ(server.stop(), 0) << server.err();
}

// /v1/capture: off, on at 1 in 2 with two heads of layer 1, then a budget. Changing what is
// kept writes the old store's tables first.
TEST(HttpServerTest, CaptureSettingsChooseRequestsLayersAndHeads) {
  const fs::path out = fresh_dir("qkscope_http_settings");
  ServerProcess server(base_args(out));
  ASSERT_GT(server.port(), 0) << server.err();
  const int port = server.port();
  const auto requests = make_ids(8, 20, 3);
  for (int i = 0; i < 2; ++i) {  // capture is off by default
    const Reply r = post(port, "/v1/forward", forward_body(requests[i], "summary"));
    ASSERT_EQ(r.status, 200);
    EXPECT_FALSE(r.body["captured"].get<bool>());
  }
  Reply c = post(port, "/v1/capture", json{{"every", 2}, {"layers", {1}}, {"heads", {3, 0}}});
  ASSERT_EQ(c.status, 200) << c.body.dump();
  EXPECT_EQ(c.body["capture"]["every"], 2);
  EXPECT_EQ(c.body["capture"]["layers"], json({1}));
  EXPECT_FALSE(c.body.contains("report"));  // the old store was empty
  int64_t tokens = 0, n = 0;
  for (int i = 2; i < 8; ++i) {
    const Reply r = post(port, "/v1/forward", forward_body(requests[i], "summary"));
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.body["captured"].get<bool>(), i % 2 == 0);
    if (i % 2 == 0) tokens += static_cast<int64_t>(requests[i].size()), ++n;
  }
  // A new budget: the store so far is written, and a new one starts.
  c = post(port, "/v1/capture", json{{"max_tokens", 5}, {"seed", 9}});
  ASSERT_EQ(c.status, 200) << c.body.dump();
  ASSERT_TRUE(c.body.contains("report")) << c.body.dump();
  EXPECT_EQ(c.body["report"]["requests"], n);
  EXPECT_EQ(c.body["report"]["tokens"], tokens);
  const fs::path dir = c.body["report"]["dir"].get<std::string>();
  const qkscope::QkData data = qkscope::read_qk_file((dir / "qk.safetensors").string());
  ASSERT_EQ(data.sites.size(), 1u);
  EXPECT_EQ(data.sites[0].layer, 1);
  EXPECT_EQ(data.sites[0].head_index, (std::vector<int>{3, 0}));
  // heads.csv: a header and the two heads.
  const std::string csv = heads_csv(dir);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;
  // The new store is empty.
  const Reply rep = post(port, "/v1/report", json::object());
  ASSERT_EQ(rep.status, 200);
  EXPECT_EQ(rep.body["requests"], 0);
  EXPECT_TRUE(rep.body["dir"].is_null());
  // Bad settings change nothing.
  EXPECT_EQ(post(port, "/v1/capture", json{{"layers", {3}}}).status, 400);  // 3 sites: 0..2
  EXPECT_EQ(post(port, "/v1/capture", json{{"heads", {4}}}).status, 400);   // 4 heads
  EXPECT_EQ(post(port, "/v1/capture", json{{"every", -1}}).status, 400);
  EXPECT_EQ(post(port, "/v1/capture", json::object()).body["capture"]["max_tokens"], 5);
  EXPECT_EQ(server.stop(), 0) << server.err();
}

// Every kind of bad request: its status, a one-line reason, and the server still serves.
TEST(HttpServerTest, BadRequestsGetTheir4xxWithAReasonAndTheServerKeepsServing) {
  const fs::path out = fresh_dir("qkscope_http_bad");
  ServerProcess server(plus(base_args(out), {"--max-body-bytes", "4096", "--max-request-tokens",
                                             "32", "--sample-every", "1"}));
  ASSERT_GT(server.port(), 0) << server.err();
  const int port = server.port();
  struct Case {
    const char* name;
    std::string body;
    int status;
    const char* reason;  // a part of the reason
  };
  const std::vector<Case> cases{
      {"not JSON", "{\"ids\": [1, 2", 400, "not valid JSON"},
      {"not an object", "[1, 2, 3]", 400, "expected a JSON object"},
      {"no ids", "{}", 400, "exactly one of"},
      {"ids not a list", "{\"ids\": 5}", 400, "ids: expected a list"},
      {"id not an integer", "{\"ids\": [1, 2.5]}", 400, "ids[1]: expected an integer"},
      {"id a string", "{\"ids\": [\"7\"]}", 400, "ids[0]: expected an integer"},
      {"number past a double", "{\"ids\": [1e400]}", 400, "number overflow"},
      {"nested lists", "{\"ids\": " + std::string(2000, '[') + std::string(2000, ']') + "}",
       400, "ids[0]: expected an integer"},
      {"id out of range", "{\"ids\": [1, 100]}", 400, "ids[1]: expected a token id in 0..99"},
      {"negative id", "{\"ids\": [-1]}", 400, "ids[0]: expected a token id in 0..99"},
      {"huge id", "{\"ids\": [18446744073709551615]}", 400, "ids[0]"},
      {"empty ids", "{\"ids\": []}", 400, "at least one token"},
      {"too many tokens", json{{"ids", std::vector<int64_t>(33, 1)}}.dump(), 413,
       "at most 32 tokens"},
      {"unknown field", "{\"ids\": [1], \"idz\": 2}", 400, "unknown field \"idz\""},
      {"bad return", "{\"ids\": [1], \"return\": \"all\"}", 400, "return: expected"},
      {"text without tokenizer", "{\"text\": \"hello\"}", 400, "no tokenizer"},
      {"body too large", "{\"ids\": [" + std::string(5000, ' ') + "1]}", 413, "too large"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const Reply r = post(port, "/v1/forward", c.body);
    EXPECT_EQ(r.status, c.status) << r.body.dump();
    const std::string reason = r.body.value("error", "");
    EXPECT_NE(reason.find(c.reason), std::string::npos) << reason;
    EXPECT_EQ(reason.find('\n'), std::string::npos) << "not one line: " << reason;
  }
  // Wrong method, unknown path, generate without a cache model, bad report option.
  httplib::Client client("127.0.0.1", port);
  auto r = client.Get("/v1/forward");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_NE(r->body.find("expected POST"), std::string::npos) << r->body;
  r = client.Get("/v2/nothing");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_NE(r->body.find("no such endpoint"), std::string::npos) << r->body;
  EXPECT_EQ(post(port, "/v1/generate", json{{"ids", {1}}}).status, 404);
  EXPECT_EQ(post(port, "/v1/report", json{{"html", "yes"}}).status, 400);
  // A request cut short: the server answers the next client as usual.
  {
    httplib::Client raw("127.0.0.1", port);
    raw.set_read_timeout(2, 0);
    httplib::Headers h{{"Content-Length", "1000"}};
    (void)raw.Post("/v1/forward", h, "{\"ids\": [1", "application/json");
  }

  // Still serving, and none of the refused requests reached the model or the store.
  const auto ok = make_ids(3, 32, 2);
  for (const auto& ids : ok) {
    const Reply g = post(port, "/v1/forward", forward_body(ids, "summary"));
    EXPECT_EQ(g.status, 200) << g.body.dump();
  }
  const Reply h = get(port, "/v1/health");
  ASSERT_EQ(h.status, 200);
  EXPECT_EQ(h.body["status"], "ok");
  EXPECT_EQ(h.body["served"], 3);
  const Reply rep = post(port, "/v1/report", json::object());
  ASSERT_EQ(rep.status, 200);
  EXPECT_EQ(rep.body["requests"], 3);
  EXPECT_EQ(server.stop(), 0) << server.err();
}

// gpt2_cache: /v1/generate equals greedy decoding run here, captured sequences arrive whole
// (prompt + new tokens - 1); with one worker and no queue, a request while it is busy is 503.
TEST(HttpServerTest, GenerateDecodesGreedilyCapturesWholeSequencesAndRefusesPastTheQueue) {
  const fs::path out = fresh_dir("qkscope_http_generate");
  ServerProcess server({"--model", model_path("gpt2_cache.pt"), "--out", out.string(), "--port",
                        "0", "--threads", "1", "--max-queue", "0", "--cache-shape", "2,4,8",
                        "--sample-every", "1", "--max-new-tokens", "60"});
  ASSERT_GT(server.port(), 0) << server.err();
  const int port = server.port();

  // Greedy decoding here, with the model's own cache.
  at::set_num_threads(1);
  one_blas_thread();
  torch::jit::setTensorExprFuserEnabled(false);
  torch::jit::Module model = torch::jit::load(model_path("gpt2_cache.pt"));
  auto greedy = [&](std::vector<int64_t> ids, int steps) {
    c10::InferenceMode guard;
    at::Tensor step = torch::tensor(ids, torch::kLong).view({1, -1});
    at::Tensor mask = torch::ones_like(step);
    at::Tensor pk = torch::zeros({2, 1, 4, 0, 8}), pv = torch::zeros({2, 1, 4, 0, 8});
    for (int s = 0; s < steps; ++s) {
      auto e = model.forward({step, mask, pk, pv}).toTupleRef().elements();
      pk = e[1].toTensor();
      pv = e[2].toTensor();
      const at::Tensor logits = e[0].toTensor();
      step = logits.select(1, logits.size(1) - 1).argmax(-1, true);
      ids.push_back(step.item<int64_t>());
      mask = torch::cat({mask, torch::ones_like(step)}, 1);
    }
    return ids;
  };
  const std::vector<int64_t> prompt{5, 17, 42};
  const Reply g = post(port, "/v1/generate", json{{"ids", prompt}, {"max_new_tokens", 6}});
  ASSERT_EQ(g.status, 200) << g.body.dump();
  EXPECT_EQ(g.body["ids"], json(greedy(prompt, 6)));
  EXPECT_EQ(g.body["new_ids"].size(), 6u);
  EXPECT_EQ(g.body["tokens"], 3 + 6 - 1);
  EXPECT_EQ(post(port, "/v1/generate", json{{"ids", prompt}, {"max_new_tokens", 61}}).status, 400);
  EXPECT_EQ(post(port, "/v1/generate", json{{"ids", std::vector<int64_t>(10, 1)},
                                            {"max_new_tokens", 56}}).status, 413);  // 65 > 64

  // Busy worker, no queue: 503 with the reason; then served again.
  std::atomic<bool> long_done{false};
  Reply long_reply;
  std::thread busy([&] {
    long_reply = post(port, "/v1/generate", json{{"ids", {1, 2}}, {"max_new_tokens", 60}});
    long_done = true;
  });
  bool refused = false;
  for (int i = 0; i < 2000 && !long_done && !refused; ++i) {
    const Reply h = get(port, "/v1/health");
    if (h.status == 200 && h.body["queue"]["running"] == 1) {
      const Reply r = post(port, "/v1/generate", json{{"ids", {3}}, {"max_new_tokens", 1}});
      if (r.status == 503) {
        refused = true;
        EXPECT_NE(r.body.value("error", "").find("queue full"), std::string::npos) << r.body;
      }
    }
  }
  busy.join();
  EXPECT_TRUE(refused) << "no request was refused while the only worker was busy";
  ASSERT_EQ(long_reply.status, 200);
  EXPECT_EQ(long_reply.body["ids"], json(greedy({1, 2}, 60)));

  // The store: whole sequences of every captured generation.
  const Reply rep = post(port, "/v1/report", json::object());
  ASSERT_EQ(rep.status, 200) << rep.body.dump();
  EXPECT_EQ(rep.body["requests"], 2);
  EXPECT_EQ(rep.body["tokens"], (3 + 6 - 1) + (2 + 60 - 1));
  const qkscope::QkData data =
      qkscope::read_qk_file(rep.body["dir"].get<std::string>() + "/qk.safetensors");
  std::vector<int64_t> first(data.token_id.begin(), data.token_id.begin() + 8);
  std::vector<int64_t> expect = greedy(prompt, 6);
  expect.pop_back();  // the last generated token is never fed
  EXPECT_EQ(first, expect);
  EXPECT_EQ(server.stop(), 0) << server.err();
}

// SIGTERM while 4 clients keep sending: the server stops taking connections, answers what it
// took, writes the final report and exits 0. The report holds exactly the captured requests the
// clients got answers for.
TEST(HttpServerTest, SigtermDuringLoadFinishesInFlightRequestsAndWritesTheReport) {
  const fs::path out = fresh_dir("qkscope_http_sigterm");
  const fs::path log = out / "latency.log";
  ServerProcess server(plus(base_args(out), {"--sample-every", "2", "--latency-log", log.string()}));
  ASSERT_GT(server.port(), 0) << server.err();
  const int port = server.port();
  const int64_t base = sequence_base(port);
  const auto requests = make_ids(64, 48, 21);
  std::mutex mutex;
  std::map<int64_t, int64_t> captured;  // request number -> tokens, of answered captured ones
  std::atomic<int64_t> answered{0}, failed{0}, other{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (size_t i = static_cast<size_t>(c); !stop; i = (i + 4) % requests.size()) {
        const Reply r = post(port, "/v1/forward", forward_body(requests[i], "summary"));
        if (r.status == 0) {  // the listener is closed
          ++failed;
          return;
        }
        if (r.status != 200) {
          ++other;  // 503 while shutting down is allowed; anything else is not
          if (r.status != 503) ADD_FAILURE() << r.status << " " << r.body.dump();
          continue;
        }
        ++answered;
        if (r.body["captured"].get<bool>()) {
          std::lock_guard<std::mutex> lock(mutex);
          captured[r.body["request"].get<int64_t>()] = static_cast<int64_t>(requests[i].size());
        }
      }
    });
  }
  while (answered < 40) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const int status = server.stop(SIGTERM);
  stop = true;
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(status, 0) << server.err();
  EXPECT_NE(server.out().find("final report"), std::string::npos) << server.out();

  const fs::path dir = out / "report-1";
  ASSERT_TRUE(fs::is_regular_file(dir / "qk.safetensors")) << server.out();
  const qkscope::QkData data = qkscope::read_qk_file((dir / "qk.safetensors").string());
  std::vector<int64_t> sequences = data.sequence;
  sequences.erase(std::unique(sequences.begin(), sequences.end()), sequences.end());
  std::vector<int64_t> expected;
  int64_t tokens = 0;
  for (const auto& [number, n] : captured) expected.push_back(base + number), tokens += n;
  EXPECT_EQ(sequences, expected);
  EXPECT_EQ(data.n_tokens(), tokens);
  // The tables are those of the q/k file.
  ASSERT_EQ(run_capture("--qk " + (dir / "qk.safetensors").string() + " --out " +
                        (out / "cli_qk").string()),
            0);
  EXPECT_EQ(heads_csv(dir), heads_csv(out / "cli_qk"));
  // The latency log has a line per answered request, flagged as the answers were.
  std::ifstream in(log);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "endpoint status request captured tokens queue_ms total_ms");
  int64_t ok_lines = 0, captured_lines = 0;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string endpoint;
    int code = 0, flag = 0;
    int64_t number = 0;
    ss >> endpoint >> code >> number >> flag;
    if (code == 200) ++ok_lines, captured_lines += flag;
  }
  EXPECT_EQ(ok_lines, answered.load());
  EXPECT_EQ(captured_lines, static_cast<int64_t>(captured.size()));
}

TEST(HttpServerTest, ListensOnLoopbackUnlessToldOtherwise) {
  const fs::path out = fresh_dir("qkscope_http_remote");
  ServerProcess server(plus(base_args(out), {"--host", "0.0.0.0"}));
  EXPECT_EQ(server.port(), 0);
  EXPECT_EQ(server.wait(), 2);
  EXPECT_NE(server.err().find("--allow-remote"), std::string::npos) << server.err();
}

// Issue 14: two server processes at once (--sequence-prefix 5 and 6) capture different
// requests; capture --qk merges their q/k files into the tables of their tokens put together
// here, without QkStore::merge. A server restarted with prefix 5 numbers its requests from
// 5 << 40 again: its file and the first one are refused as overlapping.
TEST(HttpServerTest, QkFilesOfTwoServerProcessesMergeAndARestartedPrefixIsRefused) {
  const fs::path out = fresh_dir("qkscope_http_merge");
  ServerProcess a(plus(base_args(out / "a"), {"--sample-every", "2", "--sequence-prefix", "5"}));
  ServerProcess b(plus(base_args(out / "b"), {"--sample-every", "3", "--sequence-prefix", "6"}));
  ASSERT_GT(a.port(), 0) << a.err();
  ASSERT_GT(b.port(), 0) << b.err();
  EXPECT_NE(a.out().find("sequence prefix 5 (--sequence-prefix)"), std::string::npos) << a.out();
  const auto ra = make_ids(10, 40, 31), rb = make_ids(9, 40, 32);
  for (size_t i = 0; i < std::max(ra.size(), rb.size()); ++i) {  // interleaved, as live traffic
    if (i < ra.size()) {
      ASSERT_EQ(post(a.port(), "/v1/forward", forward_body(ra[i], "summary")).status, 200);
    }
    if (i < rb.size()) {
      ASSERT_EQ(post(b.port(), "/v1/forward", forward_body(rb[i], "summary")).status, 200);
    }
  }
  const Reply rep_a = post(a.port(), "/v1/report", json::object());
  const Reply rep_b = post(b.port(), "/v1/report", json::object());
  ASSERT_EQ(rep_a.status, 200) << rep_a.body.dump();
  ASSERT_EQ(rep_b.status, 200) << rep_b.body.dump();
  EXPECT_EQ(rep_a.body["sequence_range"], json({int64_t{5} << 40, (int64_t{5} << 40) + 10}));
  EXPECT_EQ(a.stop(), 0) << a.err();
  EXPECT_EQ(b.stop(), 0) << b.err();
  const fs::path fa = fs::path(rep_a.body["dir"].get<std::string>()) / "qk.safetensors";
  const fs::path fb = fs::path(rep_b.body["dir"].get<std::string>()) / "qk.safetensors";
  const qkscope::QkData da = qkscope::read_qk_file(fa.string()), db = qkscope::read_qk_file(fb.string());
  ASSERT_GT(da.n_tokens(), 0);
  ASSERT_GT(db.n_tokens(), 0);
  for (int64_t s : da.sequence) EXPECT_EQ(s >> 40, 5);
  for (int64_t s : db.sequence) EXPECT_EQ(s >> 40, 6);

  // The merge, and the same tokens put together by hand (prefix 5's sequences come first).
  qkscope::write_qk_file((out / "joined.safetensors").string(), qkscope::testing::put_together({da, db}));
  const auto merged = qkscope::testing::run_capture(
      "--qk " + fa.string() + " " + fb.string() + " --out " + (out / "merged").string() +
      " --save-qk " + (out / "merged.safetensors").string() + " --quiet");
  ASSERT_EQ(merged.status, 0) << merged.err;
  ASSERT_EQ(run_capture("--qk " + (out / "joined.safetensors").string() + " --out " +
                        (out / "joined").string()), 0);
  EXPECT_EQ(heads_csv(out / "merged"), heads_csv(out / "joined"));
  EXPECT_EQ(read_text(out / "merged" / "scales.csv"), read_text(out / "joined" / "scales.csv"));
  EXPECT_NE(heads_csv(out / "merged"), heads_csv(fa.parent_path()));  // the union, not one file
  // The merged file keeps both servers' ranges.
  const qkscope::StoreFile m = qkscope::read_store_file((out / "merged.safetensors").string());
  EXPECT_EQ(m.kept.n_tokens(), da.n_tokens() + db.n_tokens());
  const auto ranges = qkscope::read_sequence_ranges(m.metadata, m.kept, "merged");
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0].begin, int64_t{5} << 40);
  EXPECT_EQ(ranges[1].begin, int64_t{6} << 40);
  EXPECT_EQ(ranges[1].end, (int64_t{6} << 40) + 9);

  // Restarted with the same prefix: request 0 is sequence 5 << 40 again.
  ServerProcess c(plus(base_args(out / "c"), {"--sample-every", "1", "--sequence-prefix", "5"}));
  ASSERT_GT(c.port(), 0) << c.err();
  for (const auto& ids : make_ids(3, 20, 33))
    ASSERT_EQ(post(c.port(), "/v1/forward", forward_body(ids, "summary")).status, 200);
  const Reply rep_c = post(c.port(), "/v1/report", json::object());
  ASSERT_EQ(rep_c.status, 200);
  EXPECT_EQ(c.stop(), 0) << c.err();
  const fs::path fc = fs::path(rep_c.body["dir"].get<std::string>()) / "qk.safetensors";
  const auto refused = qkscope::testing::run_capture("--qk " + fa.string() + " " + fc.string() +
                                                     " --out " + (out / "refused").string());
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.err.find("both drew sequences"), std::string::npos) << refused.err;
  EXPECT_FALSE(fs::exists(out / "refused" / "heads.csv"));
  // Out of range.
  ServerProcess bad(plus(base_args(out / "d"), {"--sequence-prefix", "8192"}));
  EXPECT_EQ(bad.wait(), 2);
  EXPECT_NE(bad.err().find("--sequence-prefix: expected 0..8191"), std::string::npos) << bad.err();
}

// Issue 15: clients that stall (connected and silent, half the headers, the headers and half
// the body) each hold one connection thread until the read timeout, then are cut off, while
// other clients are served. With every connection thread held, a client waits for a stalled
// one to be cut off and is then served.
TEST(HttpServerTest, StalledClientsAreCutOffAfterTheReadTimeoutWhileOthersAreServed) {
  const fs::path out = fresh_dir("qkscope_http_slow");
  ServerProcess server(plus(base_args(out), {"--http-threads", "4", "--read-timeout", "2",
                                             "--write-timeout", "2"}));
  ASSERT_GT(server.port(), 0) << server.err();
  const int port = server.port();
  using Clock = std::chrono::steady_clock;
  auto connect_raw = [&](const std::string& bytes) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    if (!bytes.empty()) {
      EXPECT_EQ(::send(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    }
    return fd;
  };
  // Seconds until the server closes `fd` (-1: not within `limit_s`); what it sent before.
  auto wait_closed = [](int fd, Clock::time_point since, double limit_s, std::string& got) {
    char buf[512];
    for (;;) {
      const double waited = std::chrono::duration<double>(Clock::now() - since).count();
      if (waited > limit_s) return -1.0;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return std::chrono::duration<double>(Clock::now() - since).count();
      got.append(buf, static_cast<size_t>(n));
    }
  };
  auto still_open = [](int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
  };
  const std::vector<std::string> stalls{
      "",
      "POST /v1/forward HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le",
      "POST /v1/forward HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Content-Length: 100\r\n\r\n{\"ids\": [1, 2"};
  const Clock::time_point t0 = Clock::now();
  std::vector<int> fds;
  for (const std::string& bytes : stalls) fds.push_back(connect_raw(bytes));

  // Three of the four connection threads are held: the fourth serves everyone else.
  const auto ok = make_ids(4, 32, 41);
  for (const auto& ids : ok) {
    const Reply r = post(port, "/v1/forward", forward_body(ids, "summary"));
    EXPECT_EQ(r.status, 200) << r.body.dump();
  }
  const double served_after = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_LT(served_after, 1.5) << "4 small forwards took the whole read timeout (machine busy?)";
  for (size_t i = 0; i < fds.size(); ++i) EXPECT_TRUE(still_open(fds[i])) << "stall " << i;

  for (size_t i = 0; i < fds.size(); ++i) {
    SCOPED_TRACE("stall " + std::to_string(i));
    std::string got;
    const double closed = wait_closed(fds[i], t0, 15.0, got);
    EXPECT_GE(closed, 1.5) << "cut off before the read timeout";
    EXPECT_GT(closed, 0) << "still connected after 15 s";
    EXPECT_LT(closed, 6.0);
    EXPECT_EQ(got.find("200 OK"), std::string::npos) << got;  // no request was served
    ::close(fds[i]);
  }

  // Every connection thread held: the next client is served once the first stall is cut off.
  fds.clear();
  const Clock::time_point t1 = Clock::now();
  for (int i = 0; i < 4; ++i) fds.push_back(connect_raw(stalls[2]));
  const Reply late = post(port, "/v1/forward", forward_body(ok[0], "summary"));
  const double late_after = std::chrono::duration<double>(Clock::now() - t1).count();
  EXPECT_EQ(late.status, 200) << late.body.dump();
  EXPECT_GE(late_after, 1.5);
  EXPECT_LT(late_after, 10.0);
  for (int fd : fds) ::close(fd);
  const Reply h = get(port, "/v1/health");
  EXPECT_EQ(h.body["served"], 5);  // none of the stalled requests reached a worker
  EXPECT_EQ(server.stop(), 0) << server.err();

  // The timeouts are flags, documented.
  ServerProcess help({"--help"});
  EXPECT_EQ(help.wait(), 0);
  for (const char* flag : {"--read-timeout", "--write-timeout", "--sequence-prefix"})
    EXPECT_NE(help.out().find(flag), std::string::npos) << flag << "\n" << help.out();
  EXPECT_NE(help.out().find("idle connection"), std::string::npos) << help.out();
}

}  // namespace
