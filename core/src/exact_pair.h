// Double-precision arithmetic of one admitted (query, key) pair:
//  - pair_dots: the dot product x of the captured vectors and, with --center, x_dist of the
//    distance vectors (without it they are the same);
//  - direct_distance2: ||c q - k / c||^2 summed component by component, for the items where the
//    Gram identity c^2 a + b / c^2 - 2 x_dist would lose too much to cancellation.
// The key is read as float and converted, which is exact. With AVX-512 the lanes are summed as a
// tree at the end: the compiler's `omp simd` reductions add them one after another, a chain of 8
// dependent additions per sum that dominated the cost of a pair.
#pragma once

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace qkscope::detail {

// q_dist: the query's distance vector (centred with --center), q_dot: the captured query, both
// in double; k: the captured key; k_mean: the key centroid (read only when kCentred).
template <bool kCentred>
inline void pair_dots(const double* q_dist, const double* q_dot, const float* k,
                      const double* k_mean, int dim, double& x, double& x_dist) {
  int l = 0;
  double dot = 0, dot_dist = 0;
#if defined(__AVX512F__)
  __m512d acc = _mm512_setzero_pd(), acc_dist = _mm512_setzero_pd();
  for (; l + 8 <= dim; l += 8) {
    const __m512d kd = _mm512_cvtps_pd(_mm256_loadu_ps(k + l));
    acc = _mm512_fmadd_pd(_mm512_loadu_pd(q_dot + l), kd, acc);
    if constexpr (kCentred)
      acc_dist = _mm512_fmadd_pd(_mm512_loadu_pd(q_dist + l),
                                 _mm512_sub_pd(kd, _mm512_loadu_pd(k_mean + l)), acc_dist);
  }
  dot = _mm512_reduce_add_pd(acc);
  if constexpr (kCentred) dot_dist = _mm512_reduce_add_pd(acc_dist);
#endif
#pragma omp simd reduction(+ : dot, dot_dist)
  for (int t = l; t < dim; ++t) {  // all of it without AVX-512; the rest past 8s with it
    const double kd = static_cast<double>(k[t]);
    dot += q_dot[t] * kd;
    if constexpr (kCentred) dot_dist += q_dist[t] * (kd - k_mean[t]);
  }
  x = dot;
  x_dist = kCentred ? dot_dist : dot;
}

template <bool kCentred>
inline double direct_distance2(const double* q_dist, const float* k, const double* k_mean,
                               int dim, double c, double inv_c) {
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int l = 0; l < dim; ++l) {
    const double kd = static_cast<double>(k[l]);
    const double diff = c * q_dist[l] - (kCentred ? kd - k_mean[l] : kd) * inv_c;
    sum += diff * diff;
  }
  return sum;
}

}  // namespace qkscope::detail
