// --report: the report's settings from the command line, token texts from --text's tokenizer.
#pragma once

#include "capture_options.h"
#include "qkscope/joint_report.h"

namespace qkscope::cli {

// ReportOptions for `options` (k, sample size, seed); token_text looks ids up in the tokenizer
// of --tokenizer / --vocab / --spm when one is given (also with --qk) and the plugin is built.
ReportOptions report_options(const CaptureOptions& options);

}  // namespace qkscope::cli
