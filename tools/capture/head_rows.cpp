#include "head_rows.h"

#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>

#include "qkscope/error.h"

namespace qkscope::cli {
namespace {

class Writer {
 public:
  template <class T>
  void pod(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    bytes_.append(reinterpret_cast<const char*>(&value), sizeof(T));
  }
  void optional(const std::optional<double>& value) {
    pod<uint8_t>(value.has_value());
    if (value) pod(*value);
  }
  void string(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes_.append(s);
  }
  std::string take() { return std::move(bytes_); }

 private:
  std::string bytes_;
};

class Reader {
 public:
  Reader(const std::string& bytes, const std::string& from) : bytes_(bytes), from_(from) {}
  template <class T>
  T pod() {
    need(sizeof(T));
    T value;
    std::memcpy(&value, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return value;
  }
  std::optional<double> optional() {
    if (pod<uint8_t>() == 0) return std::nullopt;
    return pod<double>();
  }
  std::string string() {
    const auto size = pod<uint64_t>();
    need(size);
    std::string s = bytes_.substr(at_, size);
    at_ += size;
    return s;
  }
  bool done() const { return at_ == bytes_.size(); }

 private:
  void need(uint64_t n) const {
    QKSCOPE_CHECK(n <= bytes_.size() - at_, "head rows from {}: cut short ({} bytes, {} more "
                  "expected at byte {})", from_, bytes_.size(), n, at_);
  }
  const std::string& bytes_;
  const std::string& from_;
  size_t at_ = 0;
};

}  // namespace

std::string encode_head_rows(const std::vector<HeadResult>& heads) {
  Writer w;
  w.pod<uint64_t>(heads.size());
  for (const HeadResult& h : heads) {
    w.pod<int32_t>(h.layer);
    w.pod<int32_t>(h.head);
    w.string(h.module);
    w.pod(h.prescale);
    w.pod<int64_t>(h.tokens);
    w.pod<int64_t>(h.nonfinite_tokens);
    w.pod<int64_t>(h.pairs);
    w.optional(h.threshold);
    w.pod(h.median_q_norm);
    w.pod(h.median_k_norm);
    w.optional(h.c_wcorr);
    w.optional(h.c_wcorr_scaled);
    w.optional(h.c_norm);
    w.pod<uint64_t>(h.scales.size());
    for (const ScaleResult& s : h.scales) {
      w.pod(s.c);
      w.optional(s.wcorr);
      w.optional(s.wcorr_scaled);
      w.pod<int64_t>(s.queries);
      w.pod<int64_t>(s.near_pairs);
    }
  }
  return w.take();
}

std::vector<HeadResult> decode_head_rows(const std::string& bytes, const std::string& from) {
  Reader r(bytes, from);
  const auto count = r.pod<uint64_t>();
  QKSCOPE_CHECK(count <= bytes.size(), "head rows from {}: {} rows in {} bytes", from, count,
                bytes.size());
  std::vector<HeadResult> heads(count);
  for (HeadResult& h : heads) {
    h.layer = r.pod<int32_t>();
    h.head = r.pod<int32_t>();
    h.module = r.string();
    h.prescale = r.pod<double>();
    h.tokens = r.pod<int64_t>();
    h.nonfinite_tokens = r.pod<int64_t>();
    h.pairs = r.pod<int64_t>();
    h.threshold = r.optional();
    h.median_q_norm = r.pod<double>();
    h.median_k_norm = r.pod<double>();
    h.c_wcorr = r.optional();
    h.c_wcorr_scaled = r.optional();
    h.c_norm = r.optional();
    h.scales.resize(r.pod<uint64_t>());
    for (ScaleResult& s : h.scales) {
      s.c = r.pod<double>();
      s.wcorr = r.optional();
      s.wcorr_scaled = r.optional();
      s.queries = r.pod<int64_t>();
      s.near_pairs = r.pod<int64_t>();
    }
  }
  QKSCOPE_CHECK(r.done(), "head rows from {}: {} bytes, more than its {} rows", from,
                bytes.size(), heads.size());
  return heads;
}

}  // namespace qkscope::cli
