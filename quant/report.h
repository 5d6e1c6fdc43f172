// Self-contained HTML report of a quantization run: one page with inline SVG plots and HTML tables,
// no scripts, no external CSS, images or fonts (a <style> block in the head only).
//
//   LinePlot       named series y(x) (loss / accuracy per epoch, per-layer beta trajectories ...):
//                  axes with "nice" ticks (1, 2, 5 x 10^n), axis labels, a legend; non-finite
//                  points break the line.
//   HistogramPlot  a "before" histogram and optionally an "after" one (quant/stats.h) drawn as
//                  translucent bars over a shared x axis, with the grid's levels as dashed vertical
//                  lines; values outside a histogram's range are reported under the plot.
//   BarPlot        one bar per named category (per-layer bits ...), the names under the bars,
//                  the y axis from 0 with nice ticks; optional horizontal reference lines.
//   Table          a header row and string cells (per-layer bits, distances, memory ...).
// Sections appear in the order they were added. All text is HTML-escaped. write() replaces the
// file atomically (lowbit::write_file_atomic, core/serialize.h).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "quant/stats.h"

namespace lowbit::quant {

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length
};

struct LinePlot {
  std::string title, x_label, y_label;
  std::vector<Series> series;
};

struct HistogramPlot {
  std::string title, x_label = "value";
  Histogram before;
  std::optional<Histogram> after;
  std::vector<double> levels;  // drawn as vertical lines (e.g. grid_levels(grid, bits))
  std::string before_label = "before", after_label = "after";
};

struct BarPlot {
  std::string title, y_label;
  std::vector<std::string> names;
  std::vector<double> values;                           // one per name, >= 0 drawn from 0
  std::vector<std::pair<std::string, double>> lines{};  // labelled horizontal lines (dashed)
};

struct Table {
  std::string title;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // each row at most header.size() cells
};

class HtmlReport {
 public:
  explicit HtmlReport(std::string title) : title_(std::move(title)) {}

  HtmlReport& add_paragraph(std::string text);
  HtmlReport& add(LinePlot plot);
  HtmlReport& add(HistogramPlot plot);
  HtmlReport& add(BarPlot plot);
  HtmlReport& add(Table table);

  std::string html() const;
  // Writes html() to `path` atomically (temp file + rename); throws lowbit::Error on failure.
  void write(const std::string& path) const;

 private:
  struct Paragraph {
    std::string text;
  };
  std::string title_;
  std::vector<std::variant<Paragraph, LinePlot, HistogramPlot, BarPlot, Table>> sections_;
};

// & < > " ' replaced by entities: safe in text and in quoted attribute values.
std::string html_escape(std::string_view text);
// Evenly spaced round tick values covering [lo, hi] (about `target` of them), first <= lo, last >= hi.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

}  // namespace lowbit::quant
