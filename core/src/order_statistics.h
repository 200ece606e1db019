// Order statistics the engine needs: a running K-th smallest bound, a few small ranks of a
// sample, the median (even counts: the mean of the two middle values) and the percentile's
// interpolation between two order statistics (numpy's linear rule).
#pragma once

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <vector>

namespace qkscope::detail {

// Keeps B = the K-th smallest of the values offered (values at or above a starting cap are
// ignored), with amortised O(1) work per value.
class KthSmallestBound {
 public:
  KthSmallestBound(size_t k, double cap) : k_(k), bound_(cap) {}
  double bound() const { return bound_; }
  void offer(double value) {
    if (value >= bound_) return;
    values_.push_back(value);
    if (values_.size() >= 2 * k_ + 1024) shrink();
  }

 private:
  void shrink() {
    std::nth_element(values_.begin(), values_.begin() + (k_ - 1), values_.end());
    bound_ = values_[k_ - 1];
    values_.resize(k_);
  }
  size_t k_;
  double bound_;
  std::vector<double> values_;
};

// The values of rank `ranks` (0-based, increasing) among `values`.
std::vector<double> small_order_statistics(std::vector<double> values,
                                           const std::vector<size_t>& ranks);

// The median of `v`; 0 when empty.
double median(std::vector<double> v);

// v[lo] + frac (v[lo + 1] - v[lo]) of the sorted values (v[lo] alone when lo is the last);
// reorders `values`.
double interpolated_order_statistic(std::vector<double>& values, int64_t lo, double frac);

}  // namespace qkscope::detail
