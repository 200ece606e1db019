#include "progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace qkscope::cli {

Progress::Progress(std::string what, bool enabled, bool bytes)
    : what_(std::move(what)),
      active_(enabled && isatty(STDERR_FILENO)),
      bytes_(bytes),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - std::chrono::seconds(1)) {}

Progress::~Progress() { finish(); }

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, int64_t total, const std::string& extra) {
  if (!active_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(200) && done != total) return;
  last_draw_ = now;
  std::string line = bytes_ ? fmt::format("{}: {:.1f}", what_, done / 1e6)
                            : fmt::format("{}: {}", what_, done);
  if (total > 0) {
    line += bytes_ ? fmt::format("/{:.1f} MB", total / 1e6) : fmt::format("/{}", total);
    line += fmt::format(" ({:.0f}%)", 100.0 * done / total);
    double t = elapsed();
    if (done > 0 && done < total) line += fmt::format(", ETA {:.0f} s", t * (total - done) / done);
  } else if (bytes_) {
    line += " MB";
  }
  if (!extra.empty()) line += ", " + extra;
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::finish() {
  if (drawn_) std::fprintf(stderr, "\r\033[K");
  drawn_ = false;
}

}  // namespace qkscope::cli
