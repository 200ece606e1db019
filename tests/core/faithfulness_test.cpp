// faithfulness_d and faithfulness_2d (SPEC 4) against a brute force written from the SPEC alone:
// every key of the scope sorted in full, distances ||c q_i - (k_j / c + t)|| with t from the
// means, ties to the smaller token index. Cases with small integer vectors and duplicated keys
// make ties in both rankings.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "qkscope/faithfulness.h"

namespace qkscope {
namespace {

struct Case {
  int64_t n = 0;
  int dim = 0;
  std::vector<float> q, k;
  std::vector<int64_t> sequence, position;
  HeadVectors view() const {
    return HeadVectors{n, dim, q.data(), k.data(), dim, sequence.data(), position.data()};
  }
};

Case random_case(uint32_t seed, bool integer_valued) {
  std::mt19937 rng(seed);
  Case c;
  c.dim = 1 + static_cast<int>(rng() % 5);
  std::uniform_int_distribution<int> len(1, 9), small(-2, 2);
  std::normal_distribution<float> normal(0.5f, 1.0f);
  const int n_seq = 1 + static_cast<int>(rng() % 4);
  for (int s = 0; s < n_seq; ++s) {
    const int l = len(rng);
    for (int p = 0; p < l; ++p) {
      c.sequence.push_back(s * 3 + 1);  // not contiguous numbers
      c.position.push_back(p);
    }
  }
  c.n = static_cast<int64_t>(c.sequence.size());
  for (int64_t i = 0; i < c.n * c.dim; ++i) {
    c.q.push_back(integer_valued ? static_cast<float>(small(rng)) : normal(rng));
    c.k.push_back(integer_valued ? static_cast<float>(small(rng)) : normal(rng) * 2.0f);
  }
  // Duplicate a few keys exactly: equal dot products and equal distances.
  for (int64_t t = 1; t < c.n; t += 3)
    std::copy_n(c.k.begin() + (t - 1) * c.dim, c.dim, c.k.begin() + t * c.dim);
  return c;
}

bool in_scope(const Case& c, PairScope scope, int64_t i, int64_t j) {
  if (scope == PairScope::all) return true;
  if (c.sequence[i] != c.sequence[j]) return false;
  return scope == PairScope::sequence || c.position[j] <= c.position[i];
}

// Key indices of query i sorted by `value` ascending, then index.
template <class F>
std::vector<int64_t> ranked(const Case& c, PairScope scope, int64_t i, F value) {
  std::vector<int64_t> keys;
  for (int64_t j = 0; j < c.n; ++j)
    if (in_scope(c, scope, i, j)) keys.push_back(j);
  std::stable_sort(keys.begin(), keys.end(), [&](int64_t a, int64_t b) { return value(a) < value(b); });
  return keys;
}

template <class F>
std::optional<double> brute(const Case& c, PairScope scope, int k, F distance) {
  double sum = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < c.n; ++i) {
    auto by_dot = ranked(c, scope, i, [&](int64_t j) {
      double dot = 0;
      for (int d = 0; d < c.dim; ++d) dot += double(c.q[i * c.dim + d]) * double(c.k[j * c.dim + d]);
      return -dot;
    });
    if (static_cast<int>(by_dot.size()) < k) continue;
    auto by_distance = ranked(c, scope, i, [&](int64_t j) { return distance(i, j); });
    int hits = 0;
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b) hits += by_dot[a] == by_distance[b];
    sum += double(hits) / k;
    ++count;
  }
  if (count == 0) return std::nullopt;
  return sum / count;
}

