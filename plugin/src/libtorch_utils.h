// The plugin's one place for Torch includes and small Torch helpers (internal).
#pragma once

#include <string>
#include <vector>

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

// One line for an error thrown inside a TorchScript forward: the exception's own line (the
// last "SomethingError: ..." line of the interpreter's traceback) and the serialized code line
// the traceback points at ("<--- HERE"), else the first non-empty line.
inline std::string forward_error_summary(const std::exception& e) {
  std::string message;
  if (auto* c10_error = dynamic_cast<const c10::Error*>(&e)) message = c10_error->what_without_backtrace();
  else message = e.what();
  std::vector<std::string> lines;
  for (size_t begin = 0; begin <= message.size();) {
    size_t end = message.find('\n', begin);
    if (end == std::string::npos) end = message.size();
    std::string line = message.substr(begin, end - begin);
    const size_t lead = line.find_first_not_of(" \t");
    const size_t tail = line.find_last_not_of(" \t\r");
    lines.push_back(lead == std::string::npos ? "" : line.substr(lead, tail - lead + 1));
    begin = end + 1;
  }
  std::string reason, code;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    const size_t colon = l.find(": ");
    if (colon != std::string::npos && colon > 5 && l.find(' ') >= colon &&
        (l.compare(colon - 5, 5, "Error") == 0 || l.compare(colon - 9, 9, "Exception") == 0))
      reason = l;
    if (code.empty() && l.find("<--- HERE") != std::string::npos && i > 0) code = lines[i - 1];
  }
  if (reason.empty()) return first_line(e);
  return code.empty() ? reason : reason + " (at: " + code + ")";
}

inline std::string shape_string(c10::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

}  // namespace qkscope::detail
