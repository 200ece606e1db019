#include "corpus.h"

#include <algorithm>
#include <fstream>

#include "qkscope/error.h"

namespace qkscope::cli {
namespace {

std::ifstream open_input(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  QKSCOPE_CHECK(in.good(), "{}: cannot open '{}' for reading", flag, path);
  return in;
}

bool blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](unsigned char c) { return std::isspace(c); });
}

}  // namespace

std::vector<Sequence> read_id_file(const std::string& path) {
  std::ifstream in = open_input(path, "--ids");
  std::vector<Sequence> sequences;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (blank(line)) continue;
    Sequence s;
    s.line = number;
    size_t pos = 0;
    while (pos < line.size()) {
      while (pos < line.size() && std::isspace(static_cast<unsigned char>(line[pos]))) ++pos;
      if (pos == line.size()) break;
      size_t end = pos;
      while (end < line.size() && !std::isspace(static_cast<unsigned char>(line[end]))) ++end;
      const std::string token = line.substr(pos, end - pos);
      bool digits = std::all_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; });
      QKSCOPE_CHECK(digits && token.size() <= 18,
                    "{}:{}: expected token ids (non-negative integers), got '{}'", path, number,
                    token.substr(0, 40));
      s.ids.push_back(std::stoll(token));
      pos = end;
    }
    sequences.push_back(std::move(s));
  }
  QKSCOPE_CHECK(!sequences.empty(), "{}: no sequence of token ids (the file has no non-empty line)",
                path);
  return sequences;
}

std::vector<Sequence> read_text_file(const std::string& path, const text::Tokenizer& tokenizer,
                                     size_t max_length) {
  std::ifstream in = open_input(path, "--text");
  std::vector<Sequence> sequences;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (blank(line)) continue;
    std::vector<std::vector<int64_t>> chunks;
    try {
      chunks = tokenizer.encode_chunks(line, max_length);
    } catch (const FormatError& e) {
      throw Error(fmt::format("{}:{}: {}", path, number, e.what()));
    }
    for (auto& ids : chunks) sequences.push_back({std::move(ids), number});
  }
  QKSCOPE_CHECK(!sequences.empty(), "{}: empty corpus (no non-empty line)", path);
  return sequences;
}

void check_vocabulary(const std::vector<Sequence>& sequences, int64_t vocab_size,
                      const std::string& path, const std::string& vocab_source) {
  for (const Sequence& s : sequences)
    for (int64_t id : s.ids)
      QKSCOPE_CHECK(id < vocab_size,
                    "{}:{}: token id {} is past the model's vocabulary ({} ids in {}); does the "
                    "tokenizer belong to this model?",
                    path, s.line, id, vocab_size, vocab_source);
}

std::unique_ptr<Batch> make_batch(const std::vector<Sequence>& sequences, size_t begin, size_t end,
                                  int64_t pad_id, std::optional<int> pad_to,
                                  const std::vector<std::string>& arguments) {
  auto batch = std::make_unique<Batch>();
  size_t longest = 0;
  for (size_t i = begin; i < end; ++i) longest = std::max(longest, sequences[i].ids.size());
  size_t width = longest;
  if (pad_to) {
    QKSCOPE_CHECK(longest <= static_cast<size_t>(*pad_to),
                  "--pad-to {}: a sequence of {} tokens (line {}) does not fit; raise --pad-to or "
                  "lower --max-length", *pad_to, longest, sequences[begin].line);
    width = static_cast<size_t>(*pad_to);
  }
  const auto rows = static_cast<int64_t>(end - begin);
  const auto cols = static_cast<int64_t>(width);
  batch->input_ids.assign(rows * cols, pad_id);
  batch->attention_mask.assign(rows * cols, 0);
  for (size_t i = begin; i < end; ++i) {
    const auto& ids = sequences[i].ids;
    std::copy(ids.begin(), ids.end(), batch->input_ids.begin() + (i - begin) * cols);
    std::fill_n(batch->attention_mask.begin() + (i - begin) * cols, ids.size(), 1);
    batch->tokens += static_cast<int64_t>(ids.size());
  }
  auto view = [&](const std::vector<int64_t>& v) {
    return InputTensor{"I64", {rows, cols}, v.data()};
  };
  auto has = [&](const char* name) {
    return std::find(arguments.begin(), arguments.end(), name) != arguments.end();
  };
  batch->tensors["input_ids"] = view(batch->input_ids);
  if (has("attention_mask")) batch->tensors["attention_mask"] = view(batch->attention_mask);
  if (has("token_type_ids")) {
    batch->token_type_ids.assign(rows * cols, 0);
    batch->tensors["token_type_ids"] = view(batch->token_type_ids);
  }
  if (has("position_ids")) {
    batch->position_ids.resize(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) batch->position_ids[r * cols + c] = c;
    batch->tensors["position_ids"] = view(batch->position_ids);
  }
  return batch;
}

}  // namespace qkscope::cli
