// Global sequence identities for servers (issue 14): the q/k files of two server processes, or
// of one server restarted, must not share sequence indices, or `capture --qk a b` would refuse
// them (or, with ranges missing, take two requests for one). A server numbers its requests
// 0, 1, 2, ... as before; request n is stored under the sequence index
//     prefix << 40 | n
// where the prefix is chosen once per process: --sequence-prefix N (reproducible; give each
// process of a fleet its own), or else 13 random bits (std::random_device).
//
// Why 13 + 40 bits: every index stays below 2^53, so it is exact wherever it is read as a
// double: the HTML report's JavaScript compares token sequences with ===, and JSON readers
// (JavaScript, jq) parse numbers as doubles; with 23 + 40 bits, requests 0..1023 of one
// process would be one number there. 2^40 requests is ~35 years at 1000 requests/s; past it a
// server refuses to number more (the message says to restart, which draws a new prefix).
// Two processes that draw the same random prefix (1 in 8192 for a pair) both own request 0's
// index, so their files are refused as overlapping by capture --qk, never merged wrongly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qkscope/qk_merge.h"

namespace qkscope::tools {

inline constexpr int kRequestBits = 40;
inline constexpr int kPrefixBits = 13;
inline constexpr int64_t kMaxRequests = int64_t{1} << kRequestBits;          // numbers 0..2^40-1
inline constexpr int64_t kMaxSequencePrefix = (int64_t{1} << kPrefixBits) - 1;  // 8191

class SequenceIdentity {
 public:
  // `prefix`: 0..kMaxSequencePrefix (else UsageError naming --sequence-prefix); nullopt: a
  // random one. `kind` starts the source text: "<kind>:<host>:<pid>:<start time, UTC>".
  SequenceIdentity(std::optional<int64_t> prefix, const std::string& kind);

  int64_t prefix() const { return prefix_; }
  bool random() const { return random_; }  // drawn, not given
  // "http-server:<host>:<pid>:<YYYYmmddTHHMMSSZ>": where this process's sequences come from.
  const std::string& source() const { return source_; }

  // The sequence index of request `request`. Throws Error when the request is outside
  // 0..kMaxRequests-1 (see check_requests).
  int64_t sequence(int64_t request) const;
  // Throws Error unless `count` requests (numbers 0..count-1) fit in kRequestBits: "<what>:
  // expected at most 2^40 = ... requests per process, got ...; restart the server (a new
  // process, a new prefix)".
  static void check_requests(int64_t count, const std::string& what);

  // The range of requests [first, end), as sequences.* metadata describes it.
  SequenceRange range(int64_t first, int64_t end) const;

 private:
  int64_t prefix_ = 0;
  bool random_ = false;
  std::string source_;
};

// "sequence prefix P (random|--sequence-prefix): request n is sequence P << 40 | n =
// <first index> + n; source <source>", the line a server prints at start.
std::string describe(const SequenceIdentity& identity);

}  // namespace qkscope::tools
