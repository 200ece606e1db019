// QKSCOPE_KERNEL, for the engine's hot kernels (pair_screen.h, exact_pair.h): they must be inlined
// into the pass. A call per key of grid_min8 keeps the loop over keys from being vectorised, and
// GCC's inlining heuristics stop short once the pass is instantiated for every kind of pass
// (head_engine.h).
#pragma once

#if defined(__GNUC__)
#define QKSCOPE_KERNEL inline __attribute__((always_inline))
#else
#define QKSCOPE_KERNEL inline
#endif
