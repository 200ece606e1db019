// CaptureModule on the generated reference models: q/k against the Python references, outputs
// unchanged, site metadata, sessions, threads, errors, sinks and run_model.
#include <gtest/gtest.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "plugin_test_util.h"
#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/model_runner.h"
#include "qkscope/error.h"
#include "qkscope/qk_file.h"

namespace qkscope::test {
namespace {

struct Fixture {
  CaptureModule module;
  std::map<std::string, at::Tensor> inputs;  // by argument name
  std::map<std::string, at::Tensor> ref;
  std::map<std::string, std::string> meta;

  std::vector<c10::IValue> args() const {
    std::vector<c10::IValue> out;
    for (const std::string& name : module.argument_names()) out.emplace_back(inputs.at(name));
    return out;
  }
};

Fixture load_fixture(const std::string& name) {
  Fixture f{CaptureModule::load(model_path(name + ".pt")), {}, {}, {}};
  f.inputs = read_tensors(SafetensorsFile::open(model_path(name + "_inputs.safetensors")));
  SafetensorsFile ref = SafetensorsFile::open(model_path(name + "_ref.safetensors"));
  f.ref = read_tensors(ref);
  f.meta = ref.metadata();
  return f;
}

at::Tensor first_tensor(const c10::IValue& v) {
  if (v.isTensor()) return v.toTensor();
  if (v.isTuple()) return first_tensor(v.toTupleRef().elements().at(0));
  if (v.isList()) return first_tensor(v.toListRef().at(0));
  throw std::runtime_error("no tensor in output");
}

// Checks one forward's captures against the [B, H, S, D] references, token by token.
void expect_matches_reference(const Fixture& f, const std::vector<Captured>& batches,
                              int64_t first_sequence, const std::vector<int>& heads = {}) {
  const int n_sites = std::stoi(f.meta.at("layers"));
  ASSERT_EQ(static_cast<int>(batches.size()), n_sites);
  at::Tensor mask;
  if (f.inputs.count("attention_mask")) mask = f.inputs.at("attention_mask").ne(0);
  for (int layer = 0; layer < n_sites; ++layer) {
    const Captured& c = batches[layer];
    SCOPED_TRACE("site " + std::to_string(layer));
    EXPECT_EQ(c.layer, layer);
    EXPECT_EQ(c.module, f.meta.at("layer" + std::to_string(layer) + ".module"));
    // The model's own constant, which may be a float32 tensor: equal to float precision.
    const double prescale = std::stod(f.meta.at("layer" + std::to_string(layer) + ".prescale"));
    EXPECT_NEAR(c.prescale, prescale, 1e-6 * prescale);
    EXPECT_EQ(c.n_heads, std::stoi(f.meta.at("n_heads")));
    EXPECT_EQ(c.head_dim, std::stoi(f.meta.at("head_dim")));
    at::Tensor rq = f.ref.at("layer" + std::to_string(layer) + ".q");
    at::Tensor rk = f.ref.at("layer" + std::to_string(layer) + ".k");
    const int64_t B = rq.size(0), H = rq.size(1), S = rq.size(2), D = rq.size(3);
    std::vector<int> want = heads;
    if (want.empty())
      for (int h = 0; h < H; ++h) want.push_back(h);
    ASSERT_EQ(c.batch_heads, static_cast<int>(want.size()));
    size_t t = 0;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t s = 0; s < S; ++s) {
        if (mask.defined() && !mask[b][s].item<bool>()) continue;
        ASSERT_LT(t, c.sequence.size());
        EXPECT_EQ(c.sequence[t], first_sequence + b);
        EXPECT_EQ(c.position[t], s);
        if (f.inputs.count("input_ids")) {
          ASSERT_EQ(c.token_id.size(), c.sequence.size());
          EXPECT_EQ(c.token_id[t], f.inputs.at("input_ids")[b][s].item<int64_t>());
        } else {
          EXPECT_TRUE(c.token_id.empty());
        }
        for (size_t j = 0; j < want.size(); ++j) {
          for (int64_t d = 0; d < D; ++d) {
            const size_t at = (t * want.size() + j) * D + d;
            ASSERT_NEAR(c.q[at], rq[b][want[j]][s][d].item<float>(), 1e-5)
                << "q b=" << b << " s=" << s << " h=" << want[j] << " d=" << d;
            ASSERT_NEAR(c.k[at], rk[b][want[j]][s][d].item<float>(), 1e-5)
                << "k b=" << b << " s=" << s << " h=" << want[j] << " d=" << d;
          }
        }
        ++t;
      }
    }
    EXPECT_EQ(t, c.sequence.size()) << "padding tokens were captured";
  }
}

