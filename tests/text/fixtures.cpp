#include "fixtures.h"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <stdexcept>

#include <gtest/gtest.h>

namespace qkscope::text::testing {

ScratchDir::ScratchDir() {
  // ctest runs each test in its own process, possibly in parallel: pid + counter are unique.
  static std::atomic<int> counter{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  path_ = std::filesystem::path(::testing::TempDir()) /
          ("qkscope_text_" + std::string(info ? info->name() : "suite") + "_" +
           std::to_string(::getpid()) + "_" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::filesystem::path ScratchDir::write(const std::string& name, std::string_view bytes) const {
  const auto file = path_ / name;
  std::ofstream out(file, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write test fixture " + file.string());
  return file;
}

std::filesystem::path ScratchDir::write_json(const std::string& name,
                                             const nlohmann::json& j) const {
  return write(name, j.dump(2));
}

const std::vector<std::string>& bert_vocab() {
  static const std::vector<std::string> vocab = {
      "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##world", "don", "'",
      "t",     "u",     ".",     "s",     "a",      "##a",   "3",     "14",      "$",   "b",
      "¿",     "中",    "文",    "H",     "##é",    "##llo", "[",     "]",       "i",
      "##\xCC\x87",  // "##" + U+0307 COMBINING DOT ABOVE
  };
  return vocab;
}

std::string bert_vocab_txt() {
  std::string out;
  for (const auto& token : bert_vocab()) out += token + "\n";
  return out;
}

nlohmann::json bert_tokenizer_json() {
  using nlohmann::json;
  json vocab = json::object();
  for (std::size_t i = 0; i < bert_vocab().size(); ++i) vocab[bert_vocab()[i]] = i;
  json added = json::array();
  for (int id = 0; id <= 4; ++id) {
    added.push_back({{"id", id}, {"content", bert_vocab()[id]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                     {"special", true}});
  }
  added.push_back({{"id", 30}, {"content", "QKScope"}, {"single_word", false}, {"lstrip", false},
                   {"rstrip", false}, {"normalized", true}, {"special", false}});
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true},
        {"strip_accents", nullptr}, {"lowercase", true}}},
      {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "[CLS]"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 0}}}}})},
        {"pair", json::array()},
        {"special_tokens",
         {{"[CLS]", {{"id", "[CLS]"}, {"ids", {2}}, {"tokens", {"[CLS]"}}}},
          {"[SEP]", {{"id", "[SEP]"}, {"ids", {3}}, {"tokens", {"[SEP]"}}}}}}}},
      {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
      {"model",
       {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
        {"max_input_chars_per_word", 100}, {"vocab", vocab}}},
  };
}

nlohmann::json bpe_tokenizer_json(bool merges_as_pairs) {
  using nlohmann::json;
  const std::vector<std::string> tokens = {
      "<s>", "<pad>", "</s>", "<unk>", "H",  "e",   "l",     "o",   "Ġ",   "w",
      "r",   "d",     "!",    "I",     "'",  "m",   "k",     "Ċ",   "ĉ",   "c",
      "a",   "f",     "Ã",    "©",     "ð",  "Ł",   "ĺ",     "Ģ",   "lo",  "ll",
      "He",  "Hel",   "Hello", "Ġw",   "or", "Ġwor", "ld",   "Ġworld", "ok", "Ġok",
      "ĠI",  "'m",    "ĊĊ",   "ĠĠ",    "Ã©",
  };
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"l", "o"},  {"l", "l"},  {"H", "e"},  {"He", "l"}, {"Hel", "lo"}, {"Ġ", "w"},
      {"o", "r"},  {"Ġw", "or"}, {"l", "d"}, {"Ġwor", "ld"}, {"o", "k"}, {"Ġ", "ok"},
      {"Ġ", "I"},  {"'", "m"},  {"Ċ", "Ċ"},  {"Ġ", "Ġ"},  {"Ã", "©"},
  };
  json vocab = json::object();
  for (std::size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  json merge_list = json::array();
  for (const auto& [a, b] : merges) {
    if (merges_as_pairs) {
      merge_list.push_back(json::array({a, b}));
    } else {
      merge_list.push_back(a + " " + b);
    }
  }
  json added = json::array();
  added.push_back({{"id", 45}, {"content", "<mask>"}, {"single_word", false}, {"lstrip", true},
                   {"rstrip", false}, {"normalized", false}, {"special", true}});
  added.push_back({{"id", 46}, {"content", "<|endoftext|>"}, {"single_word", false},
                   {"lstrip", false}, {"rstrip", false}, {"normalized", true},
                   {"special", true}});
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
        {"use_regex", true}}},
      {"post_processor",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false},
        {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""}, {"fuse_unk", false},
        {"byte_fallback", false}, {"vocab", vocab}, {"merges", merge_list}}},
  };
}

}  // namespace qkscope::text::testing