TEST(FaithfulnessTest, MatchesBruteForceWithTies) {
  int checked = 0;
  for (uint32_t seed = 0; seed < 120; ++seed) {
    const Case c = random_case(seed, /*integer_valued=*/seed % 2 == 0);
    const HeadVectors h = c.view();
    for (PairScope scope : {PairScope::sequence, PairScope::causal, PairScope::all}) {
      for (int k : {1, 2, 3, 5}) {
        const AttendedSets sets = most_attended(h, scope, k);
        // A_i against the full ranking (integer cases: many exact ties in q.k).
        size_t a = 0;
        for (int64_t i = 0; i < c.n; ++i) {
          auto by_dot = ranked(c, scope, i, [&](int64_t j) {
            double dot = 0;
            for (int d = 0; d < c.dim; ++d) dot += double(c.q[i * c.dim + d]) * double(c.k[j * c.dim + d]);
            return -dot;
          });
          if (static_cast<int>(by_dot.size()) < k) continue;
          ASSERT_LT(a, sets.queries.size());
          EXPECT_EQ(sets.queries[a], i);
          for (int m = 0; m < k; ++m) EXPECT_EQ(sets.keys[a * k + m], by_dot[m]) << "seed " << seed;
          ++a;
        }
        EXPECT_EQ(a, sets.queries.size());
        // Distances of different vectors that tie mathematically (integer cases) are decided by
        // rounding, in any float computation; exact duplicates (the ties real captures have:
        // the same token at the same position) tie bit for bit and are in every case.
        const std::vector<double> constants =
            seed % 2 ? std::vector<double>{0.2, 1.0, 2.5} : std::vector<double>{};
        for (double cst : constants) {
          // Translation from the means, computed here independently.
          std::vector<double> t(c.dim, 0.0);
          for (int d = 0; d < c.dim; ++d) {
            double mq = 0, mk = 0;
            for (int64_t i = 0; i < c.n; ++i) mq += c.q[i * c.dim + d], mk += c.k[i * c.dim + d];
            t[d] = cst * mq / c.n - mk / c.n / cst;
          }
          auto expected = brute(c, scope, k, [&](int64_t i, int64_t j) {
            double s = 0;
            for (int d = 0; d < c.dim; ++d) {
              double diff = cst * c.q[i * c.dim + d] - (c.k[j * c.dim + d] / cst + t[d]);
              s += diff * diff;
            }
            return std::sqrt(s);
          });
          auto got = faithfulness_d(h, sets, scope, cst);
          ASSERT_EQ(expected.has_value(), got.has_value()) << "seed " << seed;
          if (expected) {
            EXPECT_NEAR(*expected, *got, 1e-12) << "seed " << seed << " k " << k << " c " << cst;
            ++checked;
          }
        }
        // 2-D: integer coordinates (many ties).
        std::mt19937 rng(seed + 1000);
        std::vector<float> qxy(2 * c.n), kxy(2 * c.n);
        for (auto& v : qxy) v = static_cast<float>(rng() % 4);
        for (auto& v : kxy) v = static_cast<float>(rng() % 4);
        auto expected = brute(c, scope, k, [&](int64_t i, int64_t j) {
          return std::hypot(double(qxy[2 * i]) - kxy[2 * j], double(qxy[2 * i + 1]) - kxy[2 * j + 1]);
        });
        auto got = faithfulness_2d(h, sets, scope, qxy.data(), kxy.data());
        ASSERT_EQ(expected.has_value(), got.has_value());
        if (expected) {
          EXPECT_NEAR(*expected, *got, 1e-12) << "seed " << seed;
        }
      }
    }
  }
  EXPECT_GT(checked, 500);
}

TEST(FaithfulnessTest, HandCase) {
  // One sequence of 3 tokens, D = 1, k = 1. q = (1, -1, 2), k = (1, 2, 3).
  // Query 0 attends most to key 2 (dot 3); at c = 1, t = mean(q) - mean(k) = 2/3 - 2 = -4/3:
  // shifted keys (-1/3, 2/3, 5/3); nearest to q0 = 1 is key 1 (1/3 away): miss.
  // Query 1 (-1): most attended key 0 (dot -1); nearest shifted key 0: hit.
  // Query 2 (2): key 2 (dot 6); nearest shifted key 2 (5/3): hit. Mean 2/3.
  Case c;
  c.n = 3, c.dim = 1, c.q = {1, -1, 2}, c.k = {1, 2, 3}, c.sequence = {0, 0, 0}, c.position = {0, 1, 2};
  const AttendedSets sets = most_attended(c.view(), PairScope::sequence, 1);
  ASSERT_EQ(sets.queries.size(), 3u);
  EXPECT_EQ(sets.keys, (std::vector<int64_t>{2, 0, 2}));
  EXPECT_NEAR(*faithfulness_d(c.view(), sets, PairScope::sequence, 1.0), 2.0 / 3.0, 1e-15);
  // Causal, k = 2: only query 1 (keys 0, 1) and query 2 (keys 0..2) qualify.
  EXPECT_EQ(most_attended(c.view(), PairScope::causal, 2).queries, (std::vector<int64_t>{1, 2}));
  EXPECT_FALSE(faithfulness_d(c.view(), most_attended(c.view(), PairScope::causal, 4),
                              PairScope::causal, 1.0).has_value());
}

TEST(FaithfulnessTest, TranslationSharesTheQueryCentroid) {
  const Case c = random_case(7, false);
  for (double cst : {0.2, 0.8, 5.0}) {
    const auto t = key_translation(c.view(), cst);
    for (int d = 0; d < c.dim; ++d) {
      double mq = 0, mk = 0;
      for (int64_t i = 0; i < c.n; ++i) mq += cst * c.q[i * c.dim + d], mk += c.k[i * c.dim + d] / cst + t[d];
      EXPECT_NEAR(mq / c.n, mk / c.n, 1e-12);
    }
  }
}

}  // namespace
}  // namespace qkscope
