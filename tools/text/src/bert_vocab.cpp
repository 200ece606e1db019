// load_bert_vocab(): a BERT vocab.txt into the pipeline BertTokenizerFast builds from it.
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "file.h"
#include "pipeline.h"
#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"
#include "unicode.h"
#include "utf8.h"
#include "wordpiece.h"

namespace qkscope::text {
namespace {

// HF's WordPiece::read_file: id = line index, trailing whitespace trimmed (so CRLF files
// work); a token repeated on a later line takes that line's id.
detail::Vocab read_vocab(std::string_view bytes, const std::string& path) {
  detail::check_utf8(bytes, path);
  detail::Vocab vocab;
  int64_t index = 0;
  std::size_t start = 0;
  while (start < bytes.size()) {
    std::size_t end = bytes.find('\n', start);
    const std::size_t next = end == std::string_view::npos ? bytes.size() : end + 1;
    if (end == std::string_view::npos) end = bytes.size();
    std::string_view line = bytes.substr(start, end - start);
    while (!line.empty()) {
      const std::size_t len = detail::last_sequence_length(line, line.size());
      std::size_t pos = line.size() - len;
      if (!detail::is_whitespace(detail::next_code_point(line, pos))) break;
      line.remove_suffix(len);
    }
    vocab[std::string(line)] = index++;
    start = next;
  }
  return vocab;
}

}  // namespace

std::unique_ptr<Tokenizer> load_bert_vocab(const std::filesystem::path& path, bool lowercase) {
  const std::string source = path.string();
  detail::Vocab vocab = read_vocab(detail::read_file(path), source);

  auto id_of = [&](const char* token) {
    auto it = vocab.find(token);
    QKSCOPE_CHECK_AS(FormatError, it != vocab.end(),
                     "{}: a BERT vocabulary needs the token {} (one token per line)", source,
                     token);
    return it->second;
  };
  id_of("[UNK]");  // WordPiece checks it too; this message says which file format was expected
  detail::PipelineParts parts;
  parts.prefix = {id_of("[CLS]")};
  parts.suffix = {id_of("[SEP]")};
  parts.pad_id = id_of("[PAD]");
  // BertTokenizerFast registers its special tokens as added tokens matched in the raw text.
  for (const char* special : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
    if (auto it = vocab.find(special); it != vocab.end()) {
      detail::AddedToken token;
      token.content = special;
      token.id = it->second;
      token.special = true;
      token.normalized = false;
      parts.added_tokens.push_back(std::move(token));
    }
  }
  detail::BertNormalizerOptions normalize;
  normalize.lowercase = lowercase;
  normalize.strip_accents = lowercase;  // BertTokenizerFast's strip_accents=None
  parts.normalizer = detail::make_bert_normalizer(normalize);
  parts.pre_tokenizer = detail::make_bert_pre_tokenizer();
  parts.model = detail::make_wordpiece(std::move(vocab), detail::WordPieceOptions{}, source);
  parts.name = fmt::format("WordPiece (vocab.txt{}: {})", lowercase ? ", lowercase" : "", source);
  return detail::make_pipeline_tokenizer(std::move(parts));
}

}  // namespace qkscope::text
