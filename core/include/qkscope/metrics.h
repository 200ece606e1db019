// The scaling metrics of SPEC section 3, per head, over a grid of scales c (queries c*q, keys
// k/c): weighted correlation, weighted correlation scaled, norm ratio; and the chosen c.
//
// Exactness: every pair in scope is evaluated (no sampling) and the threshold is the exact
// percentile. Distances are screened from one single-precision Gram matrix q.k^T per block with
// a proven error margin, and every pair that could fall under the threshold is recomputed
// directly in double precision, so the near sets are those a float64 computation decides.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "qkscope/qk_data.h"

namespace qkscope {

enum class PairScope { sequence, causal, all };
enum class SelectRule { closest, min };

struct MetricOptions {
  std::vector<double> scales = {0.2, 0.4, 0.8, 1, 1.25, 2.5, 5};  // positive, distinct
  PairScope pairs = PairScope::sequence;
  bool center = false;       // subtract the query and key centroids before distances
  double percentile = 0.5;   // threshold percentile, in percent, in (0, 100)
  SelectRule select = SelectRule::closest;
  int threads = 0;           // worker threads; 0 = the machine's cores
  // Bytes of candidate items one head may hold (each worker holds one head's). Heads whose items
  // would not fit (`all` scope beyond ~20k tokens at the default) are computed in three passes
  // that keep one block of queries at a time: the same results, about three times the work.
  int64_t item_memory = int64_t{256} << 20;
};

// Throws UsageError naming the option when `options` is invalid.
void validate(const MetricOptions& options);

const char* to_string(PairScope scope);
const char* to_string(SelectRule rule);
PairScope parse_pair_scope(const std::string& text);   // throws UsageError
SelectRule parse_select_rule(const std::string& text); // throws UsageError
// "0.2,0.4,1" or "log:LO:HI:N" (N log-spaced scales from LO to HI inclusive); throws UsageError.
std::vector<double> parse_scales(const std::string& text);

// Per head and scale.
struct ScaleResult {
  double c = 1;
  std::optional<double> wcorr;         // R(c): mean r_i over qualifying queries
  std::optional<double> wcorr_scaled;  // S(c) = R(c) n(c) / mean_h n(h,c)
  int64_t queries = 0;                 // n(c) = |Q(c)|: queries with an r
  int64_t near_pairs = 0;              // pairs in scope with y(c) < threshold
};

struct HeadResult {
  int layer = 0;
  int head = 0;                 // model head number
  std::string module;
  double prescale = 1;
  int64_t tokens = 0;           // tokens the metrics used
  int64_t nonfinite_tokens = 0; // tokens left out because q or k of this head has NaN or Inf
  int64_t pairs = 0;            // |P|
  std::optional<double> threshold;  // d; none when P is empty
  double median_q_norm = 0, median_k_norm = 0;
  std::optional<double> c_wcorr, c_wcorr_scaled, c_norm;
  std::vector<ScaleResult> scales;  // in the order of MetricOptions::scales
};

struct CTable {
  MetricOptions options;
  std::vector<HeadResult> heads;  // by layer, then head
  int64_t tokens_seen = 0, tokens_kept = 0, sequences_seen = 0, sequences_kept = 0;
};

// Progress: called from the calling thread with (heads done, heads in all).
using ProgressFn = std::function<void(int64_t, int64_t)>;

// Computes the table for every head of every site in `data`. Uses options.threads threads.
// A token whose query or key of a head holds NaN or Inf is left out of that head's metrics
// (as query and as key) and counted in HeadResult::nonfinite_tokens.
CTable compute_ctable(const QkData& data, const MetricOptions& options,
                      const ProgressFn& progress = {});

// compute_ctable in parts, for heads spread over processes (mpirun -np K capture): heads are
// numbered in table order (by site, then the site's stored heads), and each part computes a
// range of them; assemble_ctable then does what needs every head (metric 2's mean n(h, c) and
// the choice on it). assemble_ctable(data, options, compute_heads(data, options, 0, all)) is
// compute_ctable(data, options), byte for byte: a head's metrics read only its own vectors.
int64_t count_heads(const QkData& data);
// Heads [first, first + count) of `data` (threads and progress as compute_ctable). Each result
// is complete except wcorr_scaled and c_wcorr_scaled, which assemble_ctable fills.
std::vector<HeadResult> compute_heads(const QkData& data, const MetricOptions& options,
                                      int64_t first, int64_t count,
                                      const ProgressFn& progress = {});
// The table from every head's result, in table order (the parts concatenated), and the counts of
// `data` (its token and sequence counts and its sites' head counts; no vector is read).
// Throws Error when `heads` does not hold count_heads(data) heads or a head's grid is not
// options.scales.
CTable assemble_ctable(const QkData& data, const MetricOptions& options,
                       std::vector<HeadResult> heads);

// The chosen scale under a rule (SPEC 3 "Choosing c"): the index into `c`, or nullopt when no
// value is defined. values[i] belongs to c[i].
std::optional<size_t> choose_scale(const std::vector<double>& c,
                                   const std::vector<std::optional<double>>& values,
                                   SelectRule rule);

// Percentile with linear interpolation between order statistics (numpy's default) of
// `values`, which it reorders. Throws on an empty input.
double percentile_linear(std::vector<double>& values, double percent);

}  // namespace qkscope
