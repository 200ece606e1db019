// The last stage shared by every mode: compute the table from captured q/k and write the outputs.
#pragma once

#include <string>

#include "capture_options.h"
#include "qkscope/qk_data.h"
#include "qkscope/report.h"

namespace qkscope::cli {

// Computes the table over `data` with the options' metrics, writes --out (and --save-qk when
// `save` is true), and prints the summary paragraph on stderr unless --quiet.
void analyse_and_write(const QkData& data, const CaptureOptions& options, const RunInfo& run,
                       bool save, double capture_seconds);

// `capture --qk FILE --out DIR`.
int run_qk_mode(const CaptureOptions& options);

}  // namespace qkscope::cli
