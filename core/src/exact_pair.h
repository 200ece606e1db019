// Double-precision arithmetic of one admitted (query, key) pair:
//  - pair_dots: the dot product x of the captured vectors and, with --center, x_dist of the
//    distance vectors (without it they are the same);
//  - direct_distance2: ||c q - k / c||^2 summed component by component, for the items where the
//    Gram identity c^2 a + b / c^2 - 2 x_dist would lose too much to cancellation.
// The key is read as float and converted, which is exact. With AVX-512 the lanes are summed as a
// tree at the end: the compiler's `omp simd` reductions add them one after another, a chain of 8
// dependent additions per sum that dominated the cost of a pair.
#pragma once

#ifndef QKSCOPE_ISA_NS  // see head_engine.h: compiled once per instruction set
#error "included by head_engine.h, whose includer names QKSCOPE_ISA_NS"
#endif

#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "head_engine_kernel.h"

namespace qkscope::detail::QKSCOPE_ISA_NS {

// sum_l a[l] b[l] in double, of float vectors.
QKSCOPE_KERNEL double dot_in_double(const float* a, const float* b, int dim) {
  int l = 0;
  double sum = 0;
#if defined(__AVX512F__)
  // Two accumulators: half the chain of dependent additions (see pair_dots).
  __m512d acc = _mm512_setzero_pd(), acc2 = _mm512_setzero_pd();
  for (; l + 16 <= dim; l += 16) {
    acc = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + l)),
                          _mm512_cvtps_pd(_mm256_loadu_ps(b + l)), acc);
    acc2 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + l + 8)),
                           _mm512_cvtps_pd(_mm256_loadu_ps(b + l + 8)), acc2);
  }
  for (; l + 8 <= dim; l += 8)
    acc = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + l)),
                          _mm512_cvtps_pd(_mm256_loadu_ps(b + l)), acc);
  sum = _mm512_reduce_add_pd(_mm512_add_pd(acc, acc2));
#else
#pragma omp simd reduction(+ : sum)
#endif
  for (int t = l; t < dim; ++t) sum += static_cast<double>(a[t]) * static_cast<double>(b[t]);
  return sum;
}

