// Inputs of `capture --text` and `--ids`: the sequences to run, each with the line it came
// from, and the batches built from them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qkscope/model_runner.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::cli {

struct Sequence {
  std::vector<int64_t> ids;
  int64_t line = 0;  // 1-based line of the file it came from
};

// One sequence per non-empty line of space-separated ids. Throws Error naming the file, line and
// token on anything that is not a non-negative integer, and when no line holds ids.
std::vector<Sequence> read_id_file(const std::string& path);

// One or more sequences per non-empty line of a UTF-8 corpus: lines longer than `max_length`
// ids are split into consecutive chunks, each with the tokenizer's special tokens. Throws Error
// naming the file and line on invalid UTF-8 (with the byte offset) and for an empty corpus.
std::vector<Sequence> read_text_file(const std::string& path, const text::Tokenizer& tokenizer,
                                     size_t max_length);

// Checks every id against the model's vocabulary before the first forward; the error names the
// id, its line and file.
void check_vocabulary(const std::vector<Sequence>& sequences, int64_t vocab_size,
                      const std::string& path, const std::string& vocab_source);

// The tensors of one batch, right-padded: input_ids and attention_mask [B, S] (I64), plus
// token_type_ids (zeros) and position_ids (0..S-1) when `arguments` names them. S is the longest
// sequence of the batch, or `pad_to` (an error if a sequence is longer).
struct Batch {
  std::vector<int64_t> input_ids, attention_mask, token_type_ids, position_ids;
  std::map<std::string, InputTensor> tensors;  // views of the vectors above
  int64_t tokens = 0;                          // real (unpadded) tokens
};
std::unique_ptr<Batch> make_batch(const std::vector<Sequence>& sequences, size_t begin, size_t end,
                                  int64_t pad_id, std::optional<int> pad_to,
                                  const std::vector<std::string>& arguments);

}  // namespace qkscope::cli
