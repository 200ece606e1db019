#include "sequence_identity.h"

#include <fmt/format.h>
#include <time.h>
#include <unistd.h>

#include <random>

#include "qkscope/error.h"

namespace qkscope::tools {
namespace {

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "unknown-host";
  return name;
}

std::string utc_now() {
  const time_t now = ::time(nullptr);
  struct tm t {};
  ::gmtime_r(&now, &t);
  char text[32] = {};
  ::strftime(text, sizeof text, "%Y%m%dT%H%M%SZ", &t);  // no ':' (the source's separator)
  return text;
}

}  // namespace

SequenceIdentity::SequenceIdentity(std::optional<int64_t> prefix, const std::string& kind) {
  if (prefix) {
    QKSCOPE_CHECK_AS(UsageError, *prefix >= 0 && *prefix <= kMaxSequencePrefix,
                     "--sequence-prefix: expected 0..{} ({} bits: indices stay below 2^53), "
                     "got {}", kMaxSequencePrefix, kPrefixBits, *prefix);
    prefix_ = *prefix;
  } else {
    std::random_device device;  // getrandom(2) on Linux
    prefix_ = static_cast<int64_t>(device() & static_cast<unsigned>(kMaxSequencePrefix));
    random_ = true;
  }
  source_ = fmt::format("{}:{}:{}:{}", kind, host_name(), ::getpid(), utc_now());
}

void SequenceIdentity::check_requests(int64_t count, const std::string& what) {
  QKSCOPE_CHECK(count >= 0 && count <= kMaxRequests,
                "{}: expected at most 2^{} = {} requests per process (sequence index = prefix << "
                "{} | request number), got {}; restart the server (a new process draws a new "
                "prefix)", what, kRequestBits, kMaxRequests, kRequestBits, count);
}

int64_t SequenceIdentity::sequence(int64_t request) const {
  QKSCOPE_CHECK(request >= 0 && request < kMaxRequests,
                "request number {}: expected 0..2^{}-1 (the request bits of a sequence index)",
                request, kRequestBits);
  return (prefix_ << kRequestBits) | request;
}

SequenceRange SequenceIdentity::range(int64_t first, int64_t end) const {
  QKSCOPE_CHECK(0 <= first && first <= end && end <= kMaxRequests,
                "SequenceIdentity::range: expected 0 <= first <= end <= 2^{}, got [{}, {})",
                kRequestBits, first, end);
  const int64_t base = prefix_ << kRequestBits;
  return SequenceRange{base + first, base + end, source_, {}};
}

std::string describe(const SequenceIdentity& identity) {
  return fmt::format("sequence prefix {} ({}): request n is sequence {} << {} | n = {} + n; "
                     "source {}", identity.prefix(),
                     identity.random() ? "random" : "--sequence-prefix", identity.prefix(),
                     kRequestBits, identity.prefix() << kRequestBits, identity.source());
}

}  // namespace qkscope::tools