// q_dist: the query's distance vector (centred with --center), q_dot: the captured query, both
// in double; k: the captured key; k_mean: the key centroid (read only when kCentred).
template <bool kCentred>
QKSCOPE_KERNEL void pair_dots(const double* q_dist, const double* q_dot, const float* k,
                      const double* k_mean, int dim, double& x, double& x_dist) {
  int l = 0;
  double dot = 0, dot_dist = 0;
#if defined(__AVX512F__)
  // Two accumulators per sum, each over alternate groups of 8: the pair's items wait on x, and
  // one accumulator made a chain of dim / 8 dependent multiply-adds (the item step's largest
  // stall in the profile).
  __m512d acc = _mm512_setzero_pd(), acc_dist = _mm512_setzero_pd();
  __m512d acc2 = _mm512_setzero_pd(), acc_dist2 = _mm512_setzero_pd();
  for (; l + 16 <= dim; l += 16) {
    const __m512d kd = _mm512_cvtps_pd(_mm256_loadu_ps(k + l));
    const __m512d kd2 = _mm512_cvtps_pd(_mm256_loadu_ps(k + l + 8));
    acc = _mm512_fmadd_pd(_mm512_loadu_pd(q_dot + l), kd, acc);
    acc2 = _mm512_fmadd_pd(_mm512_loadu_pd(q_dot + l + 8), kd2, acc2);
    if constexpr (kCentred) {
      acc_dist = _mm512_fmadd_pd(_mm512_loadu_pd(q_dist + l),
                                 _mm512_sub_pd(kd, _mm512_loadu_pd(k_mean + l)), acc_dist);
      acc_dist2 = _mm512_fmadd_pd(_mm512_loadu_pd(q_dist + l + 8),
                                  _mm512_sub_pd(kd2, _mm512_loadu_pd(k_mean + l + 8)), acc_dist2);
    }
  }
  for (; l + 8 <= dim; l += 8) {
    const __m512d kd = _mm512_cvtps_pd(_mm256_loadu_ps(k + l));
    acc = _mm512_fmadd_pd(_mm512_loadu_pd(q_dot + l), kd, acc);
    if constexpr (kCentred)
      acc_dist = _mm512_fmadd_pd(_mm512_loadu_pd(q_dist + l),
                                 _mm512_sub_pd(kd, _mm512_loadu_pd(k_mean + l)), acc_dist);
  }
  dot = _mm512_reduce_add_pd(_mm512_add_pd(acc, acc2));
  if constexpr (kCentred) dot_dist = _mm512_reduce_add_pd(_mm512_add_pd(acc_dist, acc_dist2));
#else
  // Not with AVX-512 above: for the (usually empty) rest, the vectorised loop's lane sums would
  // cost more than the work.
#pragma omp simd reduction(+ : dot, dot_dist)
#endif
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

// The grid as the item step reads it: per scale c, 1/c, c^2 and 1/c^2, padded to a multiple of 8
// (c^2 and 1/c^2 with infinities, so that a padded scale's bound never passes a test).
struct ScaleTable {
  std::vector<double> c, inv_c, c2, inv_c2;
  size_t n_padded = 0;
  double bound_slack = 0;     // relative slack of the double bounds
  double identity_error = 0;  // error of the identity in double, relative to mag + 2|x|
};

// Where one admitted pair's items go: columns with room for 16 more entries than are written.
struct ItemSink {
  uint32_t* query;
  uint32_t* scale;
  double* y2;
  double* x;
};

// What the direct recomputation of a pair reads.
struct PairVectors {
  const double* q_dist;
  const double* q_dot;
  const float* k;
  const double* k_mean;
  int dim;
};

// Appends the items of one admitted pair whose double lower bound of y^2,
// mag - 2g - (margin_pair + slack mag) with mag = c^2 a + b / c^2, is at most `bound`: their
// scale, x, and y^2 by the Gram identity in double from the exact dot product where its proven
// rounding error is under 2^-40 of the result (directly otherwise). Returns how many.
template <bool kCentred>
QKSCOPE_KERNEL int append_pair_items(const ScaleTable& st, double a, double b, double two_g,
                             double margin_pair, double bound, const PairVectors& v,
                             uint32_t query, const ItemSink& out) {
  int n = 0;
  bool dots_done = false;
  double x = 0, x_dist = 0;
  for (size_t s0 = 0; s0 < st.n_padded; s0 += 8) {
#if defined(__AVX512F__)
    // Branch-free but for the two rare cases: no scale wanted, and the identity too inexact.
    const __m512d b_over_c2 = _mm512_mul_pd(_mm512_loadu_pd(&st.inv_c2[s0]), _mm512_set1_pd(b));
    const __m512d mag = _mm512_fmadd_pd(_mm512_loadu_pd(&st.c2[s0]), _mm512_set1_pd(a), b_over_c2);
    const __m512d margin =
        _mm512_fmadd_pd(mag, _mm512_set1_pd(st.bound_slack), _mm512_set1_pd(margin_pair));
    const __m512d lower = _mm512_sub_pd(_mm512_sub_pd(mag, _mm512_set1_pd(two_g)), margin);
    const __mmask8 wanted = _mm512_cmp_pd_mask(lower, _mm512_set1_pd(bound), _CMP_LE_OQ);
    if (wanted == 0) continue;
    if (!dots_done) {
      pair_dots<kCentred>(v.q_dist, v.q_dot, v.k, v.k_mean, v.dim, x, x_dist);
      dots_done = true;
    }
    __m512d y2 = _mm512_fnmadd_pd(_mm512_set1_pd(2.0), _mm512_set1_pd(x_dist), mag);
    const __m512d error = _mm512_mul_pd(_mm512_set1_pd(st.identity_error),
                                        _mm512_add_pd(mag, _mm512_set1_pd(2.0 * std::abs(x_dist))));
    const __m512d allowed = _mm512_mul_pd(_mm512_set1_pd(0x1p-40), y2);
    const __mmask8 exact = _mm512_cmp_pd_mask(error, allowed, _CMP_LE_OQ);
    if (__mmask8 redo = wanted & static_cast<__mmask8>(~exact); redo != 0) {
      alignas(64) double lanes[8];
      _mm512_store_pd(lanes, y2);
      for (; redo != 0; redo &= static_cast<__mmask8>(redo - 1)) {
        const int lane = __builtin_ctz(redo);
        lanes[lane] = direct_distance2<kCentred>(v.q_dist, v.k, v.k_mean, v.dim,
                                                 st.c[s0 + lane], st.inv_c[s0 + lane]);
      }
      y2 = _mm512_load_pd(lanes);
    }
    // Compress the wanted lanes to the front and store whole vectors: the lanes past the count
    // are overwritten by the next pair (hence the sink's room).
    _mm512_storeu_pd(out.y2 + n, _mm512_maskz_compress_pd(wanted, y2));
    _mm512_storeu_pd(out.x + n, _mm512_set1_pd(x));
    const __m512i lane_index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i scales = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(s0)), lane_index);
    _mm512_storeu_si512(out.scale + n, _mm512_maskz_compress_epi32(wanted, scales));
    _mm512_storeu_si512(out.query + n, _mm512_set1_epi32(static_cast<int>(query)));
    n += __builtin_popcount(wanted);
#else
    for (size_t s = s0; s < s0 + 8; ++s) {
      const double mag = st.c2[s] * a + st.inv_c2[s] * b;
      if (!(mag - two_g - (margin_pair + st.bound_slack * mag) <= bound)) continue;
      if (!dots_done) {
        pair_dots<kCentred>(v.q_dist, v.q_dot, v.k, v.k_mean, v.dim, x, x_dist);
        dots_done = true;
      }
      double y2 = mag - 2.0 * x_dist;
      if (!(st.identity_error * (mag + 2.0 * std::abs(x_dist)) <= 0x1p-40 * y2))
        y2 = direct_distance2<kCentred>(v.q_dist, v.k, v.k_mean, v.dim, st.c[s], st.inv_c[s]);
      out.query[n] = query;
      out.scale[n] = static_cast<uint32_t>(s);
      out.y2[n] = y2;
      out.x[n] = x;
      ++n;
    }
#endif
  }
  return n;
}

