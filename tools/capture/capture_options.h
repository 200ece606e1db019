// The options of the `capture` program (SPEC section 5), parsed with CLI11. One row per flag
// in capture_options.cpp: flag, value hint, help; --help is generated from them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qkscope/metrics.h"

namespace qkscope::cli {

struct CaptureOptions {
  // What to run.
  std::string model;      // --model
  std::string text;       // --text
  std::string ids;        // --ids
  std::string inputs;     // --inputs
  std::string qk;         // --qk (the first file)
  std::vector<std::string> qk_files;  // --qk FILE... (several: merged, see qkscope/qk_merge.h)
  bool list_sites = false;
  // Tokenizer for --text.
  std::string tokenizer;  // --tokenizer (tokenizer.json)
  std::string vocab;      // --vocab (vocab.txt)
  bool cased = false;
  std::string spm;        // --spm
  // Outputs.
  std::string out;        // --out
  std::string save_qk;    // --save-qk
  // Metrics.
  MetricOptions metrics;
  std::string scales_text = "0.2,0.4,0.8,1,1.25,2.5,5";
  // Store.
  std::optional<int64_t> max_tokens;
  uint64_t seed = 0;
  // Running the model.
  int batch_size = 8;
  std::optional<int> max_length;
  std::optional<int> pad_to;
  int threads = 0;
  std::string layers_text;  // --layers "0,3-5"
  // Long runs (checkpoint_run.h).
  std::string checkpoint;         // --checkpoint FILE
  std::string resume;             // --resume FILE
  int64_t checkpoint_every = 0;   // --checkpoint-every N sequences (0: by time only)
  double checkpoint_seconds = 600;  // --checkpoint-seconds S (0: by count only)
  int64_t first_sequence = 0;     // --first-sequence N: index of the run's first sequence
  bool seed_given = false;        // --seed was on the command line
  bool quiet = false;
  // Joint query/key report (--report): report.html and report.json.
  bool report = false;
  int report_k = 5;             // --report-k
  int64_t report_tokens = 0;    // --report-tokens (0: as many as the size budget allows)
};

// Parses argv into options and checks that the flags form one valid mode. Throws
// qkscope::UsageError (exit status 2) with a one-line message naming the flag. Returns
// nullopt when --help or --version was printed (to `help_out`) and nothing else is to be done.
std::optional<CaptureOptions> parse_capture_options(int argc, const char* const* argv,
                                                    std::string& help_out);

// "0,3-5" -> {0, 3, 4, 5}; throws UsageError.
std::vector<int> parse_layer_list(const std::string& text);

}  // namespace qkscope::cli
