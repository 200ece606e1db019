#pragma once

#include <filesystem>
#include <string>

namespace qkscope::text::detail {

// The whole file as bytes. Throws qkscope::Error naming `path` when it cannot be read.
std::string read_file(const std::filesystem::path& path);

}  // namespace qkscope::text::detail
