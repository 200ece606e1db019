// A progress line on stderr, redrawn in place at most a few times a second, only when stderr
// is a terminal (so logs and pipes stay clean).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace qkscope::cli {

class Progress {
 public:
  // `enabled` false (--quiet) silences it even on a terminal. `bytes`: done and total are bytes
  // (shown in MB; a streamed corpus reports how much of its file was read).
  Progress(std::string what, bool enabled, bool bytes = false);
  ~Progress();

  // Reports `done` of `total` units (total 0 when unknown) and extra text (e.g. tokens/s).
  void update(int64_t done, int64_t total, const std::string& extra = {});
  // Clears the line (before a summary or an error is printed).
  void finish();

  // Seconds since construction.
  double elapsed() const;

 private:
  std::string what_;
  bool active_;
  bool bytes_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace qkscope::cli
