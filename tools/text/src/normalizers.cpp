#include "normalizers.h"

#include <utility>

#include "utf8.h"

namespace qkscope::text::detail {
namespace {

// Calls f(cp) for each code point of valid UTF-8.
template <typename F>
void for_each_code_point(std::string_view text, F&& f) {
  std::size_t pos = 0;
  while (pos < text.size()) f(next_code_point(text, pos));
}

std::string lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for_each_code_point(text, [&](char32_t cp) { append_lowercase(out, cp); });
  return out;
}

std::string drop_nonspacing_marks(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for_each_code_point(text, [&](char32_t cp) {
    if (!is_nonspacing_mark(cp)) append_utf8(out, cp);
  });
  return out;
}

// The steps run in HF's order: clean, CJK, accents, lowercase (lowercasing can produce marks,
// e.g. U+0130 -> "i\u0307", which then survive because accents were stripped before).
class BertNormalizer final : public Normalizer {
 public:
  explicit BertNormalizer(BertNormalizerOptions options) : options_(options) {}

  std::string normalize(std::string_view text) const override {
    std::string out;
    out.reserve(text.size() + text.size() / 4);
    for_each_code_point(text, [&](char32_t cp) {
      if (options_.clean_text) {
        // Filter before mapping, like HF: '\v', '\f' and U+0085 are both Cc and White_Space,
        // and are therefore removed rather than turned into spaces.
        if (cp == 0 || cp == 0xFFFD || is_bert_control(cp)) return;
        if (is_whitespace(cp)) cp = ' ';
      }
      if (options_.handle_chinese_chars && is_chinese_char(cp)) {
        out += ' ';
        append_utf8(out, cp);
        out += ' ';
      } else {
        append_utf8(out, cp);
      }
    });
    if (options_.strip_accents) {
      out = drop_nonspacing_marks(detail::normalize(out, NormalForm::kNFD));
    }
    if (options_.lowercase) out = lowercase(out);
    return out;
  }

 private:
  BertNormalizerOptions options_;
};

class Lowercase final : public Normalizer {
 public:
  std::string normalize(std::string_view text) const override { return lowercase(text); }
};

class StripAccents final : public Normalizer {
 public:
  std::string normalize(std::string_view text) const override {
    return drop_nonspacing_marks(text);
  }
};

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  std::string normalize(std::string_view text) const override {
    return detail::normalize(text, form_);
  }

 private:
  NormalForm form_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string normalize(std::string_view text) const override {
    std::string out(text);
    for (const auto& step : steps_) out = step->normalize(out);
    return out;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> make_bert_normalizer(BertNormalizerOptions options) {
  return std::make_unique<BertNormalizer>(options);
}
std::unique_ptr<Normalizer> make_lowercase() { return std::make_unique<Lowercase>(); }
std::unique_ptr<Normalizer> make_strip_accents() { return std::make_unique<StripAccents>(); }
std::unique_ptr<Normalizer> make_unicode_normalizer(NormalForm form) {
  return std::make_unique<UnicodeNormalizer>(form);
}
std::unique_ptr<Normalizer> make_normalizer_sequence(
    std::vector<std::unique_ptr<Normalizer>> steps) {
  return std::make_unique<Sequence>(std::move(steps));
}

}  // namespace qkscope::text::detail