class FamilyTest : public ::testing::TestWithParam<std::string> {};

// The sites that are layers: captured, and numbered (at load, or when first run for sites in
// control flow).
std::vector<SiteDescription> layers(const CaptureModule& module) {
  std::vector<SiteDescription> out;
  for (const SiteDescription& s : module.sites())
    if (s.skipped.empty() && s.layer >= 0) out.push_back(s);
  return out;
}

bool has_dynamic_layers(const CaptureModule& module) {
  for (const SiteDescription& s : module.sites())
    if (s.skipped.empty() && s.layer < 0) return true;
  return false;
}

std::string meta_or(const Fixture& f, const std::string& key, const std::string& fallback) {
  auto it = f.meta.find(key);
  return it == f.meta.end() ? fallback : it->second;
}

TEST_P(FamilyTest, CapturesReferenceQkAndKeepsOutputs) {
  // SDPA models exist where torch 2.x generated them (the LibTorch 2.6 leg).
  if (GetParam().rfind("sdpa_", 0) == 0 && !std::filesystem::exists(model_path(GetParam() + ".pt")))
    GTEST_SKIP() << GetParam() << ": SDPA models are generated by torch 2.x only";
  Fixture f = load_fixture(GetParam());
  const int n_sites = std::stoi(f.meta.at("layers"));
  // Scripted models with both of torch.nn's paths number their layers when they first run.
  const bool dynamic = has_dynamic_layers(f.module);
  if (!dynamic) {
    ASSERT_EQ(static_cast<int>(layers(f.module).size()), n_sites) << format_sites(f.module.sites());
  }
  for (const SiteDescription& s : layers(f.module)) {
    EXPECT_EQ(s.module, f.meta.at("layer" + std::to_string(s.layer) + ".module"));
    EXPECT_EQ(s.kind, meta_or(f, "layer" + std::to_string(s.layer) + ".form", "matmul"));
    EXPECT_EQ(s.n_heads, -1);  // loaded graphs carry no shapes: known after a forward
  }

  // Run k of the instrumented module against run k of the original: the executor optimises
  // after its profiling runs, so only equal run numbers are comparable.
  std::vector<c10::IValue> original, instrumented;
  for (int i = 0; i < 3; ++i) original.push_back(f.module.forward_original(f.args()));
  instrumented.push_back(f.module.forward(f.args()));  // no session
  RecordingSink sink1, sink2;
  {
    CaptureSession session(sink1, 0);
    instrumented.push_back(f.module.forward(f.args()));
  }
  {
    CaptureSession session(sink2, 10);
    instrumented.push_back(f.module.forward(f.args()));
  }
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(ivalue_equal(original[i], instrumented[i])) << "run " << i;
  EXPECT_TRUE(torch::allclose(first_tensor(instrumented[2]), f.ref.at("output"), 1e-5, 1e-5));

  expect_matches_reference(f, sink1.batches, 0);
  expect_matches_reference(f, sink2.batches, 10);
  EXPECT_EQ(sink1.prepares, 1);
  EXPECT_EQ(sink2.prepares, 1);
  ASSERT_EQ(static_cast<int>(layers(f.module).size()), n_sites) << format_sites(f.module.sites());
  for (const SiteDescription& s : layers(f.module)) {
    EXPECT_EQ(s.module, f.meta.at("layer" + std::to_string(s.layer) + ".module"));
    EXPECT_EQ(s.kind, meta_or(f, "layer" + std::to_string(s.layer) + ".form", "matmul"));
    EXPECT_EQ(s.n_heads, std::stoi(f.meta.at("n_heads")));
    EXPECT_EQ(s.head_dim, std::stoi(f.meta.at("head_dim")));
  }
}

