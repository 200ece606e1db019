#include "corpus.h"

#include <algorithm>
#include <filesystem>

#include "qkscope/error.h"

namespace qkscope::cli {
namespace {

bool blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](unsigned char c) { return std::isspace(c); });
}

// One line of space-separated ids (not blank).
std::vector<int64_t> parse_ids(const std::string& line, const std::string& path, int64_t number) {
  std::vector<int64_t> ids;
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
    ids.push_back(std::stoll(token));
    pos = end;
  }
  return ids;
}

}  // namespace

SequenceReader::SequenceReader(const std::string& path, const char* flag)
    : path_(path), in_(path, std::ios::binary) {
  QKSCOPE_CHECK(in_.good(), "{}: cannot open '{}' for reading", flag, path);
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  file_bytes_ = ec ? 0 : static_cast<uint64_t>(size);  // a pipe: no total
}

SequenceReader SequenceReader::text(const std::string& path, const text::Tokenizer& tokenizer,
                                    size_t max_length) {
  SequenceReader r(path, "--text");
  r.tokenizer_ = &tokenizer;
  r.max_length_ = max_length;
  return r;
}

SequenceReader SequenceReader::ids(const std::string& path, std::optional<size_t> max_length) {
  SequenceReader r(path, "--ids");
  r.max_length_ = max_length.value_or(0);
  return r;
}

bool SequenceReader::read_line() {
  std::string line;
  while (pending_.empty()) {
    if (!std::getline(in_, line)) return false;
    const int64_t number = ++line_;
    bytes_ = std::min(bytes_ + line.size() + 1, file_bytes_ ? file_bytes_ : UINT64_MAX);
    if (tokenizer_) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (blank(line)) continue;
      std::vector<std::vector<int64_t>> chunks;
      try {
        chunks = tokenizer_->encode_chunks(line, max_length_);
      } catch (const FormatError& e) {
        throw Error(fmt::format("{}:{}: {}", path_, number, e.what()));
      }
      for (auto& ids : chunks) pending_.push_back({std::move(ids), number});
    } else {
      if (blank(line)) continue;
      Sequence s{parse_ids(line, path_, number), number};
      QKSCOPE_CHECK(max_length_ == 0 || s.ids.size() <= max_length_,
                    "{}:{}: {} ids, longer than --max-length {}", path_, number, s.ids.size(),
                    max_length_);
      pending_.push_back(std::move(s));
    }
  }
  return true;
}

bool SequenceReader::next(Sequence& out) {
  if (pending_.empty() && !read_line()) {
    if (sequences_ > 0) return false;
    if (tokenizer_) throw Error(fmt::format("{}: empty corpus (no non-empty line)", path_));
    throw Error(fmt::format("{}: no sequence of token ids (the file has no non-empty line)", path_));
  }
  out = std::move(pending_.front());
  pending_.pop_front();
  ++sequences_;
  return true;
}

std::vector<Sequence> SequenceReader::next_batch(size_t count) {
  std::vector<Sequence> batch;
  batch.reserve(count);
  Sequence s;
  while (batch.size() < count && next(s)) batch.push_back(std::move(s));
  return batch;
}

std::vector<Sequence> read_id_file(const std::string& path) {
  SequenceReader reader = SequenceReader::ids(path, std::nullopt);
  std::vector<Sequence> sequences;
  Sequence s;
  while (reader.next(s)) sequences.push_back(std::move(s));
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