// Replaces each y[t], t < n, by its square root; returns how many were <= cap. A loop of
// std::sqrt stays scalar, with a branch per value: without -fno-math-errno GCC keeps the path that
// sets errno for negative inputs (none arrive: y^2 is a sum of squares or passed the identity's
// test against 2^-40 y^2 >= 0). The vector roots are the correctly rounded ones too.
QKSCOPE_KERNEL int64_t roots_counting(double* y, size_t n, double cap) {
  int64_t count = 0;
  size_t t = 0;
#if defined(__AVX512F__)
  const __m512d limit = _mm512_set1_pd(cap);
  for (; t + 8 <= n; t += 8) {
    const __m512d v = _mm512_loadu_pd(y + t);
    count += __builtin_popcount(_mm512_cmp_pd_mask(v, limit, _CMP_LE_OQ));
    _mm512_storeu_pd(y + t, _mm512_sqrt_pd(v));
  }
#elif defined(__AVX__)
  const __m256d limit = _mm256_set1_pd(cap);
  for (; t + 4 <= n; t += 4) {
    const __m256d v = _mm256_loadu_pd(y + t);
    count += __builtin_popcount(_mm256_movemask_pd(_mm256_cmp_pd(v, limit, _CMP_LE_OQ)));
    _mm256_storeu_pd(y + t, _mm256_sqrt_pd(v));
  }
#elif defined(__SSE2__)
  const __m128d limit = _mm_set1_pd(cap);
  for (; t + 2 <= n; t += 2) {
    const __m128d v = _mm_loadu_pd(y + t);
    count += __builtin_popcount(_mm_movemask_pd(_mm_cmple_pd(v, limit)));
    _mm_storeu_pd(y + t, _mm_sqrt_pd(v));
  }
#endif
  for (; t < n; ++t) {
    count += y[t] <= cap;
    y[t] = std::sqrt(y[t]);
  }
  return count;
}

}  // namespace qkscope::detail::QKSCOPE_ISA_NS
