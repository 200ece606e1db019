// `mpirun -np K capture ...`: the MPI world of a capture run. Rank r runs the batches b with
// b % K == r (the single-process run's batches, so every q/k is computed on the same padded
// shapes), keeps its own QkStore, and the ranks' samples are merged into rank 0's store, which
// is then exactly the sample one process would keep (QkStore::merge). The heads' metrics are
// then spread over the ranks (mpi_metrics.h) and rank 0 writes the outputs. Without QKSCOPE_HAVE_MPI, or when the process was not started
// by an MPI launcher, the world is one rank and nothing here touches MPI.
#pragma once

#include <cstdint>
#include <string>

#include "qkscope/qk_store.h"

namespace qkscope::cli {

struct MpiWorld {
  int rank = 0;
  int size = 1;
  bool active = false;  // MPI_Init was called (started by mpirun)
};

// Initialises MPI when the process was started by an MPI launcher (OpenMPI's or a PMI/PMIx
// environment); otherwise leaves the world at one rank. Also makes OpenMPI quiet (no help
// banners: a failing rank's one error line is the run's only line).
void mpi_init(int* argc, char*** argv);
const MpiWorld& mpi_world();
// MPI_Finalize after a successful run (a no-op when MPI is not active).
void mpi_finalize();

// A failure on this rank under an MPI run of more than one rank: prints `line` on stderr
// (ranks other than 0 prefix their rank and first give rank 0, which fails the same way on a
// deterministic error, two seconds to end the run with its own line), then MPI_Abort(code):
// every rank stops, none hangs.
[[noreturn]] void mpi_fail(const std::string& line, int code);

struct MergeStats {
  uint64_t bytes = 0;       // q/k file bytes sent to rank 0 by the other ranks
  double wait_seconds = 0;  // rank 0 waiting for the slowest rank to finish its batches
  double seconds = 0;       // then moving, reading and merging the samples:
  double receive_seconds = 0;  // rank 0 receiving (with the other ranks' writing: take + bytes)
  double read_seconds = 0;     // rank 0 reading the bytes back into QkData (parse_qk_bytes)
  double merge_seconds = 0;    // rank 0 merging them into its store (QkStore::merge)
};

// Collective: every other rank's kept sample goes to rank 0 as a q/k file in memory (its
// sample.* keys carry the seed, budget and cutoff; qk_file_bytes), one rank after the other,
// and is merged into rank 0's `store` as it arrives (QkStore::merge). On other ranks `store` is
// emptied (QkStore::take).
MergeStats mpi_merge_stores(QkStore& store);

// Point to point, for large byte strings: the size, then messages of at most 1 GiB (MPI counts
// are ints). Throws Error on an MPI failure (or without MPI).
void mpi_send_bytes(const std::string& bytes, int to);
std::string mpi_receive_bytes(int from);

}  // namespace qkscope::cli
