#include "regex.h"

#include <memory>

// PCRE2_CODE_UNIT_WIDTH=8 comes from CMake.
#include <pcre2.h>

#include "qkscope/error.h"
#include "utf8.h"

namespace qkscope::text::detail {
namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof buffer) < 0) return "unknown PCRE2 error";
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

Regex::Regex(std::string_view pattern, bool literal) {
  // PCRE2_LITERAL refuses UCP (which only changes what escapes mean, and a literal has none).
  // \C (one code unit) is refused: it splits characters, and every caller relies on pieces of
  // valid UTF-8 (matching uses PCRE2_NO_UTF_CHECK; the models decode code points).
  const uint32_t options =
      literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C;
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error, &offset, nullptr);
  QKSCOPE_CHECK_AS(FormatError, code != nullptr, "bad regex /{}/: {} at offset {}", pattern,
                   pcre2_message(error), offset);
  // JIT is only a speed-up; when the platform lacks it, the interpreter gives the same matches.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<Span> Regex::find_matches(std::string_view text) const {
  if (text.empty()) return {Span{0, 0, false}};
  auto* code = static_cast<pcre2_code*>(code_);
  // Match data per call keeps concurrent calls independent.
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  QKSCOPE_CHECK(data != nullptr, "out of memory creating PCRE2 match data");

  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::vector<Span> spans;
  std::size_t gap_start = 0;  // end of the previous match
  std::size_t from = 0;       // where the next search starts
  while (from <= text.size()) {
    // Text was validated once at the door; re-checking it on every call would be quadratic.
    const int rc = pcre2_match(code, subject, text.size(), from, PCRE2_NO_UTF_CHECK, data.get(),
                               nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    QKSCOPE_CHECK(rc >= 0, "regex match failed: {}", pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.get());
    const std::size_t begin = ov[0], end = ov[1];
    if (begin > gap_start) spans.push_back({gap_start, begin, false});
    spans.push_back({begin, end, true});
    gap_start = end;
    if (end > begin) {
      from = end;
    } else if (end < text.size()) {
      from = end + sequence_length(static_cast<unsigned char>(text[end]));
    } else {
      break;
    }
  }
  if (gap_start < text.size()) spans.push_back({gap_start, text.size(), false});
  return spans;
}

}  // namespace qkscope::text::detail