// HuggingFace eager exports, then the other attention forms (models/forms_models.py).
INSTANTIATE_TEST_SUITE_P(Models, FamilyTest,
                         ::testing::Values("bert", "gpt2", "distilbert", "llama", "t5", "vit",
                                           "bert_scripted", "nn_encoder", "nn_encoder_seq_first",
                                           "nn_mha", "fairseq", "einsum_bqhd", "einsum_bhid",
                                           "k_scaled", "k_permuted", "tied_lm", "cross_decoder",
                                           "nn_encoder_fused", "nn_encoder_fused_nested",
                                           "nn_encoder_scripted"));
// HuggingFace-style SDPA attention (models/sdpa_models.py), LibTorch 2.x only.
INSTANTIATE_TEST_SUITE_P(SdpaModels, FamilyTest,
                         ::testing::Values("sdpa_bert", "sdpa_gpt2", "sdpa_llama"));

TEST(CaptureModuleTest, DistilbertRecordsPrescaleAndCapturesQBeforeIt) {
  Fixture f = load_fixture("distilbert");
  const double d = std::stod(f.meta.at("head_dim"));
  for (const SiteDescription& s : f.module.sites()) EXPECT_NEAR(s.prescale, 1 / std::sqrt(d), 1e-15);
  RecordingSink sink;
  {
    CaptureSession session(sink);
    f.module.forward(f.args());
  }
  // The reference q is the unscaled projection: a q captured after the division would be off
  // by sqrt(d).
  expect_matches_reference(f, sink.batches, 0);
}

TEST(CaptureModuleTest, NoSessionMakesNoCopyAndSinkSeesNothing) {
  Fixture f = load_fixture("bert");
  RecordingSink sink;
  const int64_t before = detail::capture_copies();
  f.module.forward(f.args());
  f.module.forward(f.args());
  EXPECT_EQ(detail::capture_copies(), before);
  EXPECT_TRUE(sink.batches.empty());
  {
    CaptureSession session(sink);
    sink.want_nothing = true;
    f.module.forward(f.args());
  }
  EXPECT_EQ(detail::capture_copies(), before);
  EXPECT_TRUE(sink.batches.empty());
  {
    CaptureSession session(sink);
    sink.want_nothing = false;
    f.module.forward(f.args());
  }
  EXPECT_EQ(detail::capture_copies(), before + 2 * static_cast<int64_t>(f.module.sites().size()));
  // A session on another thread does not capture this thread's forwards.
  RecordingSink other;
  std::thread t([&] { CaptureSession session(other); });
  t.join();
  f.module.forward(f.args());
  EXPECT_TRUE(other.batches.empty());
}

// Node kinds of a block and its sub-blocks, leaving out `skip`. aten::size nodes that read a
// graph input (through its profiling node) are counted apart, as "size-of-input", and so are
// those profiling nodes ("profile-of-input-size").
bool reads_graph_input(torch::jit::Node* n) {
  torch::jit::Value* v = n->input(0);
  if (v->node()->kind() == c10::Symbol::fromQualString("prim::profile")) v = v->node()->input(0);
  return v->node()->kind() == c10::Symbol::fromQualString("prim::Param");
}

