// heatmaps.svg: for each metric, a layers x heads grid of the chosen c on a log colour scale
// (diverging at c = 1: blue below, red above), with a legend; heads without a choice are drawn
// as hatched cells so that they are never mistaken for a value.
#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "markup.h"
#include "qkscope/report.h"

namespace qkscope {
namespace {

constexpr int kCell = 22;
constexpr int kPanelGap = 60;
constexpr int kMarginLeft = 70;
constexpr int kMarginTop = 50;

struct Rgb {
  double r, g, b;
};

// Diverging blue-white-red by t in [-1, 1].
std::string colour(double t) {
  t = std::clamp(t, -1.0, 1.0);
  const Rgb blue{33, 102, 172}, white{247, 247, 247}, red{178, 24, 43};
  const Rgb& end = t < 0 ? blue : red;
  const double a = std::abs(t);
  auto mix = [&](double w, double e) { return static_cast<int>(std::lround(w + (e - w) * a)); };
  return fmt::format("#{:02x}{:02x}{:02x}", mix(white.r, end.r), mix(white.g, end.g),
                     mix(white.b, end.b));
}

}  // namespace

std::string heatmaps_svg(const CTable& table) {
  // Grid shape: rows = distinct layers, columns = 0..max head number.
  std::map<int, int> row_of_layer;
  int n_cols = 0;
  for (const HeadResult& h : table.heads) {
    row_of_layer.emplace(h.layer, 0);
    n_cols = std::max(n_cols, h.head + 1);
  }
  int row = 0;
  for (auto& [layer, r] : row_of_layer) r = row++;
  const int n_rows = static_cast<int>(row_of_layer.size());

  // Colour range: symmetric in log c around 1, covering the grid and every c_norm.
  double max_log = 0;
  for (double c : table.options.scales) max_log = std::max(max_log, std::abs(std::log10(c)));
  for (const HeadResult& h : table.heads)
    if (h.c_norm) max_log = std::max(max_log, std::abs(std::log10(*h.c_norm)));
  if (max_log == 0) max_log = 1;

  struct Panel {
    const char* title;
    std::optional<double> HeadResult::*value;
  };
  const Panel panels[] = {{"weighted correlation", &HeadResult::c_wcorr},
                          {"w. correlation scaled", &HeadResult::c_wcorr_scaled},
                          {"norm ratio", &HeadResult::c_norm}};
  // Panels are at least wide enough for their titles.
  const int panel_w = std::max(std::max(n_cols, 1) * kCell, 200);
  const int panel_h = std::max(n_rows, 1) * kCell;
  const int legend_w = 260;
  const int width = kMarginLeft + 3 * panel_w + 2 * kPanelGap + 20;
  const int height = kMarginTop + panel_h + 110;

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n"
      "<defs><pattern id=\"empty\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\">"
      "<rect width=\"6\" height=\"6\" fill=\"#ffffff\"/>"
      "<path d=\"M0,6 L6,0\" stroke=\"#999999\" stroke-width=\"1\"/></pattern></defs>\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      std::max(width, kMarginLeft + legend_w + 260), height);

  for (int p = 0; p < 3; ++p) {
    const int x0 = kMarginLeft + p * (panel_w + kPanelGap);
    const int y0 = kMarginTop;
    svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"13\" font-weight=\"bold\">c by {}</text>\n",
                       x0, y0 - 22, panels[p].title);
    for (int c = 0; c < n_cols; ++c)
      svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                         x0 + c * kCell + kCell / 2, y0 - 6, c);
    if (p == 0)
      for (const auto& [layer, r] : row_of_layer)
        svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">layer {}</text>\n", x0 - 6,
                           y0 + r * kCell + kCell / 2 + 4, layer);
    // Every grid cell starts empty (hatched); heads with a value are painted over it.
    for (int r = 0; r < n_rows; ++r)
      for (int c = 0; c < n_cols; ++c)
        svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"url(#empty)\" "
                           "stroke=\"#dddddd\"/>\n",
                           x0 + c * kCell, y0 + r * kCell, kCell, kCell);
    for (const HeadResult& h : table.heads) {
      const std::optional<double>& v = h.*(panels[p].value);
      const int x = x0 + h.head * kCell, y = y0 + row_of_layer[h.layer] * kCell;
      if (!v) {
        svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"url(#empty)\" "
                           "stroke=\"#bbbbbb\"><title>layer {} head {}: no value</title></rect>\n",
                           x, y, kCell, kCell, h.layer, h.head);
        continue;
      }
      svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" "
                         "stroke=\"#ffffff\"><title>layer {} head {} ({}): c = {:.4g}</title></rect>\n",
                         x, y, kCell, kCell, colour(std::log10(*v) / max_log), h.layer, h.head,
                         detail::xml_escape(h.module), *v);
    }
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\">head</text>\n", kMarginLeft - 40, kMarginTop - 6);

  // Legend: log colour bar with ticks at powers of ten steps and at the grid's ends.
  const int ly = kMarginTop + panel_h + 40, lx = kMarginLeft, steps = 64;
  for (int i = 0; i < steps; ++i) {
    double t = -1 + 2.0 * (i + 0.5) / steps;
    svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{:.2f}\" height=\"12\" fill=\"{}\"/>\n",
                       lx + i * legend_w / static_cast<double>(steps), ly,
                       legend_w / static_cast<double>(steps) + 0.5, colour(t));
  }
  for (double t : {-1.0, -0.5, 0.0, 0.5, 1.0}) {
    double c = std::pow(10.0, t * max_log);
    double x = lx + (t + 1) / 2 * legend_w;
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#333\"/>"
                       "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4:.3g}</text>\n",
                       x, ly + 12, ly + 16, ly + 28, c);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\">chosen c (log scale; queries c&#183;q, keys k/c)</text>\n",
                     lx, ly - 6);
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"12\" fill=\"url(#empty)\" "
                     "stroke=\"#bbbbbb\"/><text x=\"{}\" y=\"{}\">no value (no scale qualified)</text>\n",
                     lx + legend_w + 30, ly, lx + legend_w + 50, ly + 10);
  svg += "</svg>\n";
  return svg;
}

}  // namespace qkscope
