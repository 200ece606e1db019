// LibTorch runtime choices made once per process, and load-failure diagnostics.
#include "torch_runtime.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <thread>

#include <ATen/Parallel.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/versions.h>
#include <fmt/format.h>
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>
#include <torch/version.h>

#include "libtorch_utils.h"

namespace qkscope::detail {
namespace {

constexpr const char* kLibTorchVersion = TORCH_VERSION;

// Records a LibTorch 1.x writer never puts in a TorchScript archive and PyTorch 2.x writes
// (checked: 1.13 writes data.pkl, code/, constants.pkl, version; 2.6 adds byteorder and
// .data/serialization_id).
constexpr const char* kPyTorch2Records[] = {"byteorder", ".data/serialization_id"};

// OpenBLAS (Debian's libopenblas0-pthread, which LibTorch reaches through libblas.so.3) keeps a
// pool of its own, one thread per core, whose threads busy-wait between calls. LibTorch's
// intra-op pool is the one size users set (capture --threads, at::set_num_threads); OpenBLAS's
// comes on top of it, and when both are as large as the machine they spin against each other
// (the built-in example on 2 cores, LibTorch 2.6, whose OpenMP pool has 2 threads: 21 s of CPU
// instead of 4). So the two together get the machine's cores: OpenBLAS gets cores / intra-op
// threads (at least 1) when qkscope is first loaded. With one intra-op thread (Debian's 1.13
// default) OpenBLAS keeps every core, which the large GEMMs need (BERT-base 8 x 128: 1.44 s
// a forward with 2 OpenBLAS threads, 2.19 s with 1). Not when the user sized it
// (OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS, OMP_NUM_THREADS). Found by symbol, so nothing is
// linked and other BLAS libraries are left alone.
void size_blas_pool() {
  for (const char* variable : {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (std::getenv(variable) != nullptr) return;
  }
  using GetThreads = int (*)();
  using SetThreads = void (*)(int);
  auto get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (get == nullptr || set == nullptr) return;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = std::max(1, cores / std::max(1, at::get_num_threads()));
  if (get() != threads) set(threads);
}

}  // namespace

void configure_torch_runtime() {
  static std::once_flag once;
  std::call_once(once, [] {
    torch::jit::setTensorExprFuserEnabled(false);
    size_blas_pool();
  });
}

std::string describe_load_failure(const std::string& path, const std::exception& e) {
  std::string reason = first_line(e);
  // What the archive says about its writer. Opening it again is cheap (the central directory
  // only); it fails for files that are no zip archive at all, which LibTorch's reason covers.
  bool newer = false;
  std::string archive;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    const uint64_t version = reader.version();
    archive = fmt::format("file format version {}", version);
    if (version > caffe2::serialize::kMaxSupportedFileFormatVersion) newer = true;
    if (TORCH_VERSION_MAJOR < 2) {
      for (const char* record : kPyTorch2Records) {
        if (reader.hasRecord(record)) {
          archive += fmt::format(", written by PyTorch 2.x (it has a '{}' record)", record);
          newer = true;
          break;
        }
      }
    }
  } catch (const std::exception& reader_error) {
    // LibTorch's reader refuses archives whose format version is above the one it supports.
    const std::string what = first_line(reader_error);
    if (what.find("maximum supported version") != std::string::npos) {
      newer = true;
      if (what != reason) archive = what;
    }
  }
  std::string out = reason.empty() ? std::string("no reason given by LibTorch") : reason;
  if (!archive.empty()) out += fmt::format(" ({})", archive);
  if (newer) {
    out += fmt::format(
        "; the file was written by a newer PyTorch than the LibTorch {} qkscope is built "
        "against: rebuild qkscope against a LibTorch at least as new as the PyTorch that exported "
        "the model (README, 'LibTorch 2.x')",
        kLibTorchVersion);
  }
  return out;
}

}  // namespace qkscope::detail
