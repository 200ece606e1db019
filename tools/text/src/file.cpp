#include "file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include "qkscope/error.h"

namespace qkscope::text::detail {

std::string read_file(const std::filesystem::path& path) {
  std::error_code ec;
  QKSCOPE_CHECK(!std::filesystem::is_directory(path, ec), "cannot read {}: it is a directory",
                path.string());
  std::ifstream in(path, std::ios::binary);
  QKSCOPE_CHECK(in.is_open(), "cannot open {}: {}", path.string(), std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  QKSCOPE_CHECK(!in.bad(), "cannot read {}: {}", path.string(), std::strerror(errno));
  return buffer.str();
}

}  // namespace qkscope::text::detail
