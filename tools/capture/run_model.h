// The modes of `capture` that run a TorchScript model: --inputs, --ids, --text, --list-sites.
#pragma once

#include "capture_options.h"

namespace qkscope::cli {

int run_model_mode(const CaptureOptions& options);

}  // namespace qkscope::cli
