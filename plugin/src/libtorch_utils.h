// The plugin's one place for Torch includes and small Torch helpers (internal).
#pragma once

#include <string>

#include <torch/script.h>

namespace qkscope::detail {

// The first line of a Torch exception's message, without the C++ backtrace.
inline std::string first_line(const std::exception& e) {
  std::string message;
  if (auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    message = c10_error->what_without_backtrace();
  } else {
    message = e.what();
  }
  auto end = message.find('\n');
  if (end != std::string::npos) message.resize(end);
  while (!message.empty() && (message.back() == ' ' || message.back() == '\r')) message.pop_back();
  return message;
}

inline std::string shape_string(c10::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

}  // namespace qkscope::detail
