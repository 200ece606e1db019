// SiteDescription: what the graph pass found at one attention site. Torch-free.
#pragma once

#include <string>
#include <vector>

namespace qkscope {

// Where a captured operand keeps each axis of [batch, heads, tokens, head_dim]. With
// `heads_folded` the operand is 3-D and axis `batch` holds batch × heads, batch-major (the
// `[B*H, T, D]` of torch.nn and fairseq attention); `head` then equals `batch`.
struct OperandLayout {
  int rank = 4;
  bool heads_folded = false;
  int batch = 0, head = 1, token = 2, dim = 3;

  bool operator==(const OperandLayout& o) const {
    return rank == o.rank && heads_folded == o.heads_folded && batch == o.batch &&
           head == o.head && token == o.token && dim == o.dim;
  }
};

// One attention site of an instrumented model (one self-attention computation of one layer).
struct SiteDescription {
  // Layer number: the order in which sites first execute (SPEC 1). Known at load for sites
  // outside control flow (graph order is execution order there); -1 until first reached for
  // sites inside prim::If branches, and for skipped sites.
  int layer = -1;
  int site = 0;           // the site's number in the graph (graph order; internal id)
  std::string module;     // attention module path, e.g. "encoder.layer.3.attention.self"; "" if unresolved
  // The score product's form: "matmul" (4-D aten::matmul), "bmm" / "baddbmm" (heads folded into
  // the batch), "einsum", "sdpa" (aten::scaled_dot_product_attention), "fused" (torch.nn's fused
  // encoder layer / multi-head attention ops: q and k computed on the side).
  std::string kind;
  // Where the model applies its constant score scaling: any of "q", "k", "scores", joined by
  // "+"; "sdpa-default" for SDPA's implicit 1/sqrt(head_dim); "" when there is none.
  std::string scale_at;
  double prescale = 1.0;        // scores = prescale * q.k before any mask or bias (SPEC 1)
  bool prescale_known = true;   // false until a forward has evaluated a shape-derived scale
  std::string skipped;          // why the site is not captured; "" when it is
  OperandLayout q_layout, k_layout;  // how the captured operands map to [B, H, T, D]
  double q_unscale = 1.0, k_unscale = 1.0;  // factors the captured operands still carry
  int n_heads = -1;       // query heads H; -1 until a forward has reached the site
  int head_dim = -1;      // D; -1 until a forward has reached the site
};

// The site table printed by `capture --list-sites`: a header line, then one line per site
// (layer, form, heads, head_dim, prescale, where the scale is, module, and why a site is
// skipped), columns aligned, "?" for what a forward has not told yet.
std::string format_sites(const std::vector<SiteDescription>& sites);

}  // namespace qkscope
