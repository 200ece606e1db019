#include "mpi_run.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <utility>

#include "qkscope/error.h"
#include "qkscope/qk_file.h"

#ifdef QKSCOPE_HAVE_MPI
#include <mpi.h>
#endif

namespace qkscope::cli {
namespace {

MpiWorld g_world;

#ifdef QKSCOPE_HAVE_MPI
bool started_by_launcher() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(name)) return true;
  return false;
}

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw Error(fmt::format("{} failed: {}", what, std::string(text, static_cast<size_t>(length))));
}

// Completes `request` without spinning: OpenMPI's blocking calls poll a busy loop, which on a
// machine whose cores the ranks share with LibTorch's threads (or with other jobs) takes CPU
// from the rank being waited for. MPI_Test then a sleep growing from 0.1 ms to 10 ms (the
// messages here are few and large: at most 10 ms added to each).
void wait_quietly(MPI_Request& request, const char* what) {
  int done = 0;
  auto pause = std::chrono::microseconds(100);
  while (true) {
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(10));
  }
}

// MPI counts are ints: bytes go in messages of at most 1 GiB, after their total.
constexpr uint64_t kMessage = uint64_t{1} << 30;
constexpr int kTag = 14;
#endif

}  // namespace

void mpi_init(int* argc, char*** argv) {
#ifdef QKSCOPE_HAVE_MPI
  if (!started_by_launcher()) return;
  // OpenMPI's help banners (MPI_ABORT was invoked ...) would follow a failing rank's line.
  setenv("OMPI_MCA_orte_execute_quiet", "1", /*overwrite=*/0);
  if (MPI_Init(argc, argv) != MPI_SUCCESS) return;
  g_world.active = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_world.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world.size);
#else
  (void)argc;
  (void)argv;
#endif
}

const MpiWorld& mpi_world() { return g_world; }

void mpi_finalize() {
#ifdef QKSCOPE_HAVE_MPI
  if (g_world.active) MPI_Finalize();
  g_world.active = false;
#endif
}

void mpi_fail(const std::string& line, int code) {
#ifdef QKSCOPE_HAVE_MPI
  if (g_world.rank != 0) std::this_thread::sleep_for(std::chrono::seconds(2));
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  if (g_world.active) MPI_Abort(MPI_COMM_WORLD, code);
#else
  std::fprintf(stderr, "%s\n", line.c_str());
#endif
  std::_Exit(code);
}

MergeStats mpi_merge_stores(QkStore& store) {
  MergeStats stats;
#ifdef QKSCOPE_HAVE_MPI
  if (!g_world.active || g_world.size == 1) return stats;
  const auto arrived = std::chrono::steady_clock::now();
  MPI_Request barrier;
  check_mpi(MPI_Ibarrier(MPI_COMM_WORLD, &barrier), "MPI_Ibarrier");
  wait_quietly(barrier, "MPI_Ibarrier");
  const auto start = std::chrono::steady_clock::now();
  stats.wait_seconds = std::chrono::duration<double>(start - arrived).count();

  if (g_world.rank != 0) {
    // This rank's sample as a q/k file in memory (sample.* keys: seed, budget, cutoff; and the
    // counts), sent to rank 0. A rank that ran no batch sends nothing.
    std::string mine;
    if (!store.sites().empty()) {
      QkData kept = store.take();
      mine = qk_file_bytes(kept);
    }
    mpi_send_bytes(mine, 0);
  } else {
    // One rank's sample at a time, in rank order, merged as it arrives (QkStore::merge: the
    // result does not depend on the order).
    const auto since = [](std::chrono::steady_clock::time_point& t) {
      const auto now = std::chrono::steady_clock::now();
      const double seconds = std::chrono::duration<double>(now - t).count();
      t = now;
      return seconds;
    };
    for (int r = 1; r < g_world.size; ++r) {
      auto t = std::chrono::steady_clock::now();
      std::string bytes = mpi_receive_bytes(r);
      stats.receive_seconds += since(t);
      if (bytes.empty()) continue;
      stats.bytes += bytes.size();
      const QkData kept = parse_qk_bytes(std::move(bytes), fmt::format("rank {}'s sample", r));
      stats.read_seconds += since(t);
      QkStore::Counts counts;
      counts.tokens_seen = kept.tokens_seen;
      counts.sequences_seen = kept.sequences_seen;
      counts.cutoff = kept.sample ? kept.sample->cutoff : 2.0;
      for (const SiteData& site : kept.sites)
        store.declare_site(site.layer, SiteMeta{site.module, site.prescale, site.head_index});
      store.merge(kept, counts);
      stats.merge_seconds += since(t);
    }
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
#else
  (void)store;
#endif
  return stats;
}

void mpi_send_bytes(const std::string& bytes, int to) {
#ifdef QKSCOPE_HAVE_MPI
  const uint64_t size = bytes.size();
  MPI_Request request;
  check_mpi(MPI_Isend(&size, 1, MPI_UINT64_T, to, kTag, MPI_COMM_WORLD, &request), "MPI_Isend");
  wait_quietly(request, "MPI_Isend");
  for (uint64_t at = 0; at < size; at += kMessage) {
    check_mpi(MPI_Isend(bytes.data() + at, static_cast<int>(std::min(kMessage, size - at)),
                        MPI_BYTE, to, kTag, MPI_COMM_WORLD, &request),
              "MPI_Isend");
    wait_quietly(request, "MPI_Isend");
  }
#else
  (void)bytes;
  (void)to;
  throw Error("mpi_send_bytes: capture was built without MPI");
#endif
}

std::string mpi_receive_bytes(int from) {
#ifdef QKSCOPE_HAVE_MPI
  uint64_t size = 0;
  MPI_Request request;
  check_mpi(MPI_Irecv(&size, 1, MPI_UINT64_T, from, kTag, MPI_COMM_WORLD, &request), "MPI_Irecv");
  wait_quietly(request, "MPI_Irecv");
  std::string bytes(size, '\0');
  for (uint64_t at = 0; at < size; at += kMessage) {
    check_mpi(MPI_Irecv(bytes.data() + at, static_cast<int>(std::min(kMessage, size - at)),
                        MPI_BYTE, from, kTag, MPI_COMM_WORLD, &request),
              "MPI_Irecv");
    wait_quietly(request, "MPI_Irecv");
  }
  return bytes;
#else
  (void)from;
  throw Error("mpi_receive_bytes: capture was built without MPI");
#endif
}

}  // namespace qkscope::cli
