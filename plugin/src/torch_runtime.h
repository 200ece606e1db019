// LibTorch runtime choices made once per process, and load-failure diagnostics (internal).
#pragma once

#include <exception>
#include <string>

namespace qkscope::detail {

// Called at the start of every CaptureModule::load; acts on the first call only.
// - The TensorExpr fuser is turned off. Debian's LibTorch 2.x builds it with LLVM code generation
//   on CPU; under the profiling executor it compiles fused kernels on a method's second call, and
//   some (a `cat` followed by an add, as in ViT's embeddings) never finish compiling. It also
//   fuses across nothing qkscope needs: the capture op is CONSERVATIVE and blocks fusion anyway.
// - The profiling executor stays (the default): with no fuser it inserts no guards, so changing
//   batch shapes never re-compile.
// - OpenBLAS's thread pool is sized to LibTorch's intra-op pool (see size_blas_pool).
void configure_torch_runtime();

// One line saying why torch::jit::load failed on `path` (exception `e`): LibTorch's reason (its
// first non-empty line), what the archive says about the PyTorch that wrote it, and, when that is
// newer than the LibTorch qkscope is built against, how to fix it.
std::string describe_load_failure(const std::string& path, const std::exception& e);

}  // namespace qkscope::detail
