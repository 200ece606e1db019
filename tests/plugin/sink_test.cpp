// The Torch-free part of the plugin: sessions, sinks over a QkStore, the site table.
#include <gtest/gtest.h>

#include <algorithm>

#include <thread>

#include "qkscope/capture_session.h"
#include "qkscope/capture_sink.h"
#include "qkscope/error.h"

namespace qkscope {
namespace {

SiteDescription site(int layer, const std::string& module, double prescale) {
  SiteDescription s;
  s.layer = s.site = layer;
  s.module = module;
  s.kind = "matmul";
  s.prescale = prescale;
  s.n_heads = 4;
  s.head_dim = 2;
  return s;
}

std::vector<SiteDescription> two_sites() {
  return {site(0, "encoder.layer.0.attention.self", 1.0),
          site(1, "encoder.layer.1.attention.self", 0.5)};
}

TEST(SessionTest, NestsAndStaysOnItsThread) {
  CallbackSink a([](const SiteDescription&, const QkBatch&) {});
  CallbackSink b([](const SiteDescription&, const QkBatch&) {});
  EXPECT_EQ(CaptureSession::current(), nullptr);
  {
    CaptureSession outer(a, 5);
    EXPECT_EQ(&CaptureSession::current()->sink(), &a);
    {
      CaptureSession inner(b);
      EXPECT_EQ(&CaptureSession::current()->sink(), &b);
      CaptureSession* seen = &inner;
      std::thread([&] { seen = CaptureSession::current(); }).join();
      EXPECT_EQ(seen, nullptr);
    }
    EXPECT_EQ(CaptureSession::current(), &outer);
    EXPECT_EQ(outer.take_sequences(3), 5);
    EXPECT_EQ(outer.next_sequence(), 8);
  }
  EXPECT_EQ(CaptureSession::current(), nullptr);
}

// One session per captured request, on many threads: the sink numbers their rows, so no two
// sequences share an index (a store would reject the second "sequence 0").
TEST(SinkTest, SessionsWithoutExplicitIndicesShareTheSinksNumbering) {
  CallbackSink sink([](const SiteDescription&, const QkBatch&) {});
  std::vector<int64_t> firsts(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      CaptureSession session(sink);
      firsts[t] = session.take_sequences(3);
    });
  for (auto& th : threads) th.join();
  std::sort(firsts.begin(), firsts.end());
  for (int t = 0; t < 8; ++t) EXPECT_EQ(firsts[t], 3 * t);
  EXPECT_EQ(sink.next_sequence(), 24);
}

TEST(SinkTest, DefaultSinkWantsAllHeads) {
  CallbackSink sink([](const SiteDescription&, const QkBatch&) {});
  EXPECT_EQ(sink.wants_heads(two_sites()[0]), (std::vector<int>{0, 1, 2, 3}));
  CallbackSink picky([](const SiteDescription&, const QkBatch&) {},
                     [](const SiteDescription& s) { return s.layer == 1 ? std::vector<int>{2} : std::vector<int>{}; });
  EXPECT_TRUE(picky.wants_heads(two_sites()[0]).empty());
  EXPECT_EQ(picky.wants_heads(two_sites()[1]), std::vector<int>{2});
}

TEST(SinkTest, StoreSinkDeclaresFilteredSitesAndFeedsTheStore) {
  QkStore store;
  StoreSink sink(store, SiteFilter{{1}, {3, 0}});
  auto sites = two_sites();
  EXPECT_TRUE(sink.wants_heads(sites[0]).empty());
  EXPECT_EQ(sink.wants_heads(sites[1]), (std::vector<int>{3, 0}));
  sink.prepare(sites);
  sink.prepare(sites);  // once only
  std::vector<float> q = {1, 2, 3, 4, 5, 6, 7, 8}, k = {8, 7, 6, 5, 4, 3, 2, 1};
  std::vector<int64_t> seq = {0, 0}, pos = {0, 1}, ids = {11, 12};
  QkBatch batch{1, 2, 2, 2, q.data(), k.data(), seq.data(), pos.data(), ids.data()};
  sink.consume(sites[1], batch);
  QkData data = store.take();
  ASSERT_EQ(data.sites.size(), 1u);
  EXPECT_EQ(data.sites[0].layer, 1);
  EXPECT_EQ(data.sites[0].module, "encoder.layer.1.attention.self");
  EXPECT_DOUBLE_EQ(data.sites[0].prescale, 0.5);
  EXPECT_EQ(data.sites[0].head_index, (std::vector<int>{3, 0}));
  EXPECT_EQ(data.sites[0].q, q);
  EXPECT_EQ(data.token_id, ids);
}

TEST(SinkTest, StoreSinkRejectsUnknownLayersAndHeads) {
  QkStore store;
  StoreSink layers(store, SiteFilter{{2}, {}});
  EXPECT_THROW(layers.prepare(two_sites()), Error);
  StoreSink heads(store, SiteFilter{{}, {4}});
  try {
    heads.wants_heads(two_sites()[0]);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head 4 requested"), std::string::npos) << e.what();
  }
}

TEST(SiteTableTest, FormatsOneLinePerSite) {
  auto sites = two_sites();
  sites[1].n_heads = -1;
  sites[1].module.clear();
  std::string table = format_sites(sites);
  EXPECT_NE(table.find("layer"), std::string::npos);
  EXPECT_NE(table.find("encoder.layer.0.attention.self"), std::string::npos);
  EXPECT_NE(table.find("0.5"), std::string::npos);
  EXPECT_NE(table.find("?"), std::string::npos);
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 3);
}

}  // namespace
}  // namespace qkscope
