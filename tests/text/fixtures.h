// Fixtures shared by the tokenizer tests: a scratch directory, and small vocabularies whose
// expected encodings are worked out by hand in the tests (never by running the code).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace qkscope::text::testing {

// A fresh directory, removed with everything in it at scope exit.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Writes `bytes` to `name` inside the directory and returns its path.
  std::filesystem::path write(const std::string& name, std::string_view bytes) const;
  std::filesystem::path write_json(const std::string& name, const nlohmann::json& j) const;

 private:
  std::filesystem::path path_;
};

// BERT fixture vocabulary; id = index. Ids used by the tests:
//  0 [PAD]  1 [UNK]  2 [CLS]  3 [SEP]  4 [MASK]  5 hello  6 world  7 ##world  8 don  9 '
// 10 t  11 u  12 .  13 s  14 a  15 ##a  16 3  17 14  18 $  19 b  20 ¿  21 中  22 文  23 H
// 24 ##é  25 ##llo  26 [  27 ]  28 i  29 ##<U+0307>
const std::vector<std::string>& bert_vocab();
std::string bert_vocab_txt();  // one token per line

// tokenizer.json equivalent to load_bert_vocab(bert_vocab_txt(), lowercase=true), plus the
// added token "QKScope" (id 30, normalized, not special).
nlohmann::json bert_tokenizer_json();

// GPT-2 style byte-level BPE fixture (no prefix space, ByteLevel post-processor, added
// special tokens <mask> id 45 and <|endoftext|> id 46). Ids:
//  0 <s>  1 <pad>  2 </s>  3 <unk>  4 H  5 e  6 l  7 o  8 Ġ  9 w  10 r  11 d  12 !  13 I
// 14 '  15 m  16 k  17 Ċ  18 ĉ  19 c  20 a  21 f  22 Ã  23 ©  24 ð  25 Ł  26 ĺ  27 Ģ
// 28 lo  29 ll  30 He  31 Hel  32 Hello  33 Ġw  34 or  35 Ġwor  36 ld  37 Ġworld  38 ok
// 39 Ġok  40 ĠI  41 'm  42 ĊĊ  43 ĠĠ  44 Ã©
// Merges by rank: 0 "l o", 1 "l l", 2 "H e", 3 "He l", 4 "Hel lo", 5 "Ġ w", 6 "o r",
// 7 "Ġw or", 8 "l d", 9 "Ġwor ld", 10 "o k", 11 "Ġ ok", 12 "Ġ I", 13 "' m", 14 "Ċ Ċ",
// 15 "Ġ Ġ", 16 "Ã ©". `merges_as_pairs` writes them as ["a","b"] (newer files).
nlohmann::json bpe_tokenizer_json(bool merges_as_pairs = false);

}  // namespace qkscope::text::testing
