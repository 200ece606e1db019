// The engine's pass compiled for AVX-512 F/DQ/BW/VL (core/CMakeLists.txt).
#define QKSCOPE_ISA_NS isa_avx512
// Eigen's templates in a namespace of this variant's own: their symbols must not merge with
// those of another instruction set at link time.
#define Eigen Eigen_avx512
#include "head_engine.h"
