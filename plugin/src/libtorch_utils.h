// The plugin's one place for Torch includes and small Torch helpers (internal).
#pragma once

#include <string>

#include <torch/script.h>

namespace qkscope::detail {

// The first non-empty line of a Torch exception's message, without the C++ backtrace (LibTorch's
// messages can begin with a newline: "\nUnknown builtin op: aten::...").
inline std::string first_line(const std::exception& e) {
  std::string message;
  if (auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    message = c10_error->what_without_backtrace();
  } else {
    message = e.what();
  }
  size_t begin = 0;
  while (begin < message.size()) {
    size_t end = message.find('\n', begin);
    if (end == std::string::npos) end = message.size();
    std::string line = message.substr(begin, end - begin);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '\t'))
      line.pop_back();
    size_t lead = line.find_first_not_of(" \t");
    if (lead != std::string::npos) return line.substr(lead);
    begin = end + 1;
  }
  return {};
}

inline std::string shape_string(c10::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

}  // namespace qkscope::detail
