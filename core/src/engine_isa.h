// Which instruction-set variant of the engine's hot code runs (the pass over a head's Gram
// blocks: the float screen, the double item step, and the Gram GEMMs themselves). The library is
// compiled for the architecture's baseline; the pass is compiled again per instruction set
// (head_engine_<isa>.cpp) and one is chosen at run time, once, from the CPU's features, or
// forced with QKSCOPE_ISA=avx512|avx2|baseline.
#pragma once

#include <string>
#include <vector>

namespace qkscope::detail {

enum class Isa { baseline, avx2, avx512 };

// "baseline", "avx2", "avx512".
const char* isa_name(Isa isa);

// The variants this build holds and this CPU (and its operating system) can run, baseline first.
std::vector<Isa> supported_isas();

// The variant to run: `request` (the value of QKSCOPE_ISA; null or empty for none) names one of
// `supported`, or, when absent, the last (best) of them. Throws qkscope::Error for a name that is
// not a variant, or one this CPU cannot run, naming what it can.
Isa choose_isa(const char* request, const std::vector<Isa>& supported);

// The variant in use: choose_isa(getenv("QKSCOPE_ISA"), supported_isas()) on first use.
Isa active_isa();

// Makes `isa` the variant in use from now on (tests run every variant in one process); throws
// like choose_isa if the CPU cannot run it. Not for use while heads are being computed.
void set_active_isa(Isa isa);

}  // namespace qkscope::detail
