// The graph pass, table-driven: TorchScript source -> the sites it must find (form, layer, scale
// and where it is, refusals), then the q/k captured from a forward against the unscaled q/k the
// module's own `reference` method computes, and prescale * q.k against its scores.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "plugin_test_util.h"
#include "qkscope/capture_module.h"
#include "qkscope/capture_session.h"
#include "qkscope/error.h"

namespace qkscope::test {
namespace {

// Every case works on x [B, T, E] with B = 2, T = 5, H = 3 heads of D = 4 (E = 12) and the
// projection weights wq, wk, wv [E, E]. `q(x)` / `k(x)` are the per-head [B, H, T, D] tensors.
constexpr int64_t B = 2, T = 5, H = 3, D = 4, E = H * D;

const char* kPrelude = R"(
def heads(self, t):
    return t.view(2, 5, 3, 4).permute(0, 2, 1, 3)

def q(self, x):
    return self.heads(torch.matmul(x, self.wq))

def k(self, x):
    return self.heads(torch.matmul(x, self.wk))

def v(self, x):
    return self.heads(torch.matmul(x, self.wv))
)";

struct ExpectedSite {
  std::string kind;
  int layer;                 // at load; -1: assigned when first executed (or skipped)
  double prescale;           // NaN: known only after a forward
  std::string scale_at;
  std::string skipped;       // substring of the reason; "" when captured
};

struct PassCase {
  std::string name;
  std::string forward;       // def forward(self, x, attention_mask): ...
  std::string reference;     // def reference(self, x) -> (q, k, scores) of the captured site, or ""
  std::vector<ExpectedSite> sites;
  double prescale_after = std::numeric_limits<double>::quiet_NaN();  // when known only at run time
};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<PassCase> cases() {
  return {
      {"hf_eager_scores_scaled",
       R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x), self.v(x)
    s = torch.matmul(q, k.transpose(-1, -2)) / 2.0
    return torch.matmul(s.softmax(-1), v)
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q, k.transpose(-1, -2)) / 2.0
)",
       {{"matmul", 0, 0.5, "scores", ""}}},
      {"q_scaled_before",
       R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x), self.v(x)
    s = torch.matmul(q * 0.5, k.transpose(2, 3))
    return torch.matmul(torch.softmax(s, -1), v)
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q * 0.5, k.transpose(2, 3))
)",
       {{"matmul", 0, 0.5, "q", ""}}},
      {"k_scaled_before_transpose",
       R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x), self.v(x)
    s = torch.matmul(q, (k * 0.25).transpose(-1, -2))
    return torch.matmul(s.softmax(-1), v)
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q, (k * 0.25).transpose(-1, -2))
)",
       {{"matmul", 0, 0.25, "k", ""}}},
      {"split_scale_and_scores",
       R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x), self.v(x)
    s = torch.matmul(q / 2.0, (k * 0.5).transpose(-1, -2)) * 3.0
    return torch.matmul(s.softmax(-1), v)
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q / 2.0, (k * 0.5).transpose(-1, -2)) * 3.0
)",
       {{"matmul", 0, 0.75, "q+k+scores", ""}}},
      {"shape_derived_scale",
       R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x), self.v(x)
    s = torch.matmul(q, k.transpose(-1, -2)) / q.size(-1) ** 0.5
    return torch.matmul(s.softmax(-1), v)
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q, k.transpose(-1, -2)) / 2.0
)",
       {{"matmul", 0, kNaN, "scores", ""}},
       0.5},
      {"data_dependent_factor_is_not_a_scale",
       R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x), self.v(x)
    s = torch.matmul(q * x.mean(), k.transpose(-1, -2))
    return torch.matmul(s.softmax(-1), v)
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q * x.mean(), k, torch.matmul(q * x.mean(), k.transpose(-1, -2))
)",
       {{"matmul", 0, 1.0, "", ""}}},
      {"keys_permuted_upstream",
       R"(
def forward(self, x, attention_mask):
    q, v = self.q(x), self.v(x)
    k = torch.matmul(x, self.wk).view(2, 5, 3, 4).permute(0, 2, 3, 1)
    s = torch.matmul(q, k) / 2.0
    return torch.matmul(s.softmax(-1), v)
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q, k.transpose(-1, -2)) / 2.0
)",
       {{"matmul", 0, 0.5, "scores", ""}}},
      {"bmm_heads_folded",
       R"(
def forward(self, x, attention_mask):
    q = self.q(x).reshape(6, 5, 4)
    k = self.k(x).reshape(6, 5, 4)
    s = torch.bmm(q, k.transpose(1, 2))
    return torch.bmm(s.softmax(-1), self.v(x).reshape(6, 5, 4))
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q, k.transpose(-1, -2))
)",
       {{"bmm", 0, 1.0, "", ""}}},
      {"baddbmm_alpha_and_fairseq_scale_before_reshape",
       R"(
def forward(self, x, attention_mask):
    qt = torch.matmul(x, self.wq) * 0.5
    q = qt.transpose(0, 1).reshape(5, 6, 4).transpose(0, 1)
    k = torch.matmul(x, self.wk).transpose(0, 1).reshape(5, 6, 4).transpose(0, 1)
    s = torch.baddbmm(torch.zeros(6, 5, 5), q, k.transpose(1, 2), beta=1.0, alpha=0.5)
    return torch.bmm(torch.softmax(s, -1), self.v(x).reshape(6, 5, 4))
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, 0.25 * torch.matmul(q, k.transpose(-1, -2))
)",
       {{"baddbmm", 0, 0.25, "q+scores", ""}}},
      {"in_place_scale",
       R"(
def forward(self, x, attention_mask):
    q = torch.matmul(x, self.wq)
    q.mul_(0.5)
    k = self.k(x)
    s = torch.matmul(self.heads(q), k.transpose(-1, -2))
    return torch.matmul(s.softmax(-1), self.v(x))
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, 0.5 * torch.matmul(q, k.transpose(-1, -2))
)",
       {{"matmul", 0, 0.5, "q", ""}}},
      {"einsum_token_major",
       R"(
def forward(self, x, attention_mask):
    q = torch.matmul(x, self.wq).view(2, 5, 3, 4)
    k = torch.matmul(x, self.wk).view(2, 5, 3, 4)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * 0.5
    return torch.matmul(s.softmax(-1), self.v(x))
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q, k.transpose(-1, -2)) * 0.5
)",
       {{"einsum", 0, 0.5, "scores", ""}}},
      {"einsum_heads_folded",
       R"(
def forward(self, x, attention_mask):
    q = self.q(x).reshape(6, 5, 4)
    k = self.k(x).reshape(6, 5, 4)
    s = torch.einsum("bid,bjd->bij", q, k)
    return torch.bmm(s.softmax(-1), self.v(x).reshape(6, 5, 4))
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q, k.transpose(-1, -2))
)",
       {{"einsum", 0, 1.0, "", ""}}},
      {"not_attention_products",  // an MLP product, p @ v, a tied output matrix
       R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x), self.v(x)
    h = torch.matmul(x, self.wv)
    s = torch.matmul(q, k.transpose(-1, -2))
    o = torch.matmul(s.softmax(-1), v)
    logits = torch.matmul(h, self.wq.transpose(0, 1))
    return o.sum() + logits.softmax(-1).sum()
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q, k.transpose(-1, -2))
)",
       {{"matmul", 0, 1.0, "", ""}}},
      {"negative_scale_refused",
       R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x), self.v(x)
    s = torch.matmul(q * -1.0, k.transpose(-1, -2))
    return torch.matmul(s.softmax(-1), v)
)",
       "",
       {{"matmul", -1, -1.0, "q", "expected a positive finite factor"}}},
      {"loop_refused",
       R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x), self.v(x)
    out = v
    for i in range(2):
        out = torch.matmul(torch.matmul(q, k.transpose(-1, -2)).softmax(-1), out)
    return out
)",
       "",
       {{"matmul", -1, 1.0, "", "prim::Loop"}}},
      {"cross_attention_refused",
       R"(
def forward(self, x, attention_mask):
    y = x * 2.0
    q, k, v = self.q(x), self.k(y), self.v(y)
    s = torch.matmul(q, k.transpose(-1, -2))
    return torch.matmul(s.softmax(-1), v)
)",
       "",
       {{"matmul", -1, 1.0, "", "cross-attention"}}},
      {"branches_numbered_when_run",
       R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x), self.v(x)
    if bool(x.sum() > -1.0e9):
        s = torch.matmul(q, k.transpose(-1, -2)) * 0.5
    else:
        s = torch.bmm(q.reshape(6, 5, 4), k.reshape(6, 5, 4).transpose(1, 2)).view(2, 3, 5, 5)
    return torch.matmul(s.softmax(-1), v)
)",
       R"(
