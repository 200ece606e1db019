// Parsing and validation of the metric options (SPEC section 3 and the CLI flags of section 5).
#include <cmath>
#include <cstdlib>
#include <set>

#include "qkscope/error.h"
#include "qkscope/metrics.h"

namespace qkscope {
namespace {

// Parses a whole string as a finite double; throws UsageError naming the option otherwise.
double parse_number(const std::string& text, const char* option) {
  const char* begin = text.c_str();
  char* end = nullptr;
  double value = std::strtod(begin, &end);
  QKSCOPE_CHECK_AS(UsageError, !text.empty() && end == begin + text.size() && std::isfinite(value),
                   "{}: expected a number, got '{}'", option, text);
  return value;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t end = text.find(sep, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

}  // namespace

const char* to_string(PairScope scope) {
  switch (scope) {
    case PairScope::sequence: return "sequence";
    case PairScope::causal: return "causal";
    case PairScope::all: return "all";
  }
  return "?";
}

const char* to_string(SelectRule rule) {
  return rule == SelectRule::closest ? "closest" : "min";
}

PairScope parse_pair_scope(const std::string& text) {
  if (text == "sequence") return PairScope::sequence;
  if (text == "causal") return PairScope::causal;
  if (text == "all") return PairScope::all;
  throw UsageError(fmt::format("--pairs: expected sequence, causal or all, got '{}'", text));
}

SelectRule parse_select_rule(const std::string& text) {
  if (text == "closest") return SelectRule::closest;
  if (text == "min") return SelectRule::min;
  throw UsageError(fmt::format("--select: expected closest or min, got '{}'", text));
}

std::vector<double> parse_scales(const std::string& text) {
  std::vector<double> scales;
  if (text.rfind("log:", 0) == 0) {
    auto parts = split(text.substr(4), ':');
    QKSCOPE_CHECK_AS(UsageError, parts.size() == 3,
                     "--scales: expected log:LO:HI:N, got '{}'", text);
    double lo = parse_number(parts[0], "--scales (LO)");
    double hi = parse_number(parts[1], "--scales (HI)");
    double n = parse_number(parts[2], "--scales (N)");
    QKSCOPE_CHECK_AS(UsageError, lo > 0 && hi > lo,
                     "--scales: expected 0 < LO < HI in log:LO:HI:N, got LO={} HI={}", lo, hi);
    QKSCOPE_CHECK_AS(UsageError, n >= 2 && n <= 10000 && n == std::floor(n),
                     "--scales: expected a whole N from 2 to 10000 in log:LO:HI:N, got {}",
                     parts[2]);
    int count = static_cast<int>(n);
    for (int i = 0; i < count; ++i) {
      double t = static_cast<double>(i) / (count - 1);
      scales.push_back(i == count - 1 ? hi : std::exp(std::log(lo) + t * (std::log(hi) - std::log(lo))));
    }
  } else {
    for (const std::string& part : split(text, ','))
      scales.push_back(parse_number(part, "--scales"));
  }
  MetricOptions probe;
  probe.scales = scales;
  validate(probe);
  return scales;
}

void validate(const MetricOptions& o) {
  QKSCOPE_CHECK_AS(UsageError, !o.scales.empty(), "--scales: expected at least one scale");
  std::set<double> seen;
  for (double c : o.scales) {
    QKSCOPE_CHECK_AS(UsageError, std::isfinite(c) && c > 0,
                     "--scales: expected positive finite scales, got {}", c);
    QKSCOPE_CHECK_AS(UsageError, seen.insert(c).second, "--scales: scale {} appears twice", c);
  }
  QKSCOPE_CHECK_AS(UsageError, std::isfinite(o.percentile) && o.percentile > 0 && o.percentile < 100,
                   "--percentile: expected a percentile in (0, 100), got {}", o.percentile);
  QKSCOPE_CHECK_AS(UsageError, o.threads >= 0, "--threads: expected 0 (all cores) or more, got {}",
                   o.threads);
  QKSCOPE_CHECK_AS(UsageError, o.item_memory > 0,
                   "MetricOptions::item_memory: expected a positive number of bytes, got {}",
                   o.item_memory);
}

}  // namespace qkscope
