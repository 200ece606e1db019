// The q/k file (SPEC section 2): a standard safetensors file holding QkData.
#pragma once

#include <string>

#include "qkscope/qk_data.h"

namespace qkscope {

// Writes `data` to `path` (through a temporary file and a rename). Throws qkscope::Error.
void write_qk_file(const std::string& path, const QkData& data);

// Reads and validates a q/k file. Throws FormatError naming the broken rule and the file.
QkData read_qk_file(const std::string& path);

}  // namespace qkscope
