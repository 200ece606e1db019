// Running a CaptureModule over named input tensors, batch by batch (for the CLI). Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "qkscope/capture_sink.h"

namespace qkscope {

class CaptureModule;

// A non-owning view of one input tensor; dim 0 is the batch (rows). Must outlive run_model().
struct InputTensor {
  std::string dtype;           // safetensors names: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL
  std::vector<int64_t> shape;  // [rows, ...]
  const void* data = nullptr;  // row-major, product(shape) elements of dtype
};

struct RunOptions {
  int64_t batch_size = 8;      // rows per forward, > 0
  int threads = 1;             // forwards running at once, each on its own thread and session
  int64_t first_sequence = 0;  // sequence index of row 0; row r gets first_sequence + r
  // Called after each batch with (rows done, rows total); from worker threads, one at a time.
  std::function<void(int64_t, int64_t)> progress;
};

// Binds `inputs` to forward's arguments by name (arguments left out take their schema default),
// then runs every batch with a CaptureSession on `sink`. Throws qkscope::Error listing the schema
// when an input names no argument or an argument without default has no input; when inputs
// disagree on the row count; and anything the forward or the sink threw.
void run_model(const CaptureModule& module, const std::map<std::string, InputTensor>& inputs,
               CaptureSink& sink, const RunOptions& options = {});

}  // namespace qkscope
