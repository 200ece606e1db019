// CaptureSession: while alive, forwards of any CaptureModule on the constructing thread capture
// into its sink. Torch-free.
#pragma once

#include <cstdint>

#include "qkscope/capture_sink.h"

namespace qkscope {

class CaptureSession {
 public:
  // Binds `sink` to the calling thread until destruction. Sessions nest on one thread (the
  // innermost wins) and must be destroyed on that thread in reverse order, as scopes do.
  // Rows of forwards without explicit sequence indices are numbered by the sink, across all its
  // sessions (CaptureSink::take_sequences): one session per captured request is safe.
  explicit CaptureSession(CaptureSink& sink);
  // Rows are numbered first_sequence, first_sequence + 1, ... by this session alone.
  CaptureSession(CaptureSink& sink, int64_t first_sequence);
  ~CaptureSession();
  CaptureSession(const CaptureSession&) = delete;
  CaptureSession& operator=(const CaptureSession&) = delete;

  CaptureSink& sink() const { return sink_; }
  int64_t next_sequence() const { return own_numbering_ ? next_sequence_ : sink_.next_sequence(); }

  // Reserves `n` sequence indices and returns the first (used by CaptureModule::forward).
  int64_t take_sequences(int64_t n);

  // The innermost session of the calling thread, or nullptr.
  static CaptureSession* current();

 private:
  CaptureSink& sink_;
  bool own_numbering_;
  int64_t next_sequence_;
  CaptureSession* previous_;
};

namespace detail {
// Number of q or k tensors the capture op has taken for a sink (one site of one forward each;
// a copy, or the model's own tensor when it already has the token-major layout), process-wide.
// For tests: the no-session path must leave it unchanged.
int64_t capture_copies();
void count_capture_copies(int64_t n);
}  // namespace detail

}  // namespace qkscope
