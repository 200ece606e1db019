// The engine's pass compiled for the architecture's baseline (the library's own flags).
#define QKSCOPE_ISA_NS isa_baseline
// Eigen's templates in a namespace of this variant's own: their symbols must not merge with
// those of another instruction set at link time.
#define Eigen Eigen_baseline
#include "head_engine.h"
