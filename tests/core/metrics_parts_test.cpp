// compute_ctable in parts (mpirun -np K capture spreads the heads over ranks): heads computed in
// ranges, some of them from a copy holding only their own vectors (another stride), and then
// assembled, give compute_ctable's table exactly (every double bit for bit); assemble_ctable
// refuses rows that do not fit. The q/k file in memory is the file write_qk_file writes.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "qkscope/error.h"
#include "qkscope/metrics.h"
#include "qkscope/qk_file.h"
#include "qkscope/qk_merge.h"

namespace qkscope {
namespace {

// Two sites (3 heads of 8 dims, 2 heads of 8 dims), 12 sequences of 5-20 tokens.
QkData random_data(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  QkData d;
  for (int s = 0; s < 12; ++s) {
    const int len = 5 + static_cast<int>(rng() % 16);
    for (int p = 0; p < len; ++p) {
      d.sequence.push_back(s);
      d.position.push_back(p);
    }
  }
  const int64_t n = d.n_tokens();
  for (int layer = 0; layer < 2; ++layer) {
    SiteData site;
    site.layer = layer;
    site.module = "layer" + std::to_string(layer);
    site.n_heads = layer == 0 ? 3 : 2;
    site.head_dim = 8;
    for (int h = 0; h < site.n_heads; ++h) site.head_index.push_back(h);
    site.q.resize(static_cast<size_t>(n * site.n_heads * site.head_dim));
    site.k.resize(site.q.size());
    // Heads of different scales, so that their chosen c differ.
    for (size_t i = 0; i < site.q.size(); ++i) {
      const float scale = 1.f + static_cast<float>((i / 8) % site.n_heads);
      site.q[i] = normal(rng) * scale;
      site.k[i] = normal(rng) / scale;
    }
    d.sites.push_back(std::move(site));
  }
  d.tokens_seen = n;
  d.sequences_seen = 12;
  return d;
}

// Site `s`'s heads [lo, hi) alone: the vectors copied out of the [N, H, D] rows.
QkData only_heads(const QkData& d, size_t s, int lo, int hi) {
  QkData out;
  out.sequence = d.sequence;
  out.position = d.position;
  const SiteData& site = d.sites[s];
  SiteData part = site;
  part.n_heads = hi - lo;
  part.head_index.assign(site.head_index.begin() + lo, site.head_index.begin() + hi);
  part.q.clear();
  part.k.clear();
  for (int64_t t = 0; t < d.n_tokens(); ++t)
    for (int h = lo; h < hi; ++h)
      for (int x = 0; x < site.head_dim; ++x) {
        const size_t at = static_cast<size_t>((t * site.n_heads + h) * site.head_dim + x);
        part.q.push_back(site.q[at]);
        part.k.push_back(site.k[at]);
      }
  out.sites.push_back(std::move(part));
  return out;
}

void expect_same(const std::optional<double>& a, const std::optional<double>& b, const char* what) {
  ASSERT_EQ(a.has_value(), b.has_value()) << what;
  if (a) {
    EXPECT_EQ(*a, *b) << what;  // exact: the parts must be the same computation
  }
}

void expect_same_tables(const CTable& a, const CTable& b) {
  EXPECT_EQ(a.tokens_seen, b.tokens_seen);
  EXPECT_EQ(a.tokens_kept, b.tokens_kept);
  EXPECT_EQ(a.sequences_kept, b.sequences_kept);
  EXPECT_EQ(a.sequences_seen, b.sequences_seen);
  ASSERT_EQ(a.heads.size(), b.heads.size());
  for (size_t i = 0; i < a.heads.size(); ++i) {
    SCOPED_TRACE("head row " + std::to_string(i));
    const HeadResult &x = a.heads[i], &y = b.heads[i];
    EXPECT_EQ(x.layer, y.layer);
    EXPECT_EQ(x.head, y.head);
    EXPECT_EQ(x.module, y.module);
    EXPECT_EQ(x.tokens, y.tokens);
    EXPECT_EQ(x.pairs, y.pairs);
    expect_same(x.threshold, y.threshold, "threshold");
    EXPECT_EQ(x.median_q_norm, y.median_q_norm);
    EXPECT_EQ(x.median_k_norm, y.median_k_norm);
    expect_same(x.c_wcorr, y.c_wcorr, "c_wcorr");
    expect_same(x.c_wcorr_scaled, y.c_wcorr_scaled, "c_wcorr_scaled");
    expect_same(x.c_norm, y.c_norm, "c_norm");
    ASSERT_EQ(x.scales.size(), y.scales.size());
    for (size_t s = 0; s < x.scales.size(); ++s) {
      EXPECT_EQ(x.scales[s].c, y.scales[s].c);
      expect_same(x.scales[s].wcorr, y.scales[s].wcorr, "wcorr");
      expect_same(x.scales[s].wcorr_scaled, y.scales[s].wcorr_scaled, "wcorr_scaled");
      EXPECT_EQ(x.scales[s].queries, y.scales[s].queries);
      EXPECT_EQ(x.scales[s].near_pairs, y.scales[s].near_pairs);
    }
  }
}

TEST(MetricsParts, AssembledPartsAreTheWholeTable) {
  const QkData d = random_data(3);
  MetricOptions options;
  options.threads = 2;
  options.percentile = 5;  // enough near pairs in a small set
  const CTable whole = compute_ctable(d, options);
  ASSERT_EQ(count_heads(d), 5);
  ASSERT_EQ(whole.heads.size(), 5u);
  // Metric 2 (and its choice of c) is defined for every head here: assemble_ctable's part.
  for (const HeadResult& h : whole.heads) ASSERT_TRUE(h.c_wcorr_scaled.has_value());

  // Ranges of the data: heads 0-1, 2-3 (across the sites), 4.
  std::vector<HeadResult> rows;
  for (auto [first, count] : {std::pair<int64_t, int64_t>{0, 2}, {2, 2}, {4, 1}})
    for (HeadResult& h : compute_heads(d, options, first, count)) {
      EXPECT_FALSE(h.c_wcorr_scaled.has_value());  // metric 2 needs every head
      rows.push_back(std::move(h));
    }
  expect_same_tables(whole, assemble_ctable(d, options, rows));

  // Heads from copies that hold only them (what a rank receives): site 0's head 2 alone and
  // site 1's two heads, next to site 0's heads 0-1 from the whole data.
  rows = compute_heads(d, options, 0, 2);
  for (HeadResult& h : compute_heads(only_heads(d, 0, 2, 3), options, 0, 1)) rows.push_back(h);
  for (HeadResult& h : compute_heads(only_heads(d, 1, 0, 2), options, 0, 2)) rows.push_back(h);
  expect_same_tables(whole, assemble_ctable(d, options, rows));
}

TEST(MetricsParts, RefusesRowsThatDoNotFit) {
  const QkData d = random_data(4);
  MetricOptions options;
  std::vector<HeadResult> rows = compute_heads(d, options, 0, 4);
  EXPECT_THROW(
      {
        try {
          assemble_ctable(d, options, rows);
        } catch (const Error& e) {
          EXPECT_STREQ(e.what(), "assemble_ctable: 4 head results for data with 5 heads");
          throw;
        }
      },
      Error);
  EXPECT_THROW(compute_heads(d, options, 3, 3), Error);  // past the 5 heads
  MetricOptions other = options;
  other.scales = {0.5, 2};
  rows = compute_heads(d, other, 0, 5);
  EXPECT_THROW(assemble_ctable(d, options, rows), Error);
}

TEST(MetricsParts, QkBytesAreTheFile) {
  const QkData d = random_data(5);
  const auto path = std::filesystem::temp_directory_path() / "qkscope_parts_test.qk";
  write_qk_file(path.string(), d);
  std::ifstream in(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(path);
  const std::string bytes = qk_file_bytes(d);
  EXPECT_EQ(bytes, file);
  const QkData back = parse_qk_bytes(bytes, "memory");
  EXPECT_EQ(back.sequence, d.sequence);
  EXPECT_EQ(back.sites[1].k, d.sites[1].k);
  EXPECT_THROW(parse_qk_bytes(bytes.substr(0, bytes.size() - 4), "cut"), FormatError);
}

TEST(MetricsParts, SequenceRangesRoundTripAndRefuseBadLines) {
  const QkData d = random_data(6);  // sequences 0..11
  SequenceRange r{0, 20, "corpus.txt", {}};
  for (int64_t s = 0; s < 20; ++s) r.lines.emplace_back(s, 3 * s + 1);
  const auto entries = sequence_metadata({r}, d);
  std::map<std::string, std::string> metadata(entries.begin(), entries.end());
  EXPECT_EQ(metadata.at("sequences.0.range"), "0:20");
  EXPECT_EQ(metadata.at("sequences.0.lines"), "1,4,7,10,13,16,19,22,25,28,31,34");
  const auto back = read_sequence_ranges(metadata, d, "f");
  ASSERT_EQ(back.size(), 1u);
  ASSERT_EQ(back[0].lines.size(), 12u);
  EXPECT_EQ(back[0].lines[11], std::make_pair(int64_t{11}, int64_t{34}));
  metadata["sequences.0.lines"] = "1,4";  // fewer lines than kept sequences
  EXPECT_THROW(read_sequence_ranges(metadata, d, "f"), FormatError);
  metadata["sequences.0.lines"] = "1,4,7,10,13,16,19,22,25,28,31,34";
  metadata["sequences.0.range"] = "0:5";  // kept sequences outside every range
  EXPECT_THROW(read_sequence_ranges(metadata, d, "f"), FormatError);
}

}  // namespace
}  // namespace qkscope
