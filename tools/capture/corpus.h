// Inputs of `capture --text` and `--ids`: the sequences to run, each with the line it came
// from, read a batch at a time (a corpus is never held whole, so a run's memory does not grow
// with its size), and the batches built from them.
#pragma once

#include <cstdint>
#include <deque>
#include <fstream>
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

// The sequences of an input file in order, read and tokenized one line at a time.
//   --text: one or more sequences per non-empty line of a UTF-8 corpus: lines longer than
//           `max_length` ids are split into consecutive chunks, each with the tokenizer's
//           special tokens. Errors name the file and line (invalid UTF-8: with the byte offset).
//   --ids:  one sequence per non-empty line of space-separated ids. Errors name the file, line
//           and token on anything that is not a non-negative integer, and a line of more than
//           `max_length` ids (when given).
// Both throw Error for an input without any sequence (at the first next()).
class SequenceReader {
 public:
  static SequenceReader text(const std::string& path, const text::Tokenizer& tokenizer,
                             size_t max_length);
  static SequenceReader ids(const std::string& path, std::optional<size_t> max_length);

  // The next sequence into `out`; false at the end of the input.
  bool next(Sequence& out);
  // Up to `count` next sequences (fewer only at the end of the input).
  std::vector<Sequence> next_batch(size_t count);

  int64_t sequences_read() const { return sequences_; }
  // Bytes of the file consumed so far and the file's size (for progress).
  uint64_t bytes_read() const { return bytes_; }
  uint64_t file_bytes() const { return file_bytes_; }
  const std::string& path() const { return path_; }

 private:
  SequenceReader(const std::string& path, const char* flag);
  bool read_line();  // tokenizes the next non-blank line into pending_; false at the end

  std::string path_;
  std::ifstream in_;
  const text::Tokenizer* tokenizer_ = nullptr;  // null: --ids
  size_t max_length_ = 0;                        // 0: no limit (--ids only)
  std::deque<Sequence> pending_;                 // chunks of the current line not yet returned
  int64_t line_ = 0, sequences_ = 0;
  uint64_t bytes_ = 0, file_bytes_ = 0;
};

// Every sequence of an --ids file (for tools that run all of it, such as bench_e2e).
std::vector<Sequence> read_id_file(const std::string& path);

// Checks every id against the model's vocabulary before the forward; the error names the id,
// its line and file.
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
