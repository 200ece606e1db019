// Checkpoints of a `capture` run (--checkpoint, --resume): the store's kept sample written as a
// store file (qkscope/checkpoint.h) with checkpoint.* metadata: the corpus position and the
// settings a resumed run must share (model and corpus hashes, tokenizer, batching, budget,
// seed, threads); and the sequences.* keys of a saved q/k file (qk_merge.h): the range of
// sequences offered so far, the corpus, the line of each kept sequence. A resumed run gives the
// tables, and the --save-qk file (bytes and metadata), of the uninterrupted run.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "capture_options.h"
#include "qkscope/qk_merge.h"
#include "qkscope/qk_store.h"
#include "sequence_lines.h"

namespace qkscope::cli {

// (name, value) pairs, compared one by one on --resume; names are what the user changes
// ("model file", "--seed", ...).
using RunSettings = std::vector<std::pair<std::string, std::string>>;

// The settings of a --text/--ids run with the effective --max-length. Hashes the model, corpus
// and tokenizer files.
RunSettings checkpoint_settings(const CaptureOptions& options, int max_length);

// Writes --checkpoint every --checkpoint-every sequences or --checkpoint-seconds seconds, at the
// end of the capture and when the run is interrupted. Disabled when --checkpoint is empty.
class Checkpointer {
 public:
  Checkpointer(const CaptureOptions& options, RunSettings settings);
  bool enabled() const { return !path_.empty(); }
  // After the sequences before `next_sequence` (counted from --first-sequence) went through the
  // store (between batches); `lines` holds the line of every kept sequence. `force`: write
  // now. Throws Error (a full disk) with the previous checkpoint intact.
  void after_batch(const QkStore& store, int64_t next_sequence, const SequenceLines& lines,
                   bool force = false);
  int writes() const { return writes_; }

 private:
  std::string path_;
  RunSettings settings_;
  int64_t first_sequence_ = 0;
  std::string source_;  // the --text or --ids file
  int64_t every_sequences_ = 0;
  double every_seconds_ = 0;
  int64_t last_sequence_ = 0;
  std::chrono::steady_clock::time_point last_time_;
  int writes_ = 0;
};

// --resume FILE: refuses a checkpoint whose settings differ from `settings` (naming the first
// difference), declares its sites in `store` (empty) and merges its sample.
struct ResumePoint {
  int64_t next_sequence = 0;  // the first sequence still to run, counted from --first-sequence
  // The checkpoint's sequences.* range (one, [--first-sequence, + next_sequence)) with the line
  // of each kept sequence; empty for a checkpoint written without them.
  std::vector<SequenceRange> ranges;
};
ResumePoint resume_from(const std::string& path, const RunSettings& settings, QkStore& store);

// Fault-injection for the tests: when QKSCOPE_TEST_CRASH is "<point>:<n>" (point: forward,
// checkpoint, metrics) and `n_here` >= n at `point`, the process kills itself (SIGKILL).
void test_crash_point(const char* point, int64_t n_here);

}  // namespace qkscope::cli
