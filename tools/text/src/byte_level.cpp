// GPT-2's byte-level alphabet and regex, and the ByteLevel pre-tokenizer built on them.
#include "qkscope/text/byte_level.h"

#include <array>
#include <utility>

#include "pre_tokenizers.h"
#include "regex.h"
#include "utf8.h"

namespace qkscope::text {
namespace {

// bytes_to_unicode() of GPT-2's encoder.py: printable Latin-1 bytes keep their code point,
// the others get U+0100 + n in byte order, so every byte has a visible, non-space symbol.
const std::array<char32_t, 256>& byte_table() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

// Byte-level symbols as UTF-8, so mapping a piece is one table lookup per byte.
const std::array<std::string, 256>& byte_symbols() {
  static const std::array<std::string, 256> symbols = [] {
    std::array<std::string, 256> s;
    for (int b = 0; b < 256; ++b) detail::append_utf8(s[b], byte_table()[b]);
    return s;
  }();
  return symbols;
}

// GPT-2's pattern with \s spelled out as the White_Space property, which HF's Oniguruma and
// Python's `regex` follow: PCRE2's UCP \s (Zs, \h, \v) also takes U+180E, which left
// White_Space in Unicode 6.3. (?!\S) becomes (?![^WS]) accordingly.
#define QKSCOPE_WS "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
                   "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" QKSCOPE_WS "\\p{L}\\p{N}]+"
    "|[" QKSCOPE_WS "]+(?![^" QKSCOPE_WS "])|[" QKSCOPE_WS "]+";
#undef QKSCOPE_WS

const detail::Regex& gpt2_regex() {
  static const detail::Regex regex(kGpt2Pattern);
  return regex;
}

// Valid UTF-8 `text` cut into its matches (the pattern matches every character, so there
// are no gaps, but a gap would be kept as a piece, as HF's Isolated split keeps it).
void append_gpt2_pieces(std::string_view text, std::vector<std::string>& out) {
  for (const detail::Span& s : gpt2_regex().find_matches(text)) {
    if (s.end > s.begin) out.emplace_back(text.substr(s.begin, s.end - s.begin));
  }
}

class ByteLevel final : public detail::PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}

  void pre_tokenize(std::vector<std::string>& pieces) const override {
    std::vector<std::string> split;
    for (std::string& piece : pieces) {
      // Per piece, like HF: text after an added token gets its own leading space too.
      if (add_prefix_space_ && piece.front() != ' ') piece.insert(piece.begin(), ' ');
      if (use_regex_) {
        append_gpt2_pieces(piece, split);
      } else {
        split.push_back(std::move(piece));
      }
    }
    for (std::string& piece : split) piece = to_byte_level(piece);
    pieces = std::move(split);
  }

 private:
  bool add_prefix_space_;
  bool use_regex_;
};

}  // namespace

char32_t byte_to_unicode(unsigned char byte) noexcept { return byte_table()[byte]; }

std::optional<unsigned char> unicode_to_byte(char32_t cp) noexcept {
  if (cp < 256) {
    if (byte_table()[cp] == cp) return static_cast<unsigned char>(cp);
    return std::nullopt;
  }
  for (int b = 0; b < 256; ++b) {
    if (byte_table()[b] == cp) return static_cast<unsigned char>(b);
  }
  return std::nullopt;
}

std::string to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_symbols()[static_cast<unsigned char>(c)];
  return out;
}

std::vector<std::string> gpt2_split(std::string_view text) {
  detail::check_utf8(text);
  std::vector<std::string> out;
  append_gpt2_pieces(text, out);
  return out;
}

namespace detail {
std::unique_ptr<PreTokenizer> make_byte_level(bool add_prefix_space, bool use_regex) {
  return std::make_unique<ByteLevel>(add_prefix_space, use_regex);
}
}  // namespace detail

}  // namespace qkscope::text