void count_kinds(torch::jit::Block* block, const std::set<torch::jit::Node*>& skip,
                 std::map<std::string, int>& out) {
  for (torch::jit::Node* n : block->nodes()) {
    if (!skip.count(n)) {
      std::string kind = n->kind().toQualString();
      if (kind == "aten::size" && reads_graph_input(n)) {
        kind = "size-of-input";
        if (n->input(0)->node()->kind() == c10::Symbol::fromQualString("prim::profile"))
          ++out["profile-of-input-size"], --out["prim::profile"];
      }
      ++out[kind];
    }
    for (torch::jit::Block* b : n->blocks()) count_kinds(b, skip, out);
  }
}

// The capture nodes and every node that only feeds them (their operands' profiling nodes, the
// site and scale constants, a size read for the scale): what instrumentation adds to the graph.
std::set<torch::jit::Node*> capture_only_nodes(torch::jit::Graph& g) {
  std::set<torch::jit::Node*> out;
  std::vector<torch::jit::Node*> nodes;
  for (torch::jit::Node* n : g.nodes()) nodes.push_back(n);  // the top block: no branches here
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    torch::jit::Node* n = *it;
    bool only = n->kind().toQualString() == std::string("qkscope::capture");
    if (!only && n->outputs().size() > 0 && n->blocks().empty()) {
      only = true;
      for (torch::jit::Value* v : n->outputs())
        for (const torch::jit::Use& u : v->uses()) only = only && out.count(u.user) > 0;
    }
    if (only) out.insert(n);
  }
  return out;
}

// The executor optimises the instrumented graph as it does the plain one: apart from the
// capture ops and what feeds only them, the graphs it ran over forwards of varying shapes hold
// the same nodes (no copy, no contiguous(), no product or view more or less). One difference is
// known and allowed: the capture op is CONSERVATIVE (it has side effects, so it is not
// eliminated), and for alias analysis it may write to the graph's inputs, so common-
// subexpression elimination no longer merges repeated size reads of an input (BERT reads
// input_ids.size(1) in BertModel and again in BertEmbeddings: one aten::size and its profiling
// node more, a few microseconds of a forward).
TEST(CaptureModuleTest, ExecutedGraphIsThePlainOnePlusCaptureNodes) {
  Fixture f = load_fixture("bert");
  std::vector<std::vector<c10::IValue>> batches = {f.args(), f.args()};
  std::vector<c10::IValue> shorter;  // the same rows, fewer tokens: another shape
  for (const std::string& name : f.module.argument_names())
    shorter.emplace_back(f.inputs.at(name).narrow(1, 0, f.inputs.at(name).size(1) / 2));
  batches.push_back(shorter);
  batches.push_back(f.args());
  RecordingSink sink;
  std::shared_ptr<torch::jit::Graph> plain, instrumented;
  for (const auto& args : batches) {
    f.module.forward_original(args);
    plain = torch::jit::lastExecutedOptimizedGraph();
    CaptureSession session(sink);
    f.module.forward(args);
    instrumented = torch::jit::lastExecutedOptimizedGraph();
  }
  ASSERT_TRUE(plain && instrumented);
  ASSERT_NE(plain.get(), instrumented.get());
  std::map<std::string, int> plain_kinds, instrumented_kinds;
  count_kinds(plain->block(), {}, plain_kinds);
  const std::set<torch::jit::Node*> added = capture_only_nodes(*instrumented);
  count_kinds(instrumented->block(), added, instrumented_kinds);
  // The allowed difference: input size reads not merged, each with its profiling node.
  const int unmerged = instrumented_kinds["size-of-input"] - plain_kinds["size-of-input"];
  EXPECT_GE(unmerged, 0);
  EXPECT_EQ(instrumented_kinds["profile-of-input-size"] - plain_kinds["profile-of-input-size"],
            unmerged);
  for (const char* kind : {"size-of-input", "profile-of-input-size"})
    instrumented_kinds.erase(kind), plain_kinds.erase(kind);
  EXPECT_EQ(instrumented_kinds, plain_kinds);
  int captures = 0;
  for (torch::jit::Node* n : added) captures += n->kind().toQualString() == std::string("qkscope::capture");
  EXPECT_EQ(captures, static_cast<int>(f.module.sites().size()));
  EXPECT_FALSE(sink.batches.empty());
}

