// Order statistics the engine needs: a few small ranks of a sample, the median (even counts: the
// mean of the two middle values) and the percentile's interpolation between two order statistics
// (numpy's linear rule). The running K-th smallest bound is in head_engine.h, with the pass.
#pragma once

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <vector>

namespace qkscope::detail {

// The values of rank `ranks` (0-based, increasing) among `values`.
std::vector<double> small_order_statistics(std::vector<double> values,
                                           const std::vector<size_t>& ranks);

// The median of `v` (the mean of the two middle values for an even count); 0 when empty.
double median(std::vector<double> v);

// v[lo] + frac (v[lo + 1] - v[lo]) of the sorted values (v[lo] alone when lo is the last);
// reorders `values` and may leave only some of them (it selects within their bins).
double interpolated_order_statistic(std::vector<double>& values, int64_t lo, double frac);

}  // namespace qkscope::detail
