// The rows of the table (HeadResult) as bytes, to gather the heads' metrics that other ranks
// computed (mpirun -np K capture). Every double is sent as its bits, so the rows rank 0
// assembles are the ones the ranks computed, and the tables equal one process's byte for byte.
// Both ends are the same build of capture on hosts of one byte order (an MPI job's ranks).
#pragma once

#include <string>
#include <vector>

#include "qkscope/metrics.h"

namespace qkscope::cli {

std::string encode_head_rows(const std::vector<HeadResult>& heads);
// Throws Error naming `from` when the bytes are cut short or run past their rows.
std::vector<HeadResult> decode_head_rows(const std::string& bytes, const std::string& from);

}  // namespace qkscope::cli
