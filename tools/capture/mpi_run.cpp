#include "mpi_run.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>

#include "qkscope/checkpoint.h"
#include "qkscope/error.h"

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

std::filesystem::path temp_file(int rank, const char* what) {
  return std::filesystem::temp_directory_path() /
         fmt::format("qkscope_mpi_{}_{}_{}.qk", static_cast<long>(::getpid()), rank, what);
}

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  QKSCOPE_CHECK(in, "cannot read '{}'", path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_all(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  QKSCOPE_CHECK(out, "cannot write '{}'", path.string());
}
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
  check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
  const auto start = std::chrono::steady_clock::now();
  stats.wait_seconds = std::chrono::duration<double>(start - arrived).count();
  const int rank = g_world.rank, size = g_world.size;

  // This rank's sample as a store file's bytes (a rank that ran no batch sends nothing).
  std::string mine;
  if (rank != 0 && !store.sites().empty()) {
    const auto path = temp_file(rank, "send");
    write_store_file(path.string(), store, {});
    mine = read_all(path);
    std::filesystem::remove(path);
  }
  const uint64_t my_size = mine.size();
  std::vector<uint64_t> sizes(static_cast<size_t>(size));
  check_mpi(MPI_Gather(&my_size, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, 0, MPI_COMM_WORLD),
            "MPI_Gather");
  uint64_t largest = my_size;
  check_mpi(MPI_Allreduce(&my_size, &largest, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD),
            "MPI_Allreduce");

  // Rounds in which every count and the total fit an int (MPI's counts): at most 1 GiB per rank.
  const uint64_t kRound = std::min<uint64_t>(uint64_t{1} << 30, uint64_t{2147483647} / static_cast<uint64_t>(size));
  std::vector<std::string> received(static_cast<size_t>(size));
  if (rank == 0)
    for (int r = 1; r < size; ++r) received[static_cast<size_t>(r)].reserve(sizes[static_cast<size_t>(r)]);
  std::vector<char> buffer;
  for (uint64_t offset = 0; offset < largest; offset += kRound) {
    const int count = static_cast<int>(std::min(kRound, my_size > offset ? my_size - offset : 0));
    std::vector<int> counts(static_cast<size_t>(size)), displs(static_cast<size_t>(size));
    if (rank == 0) {
      int total = 0;
      for (int r = 0; r < size; ++r) {
        const uint64_t s = sizes[static_cast<size_t>(r)];
        counts[static_cast<size_t>(r)] = static_cast<int>(std::min(kRound, s > offset ? s - offset : 0));
        displs[static_cast<size_t>(r)] = total;
        total += counts[static_cast<size_t>(r)];
      }
      buffer.resize(static_cast<size_t>(total));
    }
    check_mpi(MPI_Gatherv(mine.data() + std::min<uint64_t>(offset, my_size), count, MPI_BYTE,
                          buffer.data(), counts.data(), displs.data(), MPI_BYTE, 0, MPI_COMM_WORLD),
              "MPI_Gatherv");
    if (rank == 0)
      for (int r = 1; r < size; ++r)
        received[static_cast<size_t>(r)].append(buffer.data() + displs[static_cast<size_t>(r)],
                                                static_cast<size_t>(counts[static_cast<size_t>(r)]));
  }
  mine = std::string();
  buffer = std::vector<char>();

  if (rank == 0) {
    for (int r = 1; r < size; ++r) {
      std::string& bytes = received[static_cast<size_t>(r)];
      if (bytes.empty()) continue;
      stats.bytes += bytes.size();
      const auto path = temp_file(r, "recv");
      write_all(path, bytes);
      bytes = std::string();
      StoreFile f = read_store_file(path.string());
      std::filesystem::remove(path);
      for (const SiteData& site : f.kept.sites)
        store.declare_site(site.layer, SiteMeta{site.module, site.prescale, site.head_index});
      store.merge(f.kept, f.counts);
    }
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
#else
  (void)store;
#endif
  return stats;
}

}  // namespace qkscope::cli
