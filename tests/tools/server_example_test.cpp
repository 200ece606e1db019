// The server example (tools/server_example) under concurrent load on the reference BERT: the
// sampled requests are captured exactly and completely, the others not at all, reports drained
// mid-run lose and duplicate nothing, and every served output equals the plain model's. The
// reports' q/k files of two processes merge with capture --qk (issue 14: sequence identities).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <torch/script.h>

#include "cli_test_util.h"
#include "common/sequence_identity.h"
#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/capture_sink.h"
#include "qkscope/error.h"
#include "qkscope/checkpoint.h"
#include "qkscope/qk_file.h"
#include "qkscope/qk_merge.h"
#include "qkscope/qk_store.h"
#include "server.h"
#include "server_test_util.h"

namespace qkscope::server {
namespace {

namespace fs = std::filesystem;

constexpr int kThreads = 4;
constexpr int64_t kRequests = 40;
constexpr int64_t kSampleEvery = 3;
constexpr int kMaxLength = 24;
constexpr uint64_t kSeed = 7;

std::string model_path(const std::string& file) {
  const char* env = std::getenv("QKSCOPE_MODELS_DIR");
  return std::string(env ? env : QKSCOPE_MODELS_DIR) + "/" + file;
}

fs::path fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

bool sampled(int64_t number) { return number % kSampleEvery == 0; }

bool ivalue_equal(const c10::IValue& a, const c10::IValue& b) {
  if (a.isTensor() && b.isTensor()) return torch::equal(a.toTensor(), b.toTensor());
  if (a.isTuple() && b.isTuple()) {
    const auto& x = a.toTupleRef().elements();
    const auto& y = b.toTupleRef().elements();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!ivalue_equal(x[i], y[i])) return false;
    return true;
  }
  return false;
}

// The request as forward's inputs, built here independently of the server.
std::vector<c10::IValue> plain_inputs(const CaptureModule& module, const Request& r) {
  std::vector<c10::IValue> out;
  for (const std::string& name : module.argument_names()) {
    const std::vector<int64_t>& v = name == "input_ids" ? r.input_ids : r.attention_mask;
    out.emplace_back(torch::tensor(v, torch::kLong).view({1, r.padded_length}));
  }
  return out;
}

// What the workers handed back, by request number.
struct Responses {
  std::mutex mutex;
  std::vector<c10::IValue> output = std::vector<c10::IValue>(kRequests);
  std::vector<int> calls = std::vector<int>(kRequests, 0);
  std::vector<char> captured = std::vector<char>(kRequests, 0);
  std::set<std::thread::id> threads;

