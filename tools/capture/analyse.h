// The last stage shared by every mode: compute the table from captured q/k and write the outputs.
#pragma once

#include <string>
#include <vector>

#include "capture_options.h"
#include "qkscope/qk_data.h"
#include "qkscope/qk_merge.h"
#include "qkscope/report.h"

namespace qkscope::cli {

// Computes the table over `data` with the options' metrics (under mpirun -np K, spread over the
// ranks: every other rank calls analyse_on_other_rank meanwhile), writes --out (and --save-qk
// when `save` is true), and prints the summary paragraph on stderr unless --quiet.
// `ranges`: where the sequences come from, written to the --save-qk file (qk_merge.h).
void analyse_and_write(const QkData& data, const CaptureOptions& options, const RunInfo& run,
                       bool save, double capture_seconds,
                       const std::vector<SequenceRange>& ranges = {});

// Under mpirun -np K, ranks other than 0 call this where rank 0 calls analyse_and_write: they
// compute their share of the heads (mpi_metrics.h) and return; rank 0 writes everything.
void analyse_on_other_rank(const CaptureOptions& options);

// `capture --qk FILE... --out DIR`: rank 0 reads (and merges) the files; under mpirun the heads
// are spread over the ranks.
int run_qk_mode(const CaptureOptions& options);

}  // namespace qkscope::cli