def reference(self, x):
    q, k = self.q(x), self.k(x)
    return q, k, torch.matmul(q, k.transpose(-1, -2)) * 0.5
)",
       {{"matmul", -1, 0.5, "scores", ""}, {"bmm", -1, 1.0, "", ""}}},
  };
}

void PrintTo(const PassCase& c, std::ostream* os) { *os << c.name; }

class GraphPassTable : public ::testing::TestWithParam<PassCase> {};

torch::jit::Module define(const PassCase& c) {
  torch::jit::Module m("M");
  torch::manual_seed(7);
  for (const char* w : {"wq", "wk", "wv"})
    m.register_parameter(w, torch::randn({E, E}) / std::sqrt(double(E)), false);
  m.define(std::string(kPrelude) + c.forward + c.reference);
  return m;
}

TEST_P(GraphPassTable, FindsSitesAndCapturesUnscaledQk) {
  const PassCase& c = GetParam();
  torch::jit::Module m = define(c);
  CaptureModule cm = CaptureModule::instrument(m, c.name);
  auto sites = cm.sites();
  const std::string table = format_sites(sites);
  ASSERT_EQ(sites.size(), c.sites.size()) << table;
  for (size_t i = 0; i < sites.size(); ++i) {
    SCOPED_TRACE("site " + std::to_string(i) + "\n" + table);
    const ExpectedSite& want = c.sites[i];
    EXPECT_EQ(sites[i].kind, want.kind);
    EXPECT_EQ(sites[i].layer, want.layer);
    EXPECT_EQ(sites[i].scale_at, want.scale_at);
    if (std::isnan(want.prescale)) {
      EXPECT_FALSE(sites[i].prescale_known);
    } else {
      EXPECT_TRUE(sites[i].prescale_known);
      EXPECT_DOUBLE_EQ(sites[i].prescale, want.prescale);
    }
    if (want.skipped.empty()) {
      EXPECT_EQ(sites[i].skipped, "");
    } else {
      EXPECT_NE(sites[i].skipped.find(want.skipped), std::string::npos) << sites[i].skipped;
    }
  }

  at::Tensor x = torch::randn({B, T, E});
  at::Tensor mask = torch::ones({B, T}, at::kLong);  // gives the batch size to unfold B*H
  at::Tensor plain = m.forward({x, mask}).toTensor();
  RecordingSink sink;
  at::Tensor captured_out;
  {
    CaptureSession session(sink);
    captured_out = cm.forward({x, mask}).toTensor();
  }
  EXPECT_TRUE(torch::equal(plain, captured_out)) << "outputs changed by the capture";
  if (c.reference.empty()) {
    EXPECT_TRUE(sink.batches.empty());
    return;
  }
  ASSERT_EQ(sink.batches.size(), 1u) << format_sites(cm.sites());
  const Captured& got = sink.batches[0];
  EXPECT_EQ(got.layer, 0);
  if (!std::isnan(c.prescale_after)) {
    EXPECT_DOUBLE_EQ(got.prescale, c.prescale_after);
  }
  auto ref = m.get_method("reference")({x}).toTuple()->elements();
  at::Tensor rq = ref[0].toTensor(), rk = ref[1].toTensor(), scores = ref[2].toTensor();
  // Captured rows are tokens (b, t) row-major, then heads, then D.
  at::Tensor q = torch::from_blob(const_cast<float*>(got.q.data()), {B, T, H, D}).permute({0, 2, 1, 3});
  at::Tensor k = torch::from_blob(const_cast<float*>(got.k.data()), {B, T, H, D}).permute({0, 2, 1, 3});
  EXPECT_TRUE(torch::allclose(q, rq, 1e-6, 1e-6)) << (q - rq).abs().max();
  EXPECT_TRUE(torch::allclose(k, rk, 1e-6, 1e-6)) << (k - rk).abs().max();
  // SPEC 1: the model's scores are prescale * q.k.
  at::Tensor rebuilt = got.prescale * torch::matmul(q, k.transpose(-1, -2));
  EXPECT_TRUE(torch::allclose(rebuilt, scores, 1e-5, 1e-5)) << (rebuilt - scores).abs().max();
  EXPECT_EQ(got.sequence.size(), static_cast<size_t>(B * T));
  EXPECT_EQ(got.position[T + 1], 1);
  for (const SiteDescription& s : cm.sites()) {
    if (s.skipped.empty() && s.layer == 0) {
      EXPECT_TRUE(s.prescale_known);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Forms, GraphPassTable, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<PassCase>& info) {
                           return info.param.name;
                         });

TEST(GraphPassTest, SinkIsAskedBeforeShapesAreChecked) {
  // Keys that match neither the queries nor the mask (a form the pass cannot tell from the graph):
  // an error only for a sink that wants the site; a sink that does not want it runs through.
  torch::jit::Module m("M");
  for (const char* w : {"wq", "wk", "wv"}) m.register_parameter(w, torch::randn({E, E}), false);
  m.define(std::string(kPrelude) + R"(
def forward(self, x, attention_mask):
    q, k, v = self.q(x), self.k(x).narrow(2, 0, 3), self.v(x).narrow(2, 0, 3)
    return torch.matmul(torch.matmul(q, k.transpose(-1, -2)).softmax(-1), v)
)");
  CaptureModule cm = CaptureModule::instrument(m, "short_keys");
  ASSERT_EQ(cm.sites().size(), 1u);
  at::Tensor x = torch::randn({B, T, E}), mask = torch::ones({B, T}, at::kLong);
  RecordingSink nothing;
  nothing.want_nothing = true;
  {
    CaptureSession session(nothing);
    EXPECT_NO_THROW(cm.forward({x, mask}));
  }
  EXPECT_TRUE(nothing.batches.empty());
  RecordingSink all;
  try {
    CaptureSession session(all);
    cm.forward({x, mask});
    FAIL() << "expected a capture error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("5 queries and 3 keys"), std::string::npos) << e.what();
  }
}

TEST(GraphPassTest, NoScoreProductIsAClearError) {
  // A softmax over a product with a 2-D parameter (tied output embeddings) is no attention.
  torch::jit::Module m("M");
  m.register_parameter("w", torch::randn({8, 4}), false);
  m.define(R"(
def forward(self, x):
    return torch.matmul(x, self.w.transpose(0, 1)).softmax(-1)
)");
  try {
    CaptureModule::instrument(m, "two_d");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no attention site found in 'two_d'"), std::string::npos);
  }
}

TEST(GraphPassTest, ScaledDotProductAttention) {
  auto schema = c10::Dispatcher::singleton().findSchema({"aten::scaled_dot_product_attention", ""});
  if (!schema) GTEST_SKIP() << "aten::scaled_dot_product_attention is not in this LibTorch";
  const bool gqa = schema->schema().argumentIndexWithName("enable_gqa").has_value();
  torch::jit::Module m("M");
  m.define(gqa ? R"(
def forward(self, q, k, v):
    return torch.scaled_dot_product_attention(q, k, v, enable_gqa=True)
)" : R"(
def forward(self, q, k, v):
    return torch.scaled_dot_product_attention(q, k, v)
)");
  CaptureModule cm = CaptureModule::instrument(m, "sdpa");
  ASSERT_EQ(cm.sites().size(), 1u);
  EXPECT_EQ(cm.sites()[0].kind, "sdpa");
  EXPECT_EQ(cm.sites()[0].scale_at, "sdpa-default");
  const int64_t kv_heads = gqa ? 2 : 4;
  at::Tensor q = torch::randn({2, 4, 5, 8}), k = torch::randn({2, kv_heads, 5, 8});
  at::Tensor v = torch::randn({2, kv_heads, 5, 8});
  RecordingSink sink;
  {
    CaptureSession session(sink);
    cm.forward({q, k, v});
  }
  ASSERT_EQ(sink.batches.size(), 1u);
  EXPECT_DOUBLE_EQ(sink.batches[0].prescale, 1 / std::sqrt(8.0));
  at::Tensor k_full = k.repeat_interleave(4 / kv_heads, 1);
  EXPECT_TRUE(torch::equal(torch::from_blob(sink.batches[0].q.data(), {10, 4, 8}),
                           q.permute({0, 2, 1, 3}).reshape({10, 4, 8})));
  EXPECT_TRUE(torch::equal(torch::from_blob(sink.batches[0].k.data(), {10, 4, 8}),
                           k_full.permute({0, 2, 1, 3}).reshape({10, 4, 8})));
}

TEST(GraphPassTest, SdpaScaleArgumentIsThePrescale) {
  auto schema = c10::Dispatcher::singleton().findSchema({"aten::scaled_dot_product_attention", ""});
  if (!schema || !schema->schema().argumentIndexWithName("scale").has_value())
    GTEST_SKIP() << "aten::scaled_dot_product_attention(scale=) is not in this LibTorch";
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, q, k, v):
    return torch.scaled_dot_product_attention(q * 2.0, k, v, scale=0.125)
)");
  CaptureModule cm = CaptureModule::instrument(m, "sdpa_scale");
  ASSERT_EQ(cm.sites().size(), 1u);
  EXPECT_DOUBLE_EQ(cm.sites()[0].prescale, 0.25);
  EXPECT_EQ(cm.sites()[0].scale_at, "q+scores");
}

}  // namespace
}  // namespace qkscope::test
