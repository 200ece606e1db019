// Direct double recomputation of one (query, key) pair: the dot product x of the captured
// vectors and ||c q - k / c||^2 of the distance vectors at up to four scales, in one pass over
// the dimensions so that the key is read and converted once. Reading the key as float and
// converting is exact; `omp simd` lets the compiler split the sums into vector lanes
// (-fopenmp-simd, no OpenMP runtime): they differ from sequential sums only in the last bits.
#pragma once

#include <cstdint>

namespace qkscope::detail {

// q_dist: the query's distance vector (centred with --center), q_dot: the captured query, both
// in double; k: the captured key; k_mean: the key centroid (read only when kCentred).
template <bool kCentred, int kScales>
inline void exact_pair(const double* q_dist, const double* q_dot, const float* k,
                       const double* k_mean, int dim, const double* c, const double* inv_c,
                       double& x, double* y2) {
  static_assert(kScales >= 1 && kScales <= 4, "one to four scales per pass");
  double dot = 0, s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : dot, s0, s1, s2, s3)
  for (int l = 0; l < dim; ++l) {
    const double kd = static_cast<double>(k[l]);
    const double kc = kCentred ? kd - k_mean[l] : kd;
    dot += q_dot[l] * kd;
    const double d0 = c[0] * q_dist[l] - kc * inv_c[0];
    s0 += d0 * d0;
    if constexpr (kScales > 1) {
      const double d1 = c[1] * q_dist[l] - kc * inv_c[1];
      s1 += d1 * d1;
    }
    if constexpr (kScales > 2) {
      const double d2 = c[2] * q_dist[l] - kc * inv_c[2];
      s2 += d2 * d2;
    }
    if constexpr (kScales > 3) {
      const double d3 = c[3] * q_dist[l] - kc * inv_c[3];
      s3 += d3 * d3;
    }
  }
  x = dot;
  y2[0] = s0;
  if constexpr (kScales > 1) y2[1] = s1;
  if constexpr (kScales > 2) y2[2] = s2;
  if constexpr (kScales > 3) y2[3] = s3;
}

// exact_pair for 1 to 4 scales chosen at run time.
template <bool kCentred>
inline void exact_pair_n(int n_scales, const double* q_dist, const double* q_dot, const float* k,
                         const double* k_mean, int dim, const double* c, const double* inv_c,
                         double& x, double* y2) {
  switch (n_scales) {
    case 1: return exact_pair<kCentred, 1>(q_dist, q_dot, k, k_mean, dim, c, inv_c, x, y2);
    case 2: return exact_pair<kCentred, 2>(q_dist, q_dot, k, k_mean, dim, c, inv_c, x, y2);
    case 3: return exact_pair<kCentred, 3>(q_dist, q_dot, k, k_mean, dim, c, inv_c, x, y2);
    default: return exact_pair<kCentred, 4>(q_dist, q_dot, k, k_mean, dim, c, inv_c, x, y2);
  }
}

}  // namespace qkscope::detail
