// Direct double recomputation of one (query, key) pair: the dot product x of the captured
// vectors and ||c q - k / c||^2 of the distance vectors at up to four scales, in one pass over
// the dimensions so that the key is read and converted once. Reading the key as float and
// converting is exact; `omp simd` lets the compiler split the sums into vector lanes
// (-fopenmp-simd, no OpenMP runtime): they differ from sequential sums only in the last bits.
#pragma once

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace qkscope::detail {

// q_dist: the query's distance vector (centred with --center), q_dot: the captured query, both
// in double; k: the captured key; k_mean: the key centroid (read only when kCentred).
#if defined(__AVX512F__)
// With AVX-512 the lanes are summed as a tree at the end: the compiler's `omp simd` reduction
// adds them one after another, a chain of 8 dependent additions per sum that dominated the
// cost of a pair.
template <bool kCentred, int kScales>
inline void exact_pair(const double* q_dist, const double* q_dot, const float* k,
                       const double* k_mean, int dim, const double* c, const double* inv_c,
                       double& x, double* y2) {
  static_assert(kScales >= 1 && kScales <= 4, "one to four scales per pass");
  __m512d dot = _mm512_setzero_pd();
  __m512d sum[kScales], cv[kScales], inv_cv[kScales];
  for (int s = 0; s < kScales; ++s) {
    sum[s] = _mm512_setzero_pd();
    cv[s] = _mm512_set1_pd(c[s]);
    inv_cv[s] = _mm512_set1_pd(inv_c[s]);
  }
  int l = 0;
  for (; l + 8 <= dim; l += 8) {
    const __m512d kd = _mm512_cvtps_pd(_mm256_loadu_ps(k + l));
    const __m512d kc = kCentred ? _mm512_sub_pd(kd, _mm512_loadu_pd(k_mean + l)) : kd;
    dot = _mm512_fmadd_pd(_mm512_loadu_pd(q_dot + l), kd, dot);
    const __m512d qd = _mm512_loadu_pd(q_dist + l);
    for (int s = 0; s < kScales; ++s) {
      const __m512d diff = _mm512_sub_pd(_mm512_mul_pd(cv[s], qd), _mm512_mul_pd(kc, inv_cv[s]));
      sum[s] = _mm512_fmadd_pd(diff, diff, sum[s]);
    }
  }
  x = _mm512_reduce_add_pd(dot);
  for (int s = 0; s < kScales; ++s) y2[s] = _mm512_reduce_add_pd(sum[s]);
  for (; l < dim; ++l) {  // dimensions past a multiple of 8
    const double kd = static_cast<double>(k[l]);
    const double kc = kCentred ? kd - k_mean[l] : kd;
    x += q_dot[l] * kd;
    for (int s = 0; s < kScales; ++s) {
      const double diff = c[s] * q_dist[l] - kc * inv_c[s];
      y2[s] += diff * diff;
    }
  }
}
#else
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
#endif

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
