// The engine's pass compiled for AVX2 and FMA (-mavx2 -mfma, core/CMakeLists.txt).
#define QKSCOPE_ISA_NS isa_avx2
// Eigen's templates in a namespace of this variant's own: their symbols must not merge with
// those of another instruction set at link time.
#define Eigen Eigen_avx2
#include "head_engine.h"