TEST(CaptureModuleTest, SinkWantingOneHeadGetsOnlyThatHead) {
  Fixture f = load_fixture("llama");  // grouped-query keys: head 3 pairs with key head 1
  RecordingSink sink;
  sink.heads = {3};
  const int64_t before = detail::capture_copies();
  {
    CaptureSession session(sink);
    f.module.forward(f.args());
  }
  EXPECT_EQ(detail::capture_copies(), before + 2 * static_cast<int64_t>(f.module.sites().size()));
  for (const Captured& c : sink.batches) EXPECT_EQ(c.batch_heads, 1);
  expect_matches_reference(f, sink.batches, 0, {3});

  RecordingSink two;
  two.heads = {2, 0};
  {
    CaptureSession session(two);
    f.module.forward(f.args());
  }
  expect_matches_reference(f, two.batches, 0, {2, 0});
}

TEST(CaptureModuleTest, ExplicitSequenceIndices) {
  Fixture f = load_fixture("bert");
  RecordingSink sink;
  {
    CaptureSession session(sink);
    f.module.forward(f.args(), {7, 8, 9});
    EXPECT_EQ(session.next_sequence(), 0);  // explicit indices leave the counter alone
  }
  expect_matches_reference(f, sink.batches, 7);
  CaptureSession session(sink);
  EXPECT_THROW(f.module.forward(f.args(), {1, 2}), Error);
}

TEST(CaptureModuleTest, SinkErrorsAreRethrownAfterForward) {
  Fixture f = load_fixture("bert");
  CallbackSink sink([](const SiteDescription&, const QkBatch&) { throw Error("sink is full"); });
  CaptureSession session(sink);
  try {
    f.module.forward(f.args());
    FAIL() << "expected an exception";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "sink is full");
  }
  RecordingSink bad;
  bad.heads = {9};
  CaptureSession inner(bad);
  try {
    f.module.forward(f.args());
    FAIL() << "expected an exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("asked for head 9"), std::string::npos) << e.what();
  }
}

// Eight threads on one module: the even ones with their own session and sink, all with
// distinct inputs. Each session must get exactly what a single-threaded run gives it.
TEST(CaptureModuleTest, ConcurrentForwardsCaptureOnlyTheirOwnTokens) {
  Fixture f = load_fixture("bert");
  constexpr int kThreads = 8, kRuns = 3;
  std::vector<std::vector<c10::IValue>> inputs(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    at::Tensor ids = f.inputs.at("input_ids").roll(t, 0).clone();
    at::Tensor mask = f.inputs.at("attention_mask").roll(t + 1, 0).clone();
    ids = ((ids + t - 1) % 99 + 1) * mask;
    for (const std::string& name : f.module.argument_names())
      inputs[t].emplace_back(name == "input_ids" ? ids : mask);
  }
  std::vector<RecordingSink> expected(kThreads);
  std::vector<at::Tensor> expected_out(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    CaptureSession session(expected[t], 100 * t);
    for (int r = 0; r < kRuns; ++r) expected_out[t] = first_tensor(f.module.forward(inputs[t]));
  }
  std::vector<RecordingSink> got(kThreads);
  std::vector<at::Tensor> got_out(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::unique_ptr<CaptureSession> session;
      if (t % 2 == 0) session = std::make_unique<CaptureSession>(got[t], 100 * t);
      for (int r = 0; r < kRuns; ++r) got_out[t] = first_tensor(f.module.forward(inputs[t]));
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    SCOPED_TRACE("thread " + std::to_string(t));
    EXPECT_TRUE(torch::allclose(got_out[t], expected_out[t], 1e-6, 1e-6));
    if (t % 2 == 1) {
      EXPECT_TRUE(got[t].batches.empty());
      continue;
    }
    ASSERT_EQ(got[t].batches.size(), expected[t].batches.size());
    for (size_t i = 0; i < got[t].batches.size(); ++i) {
      const Captured& a = got[t].batches[i];
      const Captured& b = expected[t].batches[i];
      EXPECT_EQ(a.layer, b.layer);
      EXPECT_EQ(a.sequence, b.sequence);
      EXPECT_EQ(a.position, b.position);
      EXPECT_EQ(a.token_id, b.token_id);
      ASSERT_EQ(a.q.size(), b.q.size());
      for (size_t j = 0; j < a.q.size(); ++j) {
        ASSERT_NEAR(a.q[j], b.q[j], 1e-6);
        ASSERT_NEAR(a.k[j], b.k[j], 1e-6);
      }
    }
  }
}

