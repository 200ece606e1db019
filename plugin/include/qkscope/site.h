// SiteDescription: what the graph pass found at one attention site. Torch-free.
#pragma once

#include <string>
#include <vector>

namespace qkscope {

// One attention site of an instrumented model (one self-attention computation of one layer).
struct SiteDescription {
  int layer = 0;          // site number, 0, 1, ... in graph (execution) order
  std::string module;     // module path, e.g. "encoder.layer.3.attention.self"; empty if unresolved
  std::string kind;       // "matmul": aten::matmul(q, transpose(k)); "sdpa": scaled_dot_product_attention
  double prescale = 1.0;  // constant factor the model applies to q before the product (SPEC 1); 1 if none
  int n_heads = -1;       // query heads H; -1 until a forward has reached the site
  int head_dim = -1;      // D; -1 until a forward has reached the site
};

// The site table printed by `capture --list-sites`: a header line, then one line per site
// (layer, kind, heads, head_dim, prescale, module), columns aligned, "?" for unknown sizes.
std::string format_sites(const std::vector<SiteDescription>& sites);

}  // namespace qkscope
