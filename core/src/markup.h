// Escaping text for SVG and HTML (internal; heatmaps.svg and report.html share it).
#pragma once

#include <string>

namespace qkscope::detail {

// `&`, `<`, `>` and `"` as entities: safe inside elements and double-quoted attributes.
inline std::string xml_escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

}  // namespace qkscope::detail
