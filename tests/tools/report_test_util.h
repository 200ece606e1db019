// Independent computations for the report tests, written from SPEC section 4 alone (they do not
// call the library's faithfulness or PCA): the sample's tokens, faithfulness_d by full sorting,
// the PCA picture with the sign rule report.json states.
#pragma once

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "qkscope/qk_data.h"

namespace qkscope::testing {

struct SampleHead {
  int64_t n = 0;
  int dim = 0;
  std::vector<double> q, k;  // [n, dim]
  std::vector<int64_t> seq, pos;
};

// The tokens of `sequences` (report.json's sample) for stored head `slot` of site `site`.
inline SampleHead sample_head(const QkData& data, size_t site, int slot,
                              const std::vector<int64_t>& sequences) {
  const SiteData& s = data.sites[site];
  SampleHead h;
  h.dim = s.head_dim;
  for (int64_t t = 0; t < data.n_tokens(); ++t) {
    if (std::find(sequences.begin(), sequences.end(), data.sequence[t]) == sequences.end()) continue;
    for (int d = 0; d < h.dim; ++d) {
      h.q.push_back(s.q[(t * s.n_heads + slot) * h.dim + d]);
      h.k.push_back(s.k[(t * s.n_heads + slot) * h.dim + d]);
    }
    h.seq.push_back(data.sequence[t]);
    h.pos.push_back(data.position[t]);
    ++h.n;
  }
  return h;
}

// `h` without the tokens whose q or k holds NaN or Inf (SPEC 4: left out of that head).
inline SampleHead finite_only(const SampleHead& h) {
  SampleHead out;
  out.dim = h.dim;
  for (int64_t i = 0; i < h.n; ++i) {
    bool finite = true;
    for (int d = 0; d < h.dim; ++d)
      finite = finite && std::isfinite(h.q[i * h.dim + d]) && std::isfinite(h.k[i * h.dim + d]);
    if (!finite) continue;
    out.q.insert(out.q.end(), h.q.begin() + i * h.dim, h.q.begin() + (i + 1) * h.dim);
    out.k.insert(out.k.end(), h.k.begin() + i * h.dim, h.k.begin() + (i + 1) * h.dim);
    out.seq.push_back(h.seq[i]);
    out.pos.push_back(h.pos[i]);
    ++out.n;
  }
  return out;
}

// The example's q/k with NaN in the query of stored head 0 of the first site for tokens
// t % 7 == 3 and +Inf in the key of its stored head 1 for t % 11 == 5.
inline QkData with_nonfinite(QkData data) {
  SiteData& s = data.sites.front();
  for (int64_t t = 0; t < data.n_tokens(); ++t) {
    if (t % 7 == 3) s.q[(t * s.n_heads + 0) * s.head_dim + 2] = std::nanf("");
    if (t % 11 == 5) s.k[(t * s.n_heads + 1) * s.head_dim] = INFINITY;
  }
  return data;
}

// faithfulness in sequence scope with N_i by `dist(i, j)`.
template <class Dist>
double brute_faithfulness(const SampleHead& h, int k, Dist dist) {
  double sum = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < h.n; ++i) {
    std::vector<std::pair<double, int64_t>> by_dot, by_dist;
    for (int64_t j = 0; j < h.n; ++j) {
      if (h.seq[j] != h.seq[i]) continue;
      double dot = 0;
      for (int d = 0; d < h.dim; ++d) dot += h.q[i * h.dim + d] * h.k[j * h.dim + d];
      by_dot.emplace_back(-dot, j);
      by_dist.emplace_back(dist(i, j), j);
    }
    if (static_cast<int>(by_dot.size()) < k) continue;
    std::sort(by_dot.begin(), by_dot.end());
    std::sort(by_dist.begin(), by_dist.end());
    int hits = 0;
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b) hits += by_dot[a].second == by_dist[b].second;
    sum += double(hits) / k;
    ++count;
  }
  return sum / count;
}

inline std::vector<double> translation(const SampleHead& h, double c) {
  std::vector<double> t(h.dim, 0.0);
  for (int64_t i = 0; i < h.n; ++i)
    for (int d = 0; d < h.dim; ++d) t[d] += (c * h.q[i * h.dim + d] - h.k[i * h.dim + d] / c) / h.n;
  return t;
}

inline double brute_faithfulness_d(const SampleHead& h, int k, double c) {
  const auto t = translation(h, c);
  return brute_faithfulness(h, k, [&](int64_t i, int64_t j) {
    double s = 0;
    for (int d = 0; d < h.dim; ++d) {
      const double diff = c * h.q[i * h.dim + d] - (h.k[j * h.dim + d] / c + t[d]);
      s += diff * diff;
    }
    return std::sqrt(s);
  });
}

// [2n, 2]: queries c q_i then keys k_j/c + t, on the two leading principal axes (each signed so
// its largest-magnitude entry is positive), relative to the joint centroid.
inline std::vector<double> pca_picture(const SampleHead& h, double c) {
  const auto t = translation(h, c);
  Eigen::MatrixXd x(2 * h.n, h.dim);
  for (int64_t i = 0; i < h.n; ++i)
    for (int d = 0; d < h.dim; ++d) {
      x(i, d) = c * h.q[i * h.dim + d];
      x(h.n + i, d) = h.k[i * h.dim + d] / c + t[d];
    }
  const Eigen::MatrixXd centred = x.rowwise() - x.colwise().mean();
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(centred.transpose() * centred / double(2 * h.n));
  std::vector<double> out(4 * h.n);
  for (int a = 0; a < 2; ++a) {
    Eigen::VectorXd v = es.eigenvectors().col(h.dim - 1 - a);
    Eigen::Index arg;
    v.cwiseAbs().maxCoeff(&arg);
    if (v[arg] < 0) v = -v;
    const Eigen::VectorXd p = centred * v;
    for (int64_t r = 0; r < 2 * h.n; ++r) out[2 * r + a] = p[r];
  }
  return out;
}

}  // namespace qkscope::testing
