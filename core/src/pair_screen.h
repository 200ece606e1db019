// The engine's innermost loop: which pairs of one Gram row can hold an item under a bound.
//
// For a query with squared norm a and a key with squared norm b, the distance at scale c is
// y^2 = c^2 a + b / c^2 - 2 q.k. Its smallest value over the grid, M(a, b) - 2 q.k with
// M = min_c (c^2 a + b / c^2), bounds every item of the pair from below. This file evaluates that
// bound in float, 16 pairs per instruction, with every rounding pushed towards admitting the pair:
// a pair it rejects provably has no item under the bound (the double test of exact_pair.h then
// decides per scale). The error analysis is in pair_slack's comment.
#pragma once

#ifndef QKSCOPE_ISA_NS  // see head_engine.h: compiled once per instruction set
#error "included by head_engine.h, whose includer names QKSCOPE_ISA_NS"
#endif

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "head_engine_kernel.h"

namespace qkscope::detail::QKSCOPE_ISA_NS {

// Per-row constants of the float screen. Where a magnitude could overflow float (norms beyond
// ~1e18, see float_screen_safe) the screen is skipped: every pair goes to the double test.
struct RowScreen {
  // Per scale, padded to a multiple of 8 by repeating scale 0.
  std::vector<float> c2_a;    // c^2 a
  std::vector<float> inv_c2;  // 1 / c^2
  float margin_per_key_len = 0;  // times |k|: the Gram error allowance, enlarged
  float bound = 0;               // the bound on y^2, enlarged
  // The scales whose c^2 a + b / c^2 can be the grid's minimum for the row's keys
  // (choose_active_scales), padded to n_active = 1, 2, 4 or 8 by repeating the first;
  // n_active 0: the whole grid.
  float active_c2_a[8] = {}, active_inv_c2[8] = {};
  int n_active = 0;
};

// The grid sorted by c, for choose_active_scales: over r = b / a, c^2 + r / c^2 is smallest at
// sorted scale k exactly for r between c_{k-1}^2 c_k^2 and c_k^2 c_{k+1}^2 (the lines' crossings),
// so the minimum over keys with b in [b_lo, b_hi] is that over the scales whose ranges meet
// [b_lo / a, b_hi / a].
struct ScaleOrder {
  std::vector<size_t> sorted;      // scale indices by increasing c
  std::vector<double> crossing;    // crossing[k]: between sorted scales k and k + 1
};

// Fills row.active_* (from row.c2_a and row.inv_c2, already set for the row) with the scales
// whose ranges meet [b_lo / a, b_hi / a], widened by 2^-10 on each side: where the float sums
// of a scale left out come within rounding of the minimum, only at r within ~1e-7 of a crossing,
// the widened range holds both scales, so the minimum is the whole grid's. (Even a minimum a few
// units of rounding too high would stay sound: pair_slack's shrink by 2^-16 covers it.)
// Leaves n_active 0 (the whole grid) where the active scales would be more than 4.
inline void choose_active_scales(RowScreen& row, const ScaleOrder& order, double a, double b_lo,
                                 double b_hi) {
  row.n_active = 0;
  const size_t n = order.sorted.size();
  if (n == 0 || n > 8 || !(a > 0)) return;
  const double r_lo = b_lo / a * (1 - 0x1p-10), r_hi = b_hi / a * (1 + 0x1p-10);
  size_t first = 0, last = 0;
  for (size_t k = 0; k + 1 < n; ++k) {
    first += order.crossing[k] < r_lo;
    last += order.crossing[k] <= r_hi;
  }
  const size_t count = last - first + 1;
  if (count > 4) return;
  const int padded = count == 1 ? 1 : count == 2 ? 2 : 4;
  for (int t = 0; t < padded; ++t) {
    const size_t s = order.sorted[first + (static_cast<size_t>(t) < count ? t : 0)];
    row.active_c2_a[t] = row.c2_a[s];
    row.active_inv_c2[t] = row.inv_c2[s];
  }
  row.n_active = padded;
}

// slack[t] = 2 g[t] - T(t), where T(t) is a lower estimate of the smallest Gram value that can
// put an item of pair t under the bound; the pair is admitted where slack >= 0.
//
// Why T is never too high: the exact test admits when M(1 - 1e-12) - 2g - m|q||k| <= B. Each
// float term carries at most a few units of float rounding (u = 2^-24) relative to its value:
// c^2 a, 1/c^2, b and the fused multiply-add give M at most 3.01u too high; multiplying by
// (1 - 2^-16) more than undoes it and also covers the two roundings of the subtractions
// (2u of |M| + |m|q||k|| + |B| each); m|q||k| and B are enlarged by 2^-16 for the same reason,
// and B by 2^-100 absolute for results that underflow.
// min over 8 scales of c^2 a + b / c^2, written out: GCC vectorises the loop over keys that calls
// it only without a nested loop or branches.
QKSCOPE_KERNEL float grid_min8(const float* c2_a, const float* inv_c2, float b) {
  float m = c2_a[0] + b * inv_c2[0];
  m = std::min(m, c2_a[1] + b * inv_c2[1]);
  m = std::min(m, c2_a[2] + b * inv_c2[2]);
  m = std::min(m, c2_a[3] + b * inv_c2[3]);
  m = std::min(m, c2_a[4] + b * inv_c2[4]);
  m = std::min(m, c2_a[5] + b * inv_c2[5]);
  m = std::min(m, c2_a[6] + b * inv_c2[6]);
  return std::min(m, c2_a[7] + b * inv_c2[7]);
}

// min over the first N of the scales (N = 1, 2 or 4), for the active scales of a row.
template <int N>
QKSCOPE_KERNEL float grid_min(const float* c2_a, const float* inv_c2, float b) {
  float m = c2_a[0] + b * inv_c2[0];
  if constexpr (N > 1) m = std::min(m, c2_a[1] + b * inv_c2[1]);
  if constexpr (N > 2) {
    m = std::min(m, c2_a[2] + b * inv_c2[2]);
    m = std::min(m, c2_a[3] + b * inv_c2[3]);
  }
  return m;
}

template <int N>
QKSCOPE_KERNEL void pair_slack_active(const RowScreen& row, const float* __restrict gram,
                                      const float* __restrict key_norm2,
                                      const float* __restrict key_len, int64_t width,
                                      float* __restrict slack) {
  const float shrink = 1.0f - 0x1p-16f;
  const float margin = row.margin_per_key_len, bound = row.bound;
  float c2_a[N], inv_c2[N];
  std::copy_n(row.active_c2_a, N, c2_a);
  std::copy_n(row.active_inv_c2, N, inv_c2);
#pragma omp simd
  for (int64_t t = 0; t < width; ++t) {
    const float m = grid_min<N>(c2_a, inv_c2, key_norm2[t]);
    slack[t] = 2.0f * gram[t] - (m * shrink - key_len[t] * margin - bound);
  }
}

QKSCOPE_KERNEL void pair_slack(const RowScreen& row, const float* __restrict gram,
                       const float* __restrict key_norm2, const float* __restrict key_len,
                       int64_t width, float* __restrict slack) {
  switch (row.n_active) {  // the row's keys need only a few scales (choose_active_scales)
    case 1: return pair_slack_active<1>(row, gram, key_norm2, key_len, width, slack);
    case 2: return pair_slack_active<2>(row, gram, key_norm2, key_len, width, slack);
    case 4: return pair_slack_active<4>(row, gram, key_norm2, key_len, width, slack);
    default: break;
  }
  // Scales come in groups of 8 (padded by repeating scale 0, which leaves the minimum alone),
  // local copies so that a group stays in registers while the loop runs over keys.
  const size_t n_groups = row.c2_a.size() / 8;
  const float shrink = 1.0f - 0x1p-16f;
  const float margin = row.margin_per_key_len, bound = row.bound;
  float c2_a[8], inv_c2[8];
  for (size_t group = 0; group < n_groups; ++group) {
    std::copy_n(row.c2_a.data() + 8 * group, 8, c2_a);
    std::copy_n(row.inv_c2.data() + 8 * group, 8, inv_c2);
    if (n_groups == 1) {  // the usual grid: one pass does everything
#pragma omp simd
      for (int64_t t = 0; t < width; ++t) {
        const float m = grid_min8(c2_a, inv_c2, key_norm2[t]);
        slack[t] = 2.0f * gram[t] - (m * shrink - key_len[t] * margin - bound);
      }
      return;
    }
    if (group == 0) {
#pragma omp simd
      for (int64_t t = 0; t < width; ++t) slack[t] = grid_min8(c2_a, inv_c2, key_norm2[t]);
    } else {
#pragma omp simd
      for (int64_t t = 0; t < width; ++t)
        slack[t] = std::min(slack[t], grid_min8(c2_a, inv_c2, key_norm2[t]));
    }
  }
#pragma omp simd
  for (int64_t t = 0; t < width; ++t)
    slack[t] = 2.0f * gram[t] - (slack[t] * shrink - key_len[t] * margin - bound);
}

// Writes the t with slack[t] >= 0, in increasing order, to `out`; returns how many. With AVX-512
// the survivors of 16 keys are compressed to the front of a register and stored whole (`out`
// needs room for 16 entries past the count), without a branch per survivor; with AVX2 the set
// bits of the rare non-zero masks are walked.
QKSCOPE_KERNEL int64_t admitted_pairs(const float* slack, int64_t width, uint32_t* out) {
  int64_t n = 0, t = 0;
#if defined(__AVX512F__)
  const __m512 zero = _mm512_setzero_ps();
  __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; t + 16 <= width; t += 16) {
    const __mmask16 mask = _mm512_cmp_ps_mask(_mm512_loadu_ps(slack + t), zero, _CMP_GE_OQ);
    _mm512_storeu_si512(out + n, _mm512_maskz_compress_epi32(mask, index));
    n += __builtin_popcount(mask);
    index = _mm512_add_epi32(index, _mm512_set1_epi32(16));
  }
#elif defined(__AVX2__)
  const __m256 zero = _mm256_setzero_ps();
  for (; t + 8 <= width; t += 8) {
    auto mask = static_cast<uint32_t>(
        _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(slack + t), zero, _CMP_GE_OQ)));
    for (; mask != 0; mask &= mask - 1) out[n++] = static_cast<uint32_t>(t + __builtin_ctz(mask));
  }
