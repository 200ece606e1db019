// mpirun -np K capture: the heads' metrics spread over the ranks. Heads are independent but for
// metric 2's mean over heads and the choice made on it (assemble_ctable), so rank r computes the
// heads [r n / K, (r + 1) n / K) of the table's n heads: rank 0, which holds the merged sample,
// sends each other rank a q/k file (in memory) of only its heads' vectors plus the tokens'
// sequence and position; each rank computes its heads (compute_heads); rank 0 gathers the rows
// (as their bits, head_rows.h) and assembles the table, which is the one compute_ctable gives.
#pragma once

#include <cstdint>

#include "qkscope/metrics.h"
#include "qkscope/qk_data.h"

namespace qkscope::cli {

struct MetricSpread {
  int ranks = 1;
  int64_t heads = 0;           // in the table
  int64_t most_heads = 0;      // on one rank
  uint64_t bytes_sent = 0;     // rank 0's heads' q/k files to the other ranks
  double send_seconds = 0;     // building and sending them:
  double share_seconds = 0;    //   building them (head_share, qk_file_bytes)
  double own_seconds = 0;      // rank 0 computing its heads
  double gather_seconds = 0;   // rank 0 then waiting for and reading the others' rows
};

// Collective over the MPI world (every rank calls it). On rank 0 `data` is the sample; on the
// other ranks it is not read (pass an empty QkData). Returns the table on rank 0 and an empty
// table elsewhere. Without MPI, or with one rank, it is compute_ctable. `progress` is called on
// every rank with that rank's own heads (done, of its share); it may throw to stop the rank.
CTable mpi_compute_ctable(const QkData& data, const MetricOptions& options,
                          const ProgressFn& progress, MetricSpread* spread = nullptr);

// The heads [first, first + count) of `data` as a QkData of their own (token ids, counts and
// sample left out: compute_heads reads only vectors, sequence and position). Sites without one
// of these heads are left out.
QkData head_share(const QkData& data, int64_t first, int64_t count);

}  // namespace qkscope::cli