void expect_load_error(const std::string& path, const std::vector<std::string>& parts) {
  try {
    CaptureModule::load(path);
    FAIL() << "expected an error loading " << path;
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "'" << e.what() << "' lacks '" << p << "'";
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
}

TEST(CaptureModuleTest, LoadErrorsAreClear) {
  expect_load_error(model_path("no_such_model.pt"), {"not found", "no_such_model.pt"});
  expect_load_error(model_path("not_torchscript.pt"), {"failed to load model", "not_torchscript.pt"});
  expect_load_error(model_path("corrupt.pt"), {"failed to load model", "corrupt.pt"});
  expect_load_error(model_path("mlp.pt"),
                    {"no attention site found in", "mlp.pt",
                     "aten::matmul", "aten::bmm", "aten::einsum", "reaches a softmax",
                     "scaled_dot_product_attention"});
}

TEST(CaptureModuleTest, ArgumentsAndSchema) {
  CaptureModule m = CaptureModule::load(model_path("bert.pt"));
  EXPECT_EQ(m.argument_names(), (std::vector<std::string>{"input_ids", "attention_mask"}));
  EXPECT_NE(m.forward_schema().find("forward(Tensor input_ids, Tensor attention_mask)"),
            std::string::npos) << m.forward_schema();
  CaptureModule vit = CaptureModule::load(model_path("vit.pt"));
  EXPECT_EQ(vit.argument_names(), (std::vector<std::string>{"pixel_values"}));
}

// ---- sinks over the store, and run_model ----------------------------------------------------

std::map<std::string, InputTensor> views(const std::map<std::string, at::Tensor>& tensors) {
  std::map<std::string, InputTensor> out;
  for (const auto& [name, t] : tensors) {
    InputTensor in;
    in.dtype = t.scalar_type() == at::kLong ? "I64" : "F32";
    in.shape = t.sizes().vec();
    in.data = t.data_ptr();
    out[name] = in;
  }
  return out;
}

QkData expected_qk(const Fixture& f) {
  RecordingSink sink;
  {
    CaptureSession session(sink);
    f.module.forward(f.args());
  }
  QkData d;
  for (const Captured& c : sink.batches) {
    SiteData s;
    s.layer = c.layer;
    s.module = c.module;
    s.prescale = c.prescale;
    s.n_heads = c.batch_heads;
    s.head_dim = c.head_dim;
    s.q = c.q;
    s.k = c.k;
    d.sites.push_back(s);
    d.sequence = c.sequence;
    d.position = c.position;
    d.token_id = c.token_id;
  }
  return d;
}

TEST(ModelRunnerTest, BatchesThreadsAndStoreSinkGiveTheSingleForwardTokens) {
  Fixture f = load_fixture("bert");
  QkData want = expected_qk(f);
  for (int threads : {1, 2}) {
    QkStore store;
    StoreSink sink(store);
    std::vector<std::pair<int64_t, int64_t>> progress;
    RunOptions options;
    options.batch_size = 2;
    options.threads = threads;
    options.progress = [&](int64_t done, int64_t total) { progress.emplace_back(done, total); };
    run_model(f.module, views(f.inputs), sink, options);
    ASSERT_EQ(progress.size(), 2u);
    EXPECT_EQ(progress.back(), std::make_pair(int64_t{3}, int64_t{3}));
    QkData got = store.take();
    ASSERT_EQ(got.sites.size(), want.sites.size());
    EXPECT_EQ(got.sequence, want.sequence);
    EXPECT_EQ(got.position, want.position);
    EXPECT_EQ(got.token_id, want.token_id);
    for (size_t i = 0; i < got.sites.size(); ++i) {
      EXPECT_EQ(got.sites[i].module, want.sites[i].module);
      ASSERT_EQ(got.sites[i].q.size(), want.sites[i].q.size());
      for (size_t j = 0; j < got.sites[i].q.size(); ++j) {
        ASSERT_NEAR(got.sites[i].q[j], want.sites[i].q[j], 1e-5);
        ASSERT_NEAR(got.sites[i].k[j], want.sites[i].k[j], 1e-5);
      }
    }
  }
}

TEST(ModelRunnerTest, ForwardErrorsGiveTheReasonAndTheFailingLineInOneLine) {
  // 100 tokens for a BERT with a 64-position table: the forward fails inside the interpreter.
  Fixture f = load_fixture("bert");
  CallbackSink sink([](const SiteDescription&, const QkBatch&) {});
  std::map<std::string, at::Tensor> long_inputs = {
      {"input_ids", torch::ones({2, 100}, at::kLong)},
      {"attention_mask", torch::ones({2, 100}, at::kLong)}};
  try {
    run_model(f.module, views(long_inputs), sink);
    FAIL();
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    EXPECT_NE(what.find("failed on input rows 0..1"), std::string::npos) << what;
    EXPECT_NE(what.find("RuntimeError: The expanded size of the tensor (100)"), std::string::npos) << what;
    EXPECT_NE(what.find("(at: "), std::string::npos) << what;
    EXPECT_EQ(what.find("The following operation failed"), std::string::npos) << what;
  }
}

TEST(ModelRunnerTest, BindingErrorsListTheSchema) {
  Fixture f = load_fixture("bert");
  CallbackSink sink([](const SiteDescription&, const QkBatch&) {});
  auto in = views(f.inputs);
  in["pixel_values"] = in["input_ids"];
  try {
    run_model(f.module, in, sink);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("input 'pixel_values' matches no argument"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("forward(Tensor input_ids, Tensor attention_mask)"),
              std::string::npos) << e.what();
  }
  auto only_mask = views(f.inputs);
  only_mask.erase("input_ids");
  try {
    run_model(f.module, only_mask, sink);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs argument 'input_ids'"), std::string::npos) << e.what();
  }
}

TEST(SinkTest, SafetensorsSinkWritesAQkFileWithFilteredHeads) {
  Fixture f = load_fixture("distilbert");
  const std::string path =
      (std::filesystem::temp_directory_path() / "qkscope_plugin_test_qk.safetensors").string();
  SiteFilter filter;
  filter.layers = {0, 2};
  filter.heads = {1};
  {
    SafetensorsSink sink(path, {}, filter);
    {
      CaptureSession session(sink);
      f.module.forward(f.args());
    }
    sink.close();
  }
  QkData got = read_qk_file(path);
  std::filesystem::remove(path);
  ASSERT_EQ(got.sites.size(), 2u);
  EXPECT_EQ(got.sites[0].layer, 0);
  EXPECT_EQ(got.sites[1].layer, 2);
  EXPECT_EQ(got.sites[1].module, "transformer.layer.2.attention");
  EXPECT_NEAR(got.sites[0].prescale, std::stod(f.meta.at("layer0.prescale")), 1e-15);
  EXPECT_EQ(got.sites[0].head_index, std::vector<int>{1});
  EXPECT_EQ(got.n_tokens(), 12 + 9 + 5);
  at::Tensor rq = f.ref.at("layer2.q");
  EXPECT_NEAR(got.sites[1].q[0], rq[0][1][0][0].item<float>(), 1e-5);
}

}  // namespace
}  // namespace qkscope::test