#endif
  for (; t < width; ++t) {  // branch-free: survivors are unpredictable
    out[n] = static_cast<uint32_t>(t);
    n += slack[t] >= 0.0f;
  }
  return n;
}

// pair_slack then admitted_pairs, in one loop where AVX-512 compresses the survivors of each 16
// keys straight from the register (the row's active scales only; `out` as admitted_pairs'):
// the slack of the usual short rows (a sequence's keys) is not stored and read back.
QKSCOPE_KERNEL int64_t screened_pairs(const RowScreen& row, const float* __restrict gram,
                                      const float* __restrict key_norm2,
                                      const float* __restrict key_len, int64_t width,
                                      float* __restrict slack, uint32_t* out) {
#if defined(__AVX512F__)
  if (row.n_active > 0) {
    const int n_active = row.n_active;
    __m512 c2_a[4], inv_c2[4];
    for (int s = 0; s < 4; ++s) {
      const int from = s < n_active ? s : 0;
      c2_a[s] = _mm512_set1_ps(row.active_c2_a[from]);
      inv_c2[s] = _mm512_set1_ps(row.active_inv_c2[from]);
    }
    const __m512 shrink = _mm512_set1_ps(1.0f - 0x1p-16f);
    const __m512 margin = _mm512_set1_ps(row.margin_per_key_len);
    const __m512 bound = _mm512_set1_ps(row.bound);
    __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t n = 0;
    for (int64_t t = 0; t < width; t += 16) {
      const __mmask16 valid =
          width - t >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (width - t)) - 1);
      // Padding lanes read as 1 (a harmless finite norm) and are masked out below.
      const __m512 b = _mm512_mask_loadu_ps(_mm512_set1_ps(1.0f), valid, key_norm2 + t);
      const __m512 len = _mm512_maskz_loadu_ps(valid, key_len + t);
      const __m512 g = _mm512_maskz_loadu_ps(valid, gram + t);
      __m512 m = _mm512_fmadd_ps(b, inv_c2[0], c2_a[0]);
      if (n_active > 1) m = _mm512_min_ps(m, _mm512_fmadd_ps(b, inv_c2[1], c2_a[1]));
      if (n_active > 2) {
        m = _mm512_min_ps(m, _mm512_fmadd_ps(b, inv_c2[2], c2_a[2]));
        m = _mm512_min_ps(m, _mm512_fmadd_ps(b, inv_c2[3], c2_a[3]));
      }
      // 2 g - (m shrink - |k| margin - bound), as pair_slack.
      const __m512 lower =
          _mm512_sub_ps(_mm512_fmsub_ps(m, shrink, _mm512_mul_ps(len, margin)), bound);
      const __m512 sl = _mm512_sub_ps(_mm512_add_ps(g, g), lower);
      const __mmask16 mask = _mm512_mask_cmp_ps_mask(valid, sl, _mm512_setzero_ps(), _CMP_GE_OQ);
      _mm512_storeu_si512(out + n, _mm512_maskz_compress_epi32(mask, index));
      n += __builtin_popcount(mask);
      index = _mm512_add_epi32(index, _mm512_set1_epi32(16));
    }
    return n;
  }
#endif
  pair_slack(row, gram, key_norm2, key_len, width, slack);
  return admitted_pairs(slack, width, out);
}

}  // namespace qkscope::detail::QKSCOPE_ISA_NS