  ResponseFn callback() {
    return [this](const Request& r, const c10::IValue& out, bool was_captured) {
      std::lock_guard<std::mutex> lock(mutex);
      output.at(r.number) = out;
      ++calls.at(r.number);
      captured.at(r.number) = was_captured;
      threads.insert(std::this_thread::get_id());
    };
  }
};

ServerOptions options(const fs::path& out, int64_t report_every = 0) {
  ServerOptions o;
  o.threads = kThreads;
  o.sample_every = kSampleEvery;
  o.report_every = report_every;
  o.out = out.string();
  o.sequence_prefix = 0;  // sequence index = request number, as the checks below read them
  return o;
}

// Every response arrived once, flagged as sampled exactly when it was, with the plain model's
// output bit for bit.
void expect_responses(const Server& server, const std::vector<Request>& requests,
                      const Responses& responses) {
  for (const Request& r : requests) {
    SCOPED_TRACE("request " + std::to_string(r.number));
    ASSERT_EQ(responses.calls[r.number], 1);
    EXPECT_EQ(static_cast<bool>(responses.captured[r.number]), sampled(r.number));
    const c10::IValue plain = server.module().forward_original(plain_inputs(server.module(), r));
    EXPECT_TRUE(ivalue_equal(responses.output[r.number], plain));
  }
}

int64_t sampled_tokens(const std::vector<Request>& requests) {
  int64_t n = 0;
  for (const Request& r : requests) n += sampled(r.number) ? r.length : 0;
  return n;
}

TEST(ServerExampleTest, MakesPaddedRequestsFromASeed) {
  const auto a = make_requests(kRequests, kMaxLength, 100, kSeed);
  const auto b = make_requests(kRequests, kMaxLength, 100, kSeed);
  ASSERT_EQ(a.size(), static_cast<size_t>(kRequests));
  std::set<int64_t> lengths;
  for (size_t i = 0; i < a.size(); ++i) {
    const Request& r = a[i];
    EXPECT_EQ(r.number, static_cast<int64_t>(i));
    EXPECT_EQ(r.input_ids, b[i].input_ids);
    EXPECT_TRUE(r.length >= 1 && r.length <= r.padded_length && r.padded_length <= kMaxLength);
    EXPECT_TRUE(r.padded_length % 8 == 0 || r.padded_length == kMaxLength);
    for (int64_t s = 0; s < r.padded_length; ++s) {
      const bool valid = s < r.length;
      EXPECT_EQ(r.attention_mask[s], valid ? 1 : 0);
      EXPECT_TRUE(valid ? r.input_ids[s] >= 1 && r.input_ids[s] < 100 : r.input_ids[s] == 0);
    }
    lengths.insert(r.length);
  }
  EXPECT_GT(lengths.size(), 5u);  // random lengths, not one shape
  EXPECT_NE(make_requests(4, kMaxLength, 100, kSeed + 1)[0].input_ids, a[0].input_ids);
}

// 4 workers, 40 requests, every 3rd captured, no report during the run.
TEST(ServerExampleTest, CapturesExactlyTheSampledRequests) {
  Server server(model_path("bert.pt"), options(fresh_dir("qkscope_server_capture")));
  ASSERT_EQ(server.vocab_size(), 100);
  const auto requests = make_requests(kRequests, kMaxLength, 100, kSeed);
  Responses responses;
  const int64_t copies_before = detail::capture_copies();
  const RunStats stats = server.run(requests, responses.callback());
  const int64_t copies = detail::capture_copies() - copies_before;

  int64_t all_tokens = 0, n_sampled = 0;
  for (const Request& r : requests) {
    all_tokens += r.length;
    n_sampled += sampled(r.number);
  }
  EXPECT_EQ(stats.requests, kRequests);
  EXPECT_EQ(stats.captured, n_sampled);
  EXPECT_EQ(stats.tokens, all_tokens);
  EXPECT_GE(responses.threads.size(), 2u) << "the requests were not served concurrently";
  const int n_sites = static_cast<int>(server.module().sites().size());
  ASSERT_EQ(n_sites, 3);
  // Unsampled requests cost no copy: q and k of each site of each sampled request only.
  EXPECT_EQ(copies, 2 * n_sites * n_sampled);

  const QkData data = server.take_captured();
  ASSERT_NO_THROW(validate(data, "server store"));
  // Every token of every sampled request, and nothing else ever reached the store.
  EXPECT_EQ(data.n_tokens(), sampled_tokens(requests));
  EXPECT_EQ(data.tokens_seen, sampled_tokens(requests));
  EXPECT_EQ(data.sequences_seen, n_sampled);
  ASSERT_EQ(static_cast<int>(data.sites.size()), n_sites);
  for (const SiteData& site : data.sites) {
    EXPECT_EQ(site.n_heads, 4);
    EXPECT_EQ(site.head_dim, 16);
    EXPECT_EQ(site.q.size(), static_cast<size_t>(data.n_tokens()) * 4 * 16);
  }
  ASSERT_TRUE(data.has_token_ids());
  std::map<int64_t, std::vector<size_t>> rows;  // sequence -> token rows
  for (size_t t = 0; t < data.sequence.size(); ++t) rows[data.sequence[t]].push_back(t);
  for (const Request& r : requests) {
    SCOPED_TRACE("request " + std::to_string(r.number));
    if (!sampled(r.number)) {
      EXPECT_EQ(rows.count(r.number), 0u);
      continue;
    }
    ASSERT_EQ(rows.count(r.number), 1u);
    const std::vector<size_t>& tokens = rows[r.number];
    ASSERT_EQ(static_cast<int64_t>(tokens.size()), r.length);  // padding dropped
    for (int64_t s = 0; s < r.length; ++s) {
      EXPECT_EQ(data.position[tokens[s]], s);
      EXPECT_EQ(data.token_id[tokens[s]], r.input_ids[s]);
    }
  }

  // The q/k themselves: what each sampled request gives when captured alone, on this thread,
  // into a store of its own (so no row of another request leaked in, none went missing).
  QkStore store;
  StoreSink sink(store);
  for (const Request& r : requests) {
    if (!sampled(r.number)) continue;
    CaptureSession session(sink);
    server.module().forward(plain_inputs(server.module(), r), {r.number});
  }
  const QkData alone = store.take();
  EXPECT_EQ(data.sequence, alone.sequence);
  EXPECT_EQ(data.position, alone.position);
  EXPECT_EQ(data.token_id, alone.token_id);
  ASSERT_EQ(data.sites.size(), alone.sites.size());
  for (size_t i = 0; i < data.sites.size(); ++i) {
    EXPECT_TRUE(data.sites[i].q == alone.sites[i].q) << "site " << i;
    EXPECT_TRUE(data.sites[i].k == alone.sites[i].k) << "site " << i;
  }

  expect_responses(server, requests, responses);
  // The store was emptied: a second take has nothing.
  EXPECT_EQ(server.take_captured().n_tokens(), 0);
}

// Reports every 5 served requests, on the reporting thread, while the workers capture: the
// reports (and the one at the end) together hold every sampled request once.
TEST(ServerExampleTest, PeriodicReportsAccountForEveryCapturedToken) {
  const fs::path out = fresh_dir("qkscope_server_reports");
  Server server(model_path("bert.pt"), options(out, /*report_every=*/5));
  const auto requests = make_requests(kRequests, kMaxLength, 100, kSeed);
  Responses responses;
  std::mutex mutex;
  std::vector<ReportSummary> reports;
  server.run(requests, responses.callback(), [&](const ReportSummary& s) {
    std::lock_guard<std::mutex> lock(mutex);
    reports.push_back(s);
  });
  const size_t periodic = reports.size();
  EXPECT_GE(periodic, 1u);
  reports.push_back(server.report());

  std::vector<int64_t> sequences;
  int64_t tokens = 0;
  int number = 0;
  for (const ReportSummary& r : reports) {
    tokens += r.tokens;
    sequences.insert(sequences.end(), r.sequences.begin(), r.sequences.end());
    if (r.number == 0) {
      EXPECT_EQ(r.tokens, 0);
      continue;
    }
    EXPECT_EQ(r.number, ++number);
    EXPECT_EQ(fs::path(r.dir), out / ("report-" + std::to_string(r.number)));
    for (const char* file : {"heads.csv", "scales.csv", "ctable.json", "heatmaps.svg"})
      EXPECT_TRUE(fs::is_regular_file(fs::path(r.dir) / file)) << r.dir << "/" << file;
    std::ifstream heads(fs::path(r.dir) / "heads.csv");
    int lines = 0;
    for (std::string line; std::getline(heads, line);) ++lines;
    EXPECT_EQ(lines, 1 + 3 * 4);  // header, 3 layers x 4 heads
  }
  std::vector<int64_t> expected;
  for (const Request& r : requests)
    if (sampled(r.number)) expected.push_back(r.number);
  std::sort(sequences.begin(), sequences.end());
  EXPECT_EQ(sequences, expected);  // each sampled request in exactly one report
  EXPECT_EQ(tokens, sampled_tokens(requests));
  expect_responses(server, requests, responses);
  fs::remove_all(out);
}

// Generation mode on gpt2_cache: every request generates 6 tokens greedily with the cache, one
// forward per token, on 4 workers; each sampled request reaches the store whole (through a
// SequenceAssembler of its own), equal to a one-forward capture of its generated sequence.
TEST(ServerExampleTest, GenerationModeCapturesWholeGeneratedSequences) {
  constexpr int64_t kNew = 6, kGenRequests = 12;
  ServerOptions o = options(fresh_dir("qkscope_server_generate"));
  o.generate = kNew;
  o.cache_shape = {2, 4, 8};
  Server server(model_path("gpt2_cache.pt"), o);
  ASSERT_EQ(server.vocab_size(), 100);
  const auto requests = make_requests(kGenRequests, 8, 100, kSeed);
  std::mutex mutex;
  std::map<int64_t, at::Tensor> generated;
  std::set<std::thread::id> threads;
  const RunStats stats = server.run(requests, [&](const Request& r, const c10::IValue& out, bool) {
    std::lock_guard<std::mutex> lock(mutex);
    generated[r.number] = out.toTensor();
    threads.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(stats.requests, kGenRequests);
  EXPECT_GE(threads.size(), 2u) << "the requests were not served concurrently";

  // Each response is what the plain model generates from the prompt, step by step.
  const CaptureModule& module = server.module();
  int64_t fed = 0, n_sampled = 0;
  for (const Request& r : requests) {
    SCOPED_TRACE("request " + std::to_string(r.number));
    fed += r.length + kNew - 1;
    n_sampled += sampled(r.number);
    at::Tensor ids = torch::tensor(std::vector<int64_t>(r.input_ids.begin(),
                                                        r.input_ids.begin() + r.length),
                                   torch::kLong).view({1, r.length});
    at::Tensor mask = torch::ones_like(ids), step = ids;
    at::Tensor pk = torch::zeros({2, 1, 4, 0, 8}), pv = pk.clone();
    for (int64_t n = 0; n < kNew; ++n) {
      const c10::IValue out = module.forward_original({step, mask, pk, pv});
      const auto& e = out.toTupleRef().elements();
      pk = e[1].toTensor();
      pv = e[2].toTensor();
      at::Tensor logits = e[0].toTensor();
      step = logits.select(1, logits.size(1) - 1).argmax(-1, true);
      ids = torch::cat({ids, step}, 1);
      mask = torch::cat({mask, torch::ones_like(step)}, 1);
    }
    ASSERT_EQ(generated.count(r.number), 1u);
    EXPECT_TRUE(torch::equal(generated[r.number], ids));
  }
  EXPECT_EQ(stats.tokens, fed);
  EXPECT_EQ(stats.captured, n_sampled);

  const QkData data = server.take_captured();
  ASSERT_NO_THROW(validate(data, "server store"));
  EXPECT_EQ(data.sequences_seen, n_sampled);
  // The one-forward capture of each sampled request's generated sequence (full mask, empty
  // past), without its last token, which the generation never fed to the model.
  QkStore store;
  StoreSink sink(store);
  for (const Request& r : requests) {
    if (!sampled(r.number)) continue;
    const at::Tensor ids = generated[r.number];
    CaptureSession session(sink);
    module.forward({ids, torch::ones_like(ids), torch::zeros({2, 1, 4, 0, 8}),
                    torch::zeros({2, 1, 4, 0, 8})},
                   {r.number});
  }
  const QkData whole = store.take();
  std::vector<size_t> kept;
  std::map<int64_t, int64_t> lengths;
  for (const Request& r : requests) lengths[r.number] = r.length;
  for (size_t t = 0; t < whole.sequence.size(); ++t)
    if (whole.position[t] < lengths[whole.sequence[t]] + kNew - 1) kept.push_back(t);
  ASSERT_EQ(data.n_tokens(), static_cast<int64_t>(kept.size()));
  for (size_t i = 0; i < kept.size(); ++i) {
    ASSERT_EQ(data.sequence[i], whole.sequence[kept[i]]);
    ASSERT_EQ(data.position[i], whole.position[kept[i]]);
    ASSERT_EQ(data.token_id[i], whole.token_id[kept[i]]);
    ASSERT_EQ(data.token_id[i], generated[data.sequence[i]][0][data.position[i]].item<int64_t>());
  }
  ASSERT_EQ(data.sites.size(), 2u);
  for (size_t s = 0; s < data.sites.size(); ++s) {
    const size_t row = static_cast<size_t>(data.sites[s].n_heads) * data.sites[s].head_dim;
    ASSERT_EQ(row, 32u);
    for (size_t i = 0; i < kept.size(); ++i)
      for (size_t x = 0; x < row; ++x) {
        ASSERT_NEAR(data.sites[s].q[i * row + x], whole.sites[s].q[kept[i] * row + x], 1e-5);
        ASSERT_NEAR(data.sites[s].k[i * row + x], whole.sites[s].k[kept[i] * row + x], 1e-5);
      }
  }

  // Options and models the mode cannot serve.
  ServerOptions bad = o;
  bad.cache_shape = {2, 4};
  EXPECT_THROW(Server(model_path("gpt2_cache.pt"), bad), UsageError);
  try {
    Server bert(model_path("bert.pt"), o);
    FAIL() << "bert.pt was accepted for generation";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--generate expects forward(input_ids, attention_mask, "
                                         "past_k, past_v)"),
              std::string::npos)
        << e.what();
  }
}

TEST(ServerExampleTest, RejectsModelsAndOptionsItCannotServe) {
  const ServerOptions ok = options(fresh_dir("qkscope_server_errors"));
  try {
    Server server(model_path("vit.pt"), ok);
    FAIL() << "vit.pt was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected forward(input_ids, attention_mask)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Server(model_path("missing.pt"), ok), Error);
  ServerOptions bad = ok;
  bad.threads = 0;
  EXPECT_THROW(Server(model_path("bert.pt"), bad), UsageError);
  bad = ok;
  bad.sample_every = 0;
  EXPECT_THROW(Server(model_path("bert.pt"), bad), UsageError);
  EXPECT_THROW(make_requests(3, 0, 100, 0), UsageError);
}

// The program: argv in, exit status, one-line errors, reports out.
struct ProgramResult {
  int status = -1;
  std::string out, err;
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ProgramResult run_program(const std::string& args) {
  const fs::path out = fresh_dir("qkscope_server_stdout"), err = fresh_dir("qkscope_server_stderr");
  const std::string cmd = std::string(QKSCOPE_SERVER_EXAMPLE_EXE) + " " + args + " >" +
                          out.string() + " 2>" + err.string() + " </dev/null";
  const int raw = std::system(cmd.c_str());
  ProgramResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = read_text(out);
  r.err = read_text(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

size_t count_lines(const std::string& text) {
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

TEST(ServerExampleTest, ProgramServesReportsAndExitsWithItsStatus) {
  const fs::path out = fresh_dir("qkscope_server_program");
  const std::string model = model_path("bert.pt");
  ProgramResult r = run_program("--model " + model + " --out " + out.string() +
                                " --threads 3 --requests 24 --sample-every 4 --report-every 10 --seed 3");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  EXPECT_NE(r.out.find("served 24 requests"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("captured 6 (one in 4)"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::is_regular_file(out / "report-1" / "heads.csv")) << r.out;

  r = run_program("--model " + model + " --out " + out.string() + " --threads 0");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("--threads"), std::string::npos) << r.err;
  r = run_program("--model " + model);  // no --out
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  r = run_program("--model " + model + " --out " + out.string() + " --max-length 65");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("64 positions"), std::string::npos) << r.err;
  r = run_program("--model " + model_path("missing.pt") + " --out " + out.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("missing.pt"), std::string::npos) << r.err;
  r = run_program("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("--sample-every"), std::string::npos);
  EXPECT_NE(r.out.find("--generate"), std::string::npos);

  // Generation mode.
  const std::string gpt2 = model_path("gpt2_cache.pt");
  r = run_program("--model " + gpt2 + " --out " + out.string() +
                  " --threads 3 --requests 12 --sample-every 4 --report-every 6 --max-length 8"
                  " --generate 5 --cache-shape 2,4,8 --seed 3");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  EXPECT_NE(r.out.find("served 12 requests, 5 new tokens each"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("captured 3 (one in 4)"), std::string::npos) << r.out;
  r = run_program("--model " + gpt2 + " --out " + out.string() + " --generate 5");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--cache-shape"), std::string::npos) << r.err;
  fs::remove_all(out);
}

// Sequence identities: prefix << 40 | request number, the prefix checked, the count bounded.
TEST(ServerExampleTest, SequenceIdentitiesArePrefixedAndBounded) {
  const tools::SequenceIdentity seven(7, "test");
  EXPECT_EQ(seven.sequence(3), (int64_t{7} << 40) + 3);
  EXPECT_EQ(seven.sequence(tools::kMaxRequests - 1), (int64_t{8} << 40) - 1);
  EXPECT_LT(tools::SequenceIdentity(8191, "t").sequence(tools::kMaxRequests - 1),
            int64_t{1} << 53);  // exact as a double (the HTML report's JavaScript)
  EXPECT_THROW(seven.sequence(tools::kMaxRequests), Error);
  EXPECT_THROW(seven.sequence(-1), Error);
  EXPECT_THROW(tools::SequenceIdentity(8192, "t"), UsageError);
  EXPECT_THROW(tools::SequenceIdentity(-1, "t"), UsageError);
  const SequenceRange r = seven.range(2, 5);
  EXPECT_EQ(r.begin, (int64_t{7} << 40) + 2);
  EXPECT_EQ(r.end, (int64_t{7} << 40) + 5);
  EXPECT_EQ(r.source.rfind("test:", 0), 0u) << r.source;
  EXPECT_NE(r.source.find(":" + std::to_string(::getpid()) + ":"), std::string::npos) << r.source;
  const tools::SequenceIdentity drawn(std::nullopt, "t");
  EXPECT_TRUE(drawn.random());
  EXPECT_GE(drawn.prefix(), 0);
  EXPECT_LE(drawn.prefix(), tools::kMaxSequencePrefix);
  try {
    make_requests(tools::kMaxRequests + 1, 8, 100, 0);
    FAIL() << "2^40 + 1 requests were accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("2^40"), std::string::npos) << e.what();
  }
}

// Reports taken while the workers serve (from the response callback of requests 20 and 30,
// and at the end) hold disjoint sets of sampled requests in completion order; their sequences.*
// ranges (runs of sampled requests) never overlap, so capture --qk merges them into the tables
// of all sampled requests put together here.
TEST(ServerExampleTest, ReportsTakenMidRunHaveDisjointRangesAndMerge) {
  const fs::path out = fresh_dir("qkscope_server_midrun");
  Server server(model_path("bert.pt"), options(out));
  const auto requests = make_requests(kRequests, kMaxLength, 100, kSeed);
  server.run(requests, [&](const Request& r, const c10::IValue&, bool) {
    if (r.number == 20 || r.number == 30) server.report();  // thread-safe, from a worker
  });
  server.report();
  std::vector<QkData> parts;
  std::string args = "--qk";
  std::set<int64_t> held;
  for (int n = 1; fs::exists(out / ("report-" + std::to_string(n))); ++n) {
    const fs::path f = out / ("report-" + std::to_string(n)) / "qk.safetensors";
    const StoreFile file = read_store_file(f.string());
    const auto ranges = read_sequence_ranges(file.metadata, file.kept, f.string());
    ASSERT_FALSE(ranges.empty()) << f;
    for (const SequenceRange& r : ranges)  // a range starts and ends at sampled requests
      EXPECT_TRUE(sampled(r.begin) && sampled(r.end - 1)) << r.begin << ":" << r.end;
    for (int64_t seq : file.kept.sequence) held.insert(seq);
    parts.push_back(file.kept);
    args += " " + f.string();
  }
  ASSERT_GE(parts.size(), 2u);  // requests 24.. cannot have started when request 20 ended
  std::set<int64_t> expected;
  for (const Request& r : requests)
    if (sampled(r.number)) expected.insert(r.number);
  EXPECT_EQ(held, expected);
  write_qk_file((out / "joined.safetensors").string(), qkscope::testing::put_together(parts));
  const auto merged = qkscope::testing::run_capture(args + " --out " + (out / "merged").string());
  ASSERT_EQ(merged.status, 0) << merged.err;
  const auto joined = qkscope::testing::run_capture(
      "--qk " + (out / "joined.safetensors").string() + " --out " + (out / "joined").string());
  ASSERT_EQ(joined.status, 0) << joined.err;
  EXPECT_EQ(read_text(out / "merged" / "heads.csv"), read_text(out / "joined" / "heads.csv"));
  fs::remove_all(out);
}

// The qk.safetensors of every report of a process ends with periodic reports (prefix 1) and of
// another process (prefix 2) merge with capture --qk into the tables of their tokens put
// together here; the ranges of one process's reports are disjoint. A restart with prefix 1
// is refused as overlapping; a process without --sequence-prefix draws one and says which.
TEST(ServerExampleTest, ReportsOfTwoProcessesMergeWithCaptureQk) {
  const fs::path out = fresh_dir("qkscope_server_merge");
  const std::string model = model_path("bert.pt");
  auto run = [&](const std::string& dir, const std::string& args) {
    const ProgramResult r = run_program("--model " + model + " --out " + (out / dir).string() +
                                        " --threads 3 --sample-every 4 " + args);
    EXPECT_EQ(r.status, 0) << r.err;
    return r;
  };
  run("p1", "--requests 40 --report-every 9 --seed 3 --sequence-prefix 1");
  run("p2", "--requests 12 --seed 4 --sequence-prefix 2");
  std::vector<fs::path> files;
  for (const char* dir : {"p1", "p2"})
    for (int n = 1; fs::exists(out / dir / ("report-" + std::to_string(n))); ++n)
      files.push_back(out / dir / ("report-" + std::to_string(n)) / "qk.safetensors");
  ASSERT_GE(files.size(), 2u) << "expected p1's and p2's reports";

  std::vector<QkData> parts;
  std::set<int64_t> p1_sequences;
  std::string args = "--qk";
  fs::path first_of_p1;  // the file holding p1's request 0
  for (const fs::path& f : files) {
    SCOPED_TRACE(f.string());
    const StoreFile file = read_store_file(f.string());
    const auto ranges = read_sequence_ranges(file.metadata, file.kept, f.string());
    ASSERT_GE(ranges.size(), 1u);
    const int64_t prefix = f.string().find("/p1/") != std::string::npos ? 1 : 2;
    for (const SequenceRange& r : ranges) {
      EXPECT_EQ(r.begin >> 40, prefix);
      EXPECT_EQ(r.source.rfind("server-example:", 0), 0u) << r.source;
    }
    for (int64_t s : file.kept.sequence) {
      EXPECT_EQ(s >> 40, prefix);
      EXPECT_EQ((s & ((int64_t{1} << 40) - 1)) % 4, 0) << "not a sampled request";
      if (prefix == 1) p1_sequences.insert(s);
    }
    if (std::count(file.kept.sequence.begin(), file.kept.sequence.end(), int64_t{1} << 40) > 0)
      first_of_p1 = f;
    parts.push_back(file.kept);
    args += " " + f.string();
  }
  EXPECT_EQ(p1_sequences.size(), 10u);  // requests 0, 4, ..., 36: each in one report
  write_qk_file((out / "joined.safetensors").string(), qkscope::testing::put_together(parts));
  const auto merged = qkscope::testing::run_capture(args + " --out " + (out / "merged").string() + " --quiet");
  ASSERT_EQ(merged.status, 0) << merged.err;
  const auto joined = qkscope::testing::run_capture("--qk " + (out / "joined.safetensors").string() +
                                           " --out " + (out / "joined").string() + " --quiet");
  ASSERT_EQ(joined.status, 0) << joined.err;
  EXPECT_EQ(read_text(out / "merged" / "heads.csv"), read_text(out / "joined" / "heads.csv"));
  EXPECT_EQ(read_text(out / "merged" / "scales.csv"), read_text(out / "joined" / "scales.csv"));

  // Restarted with prefix 1: its request 0 is p1's request 0 again.
  run("p3", "--requests 8 --sequence-prefix 1");
  ASSERT_FALSE(first_of_p1.empty());
  const auto refused = qkscope::testing::run_capture("--qk " + first_of_p1.string() + " " +
                                            (out / "p3" / "report-1" / "qk.safetensors").string() +
                                            " --out " + (out / "refused").string());
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.err.find("both drew sequences"), std::string::npos) << refused.err;

  // No flag: a random prefix, printed, and the one the file uses.
  const ProgramResult drawn = run("p4", "--requests 4");
  const std::string marker = "sequence prefix ";
  const size_t at = drawn.out.find(marker);
  ASSERT_NE(at, std::string::npos) << drawn.out;
  const int64_t prefix = std::stoll(drawn.out.substr(at + marker.size()));
  EXPECT_NE(drawn.out.find("(random)"), std::string::npos) << drawn.out;
  const QkData d = read_qk_file((out / "p4" / "report-1" / "qk.safetensors").string());
  ASSERT_GT(d.n_tokens(), 0);
  EXPECT_EQ(d.sequence[0], prefix << 40);
  const ProgramResult bad = run_program("--model " + model + " --out " + (out / "p5").string() +
                                        " --sequence-prefix 8192");
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("--sequence-prefix"), std::string::npos) << bad.err;
  fs::remove_all(out);
}

}  // namespace
}  // namespace qkscope::server
