// HTML report writer with inline SVG plots; see report.h.
#include "quant/report.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "core/serialize.h"

namespace lowbit::quant {
namespace {

// Tableau-10 palette: distinguishable series colours.
constexpr const char* kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
constexpr int kPaletteSize = 10;

// Plot geometry (SVG user units).
constexpr double kWidth = 760, kHeight = 380;
constexpr double kLeft = 72, kRight = 590, kTop = 40, kBottom = 320;  // plot area
constexpr double kLegendX = 606;

std::string num(double v) {  // compact coordinates
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// Tick label with just enough decimals for the tick step.
std::string tick_label(double v, double step) {
  char buf[48];
  const double a = std::abs(v);
  if (a != 0 && (a >= 1e6 || a < 1e-4)) {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  } else {
    const int decimals = std::clamp(static_cast<int>(-std::floor(std::log10(step) + 1e-9)), 0, 8);
    std::snprintf(buf, sizeof buf, "%.*f", decimals, std::abs(v) < step * 1e-9 ? 0.0 : v);
  }
  return buf;
}

struct Range {
  double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  bool empty() const { return !(lo <= hi); }
};

// Range of nice ticks around [lo, hi] (a degenerate or empty range is widened).
std::vector<double> axis_ticks(Range r) {
  if (r.empty()) r.lo = 0, r.hi = 1;
  if (r.lo == r.hi) {
    const double pad = r.lo == 0 ? 1 : std::abs(r.lo) * 0.1;
    r.lo -= pad, r.hi += pad;
  }
  return nice_ticks(r.lo, r.hi, 6);
}

struct Axes {
  double x0, x1, y0, y1;
  double sx(double x) const { return kLeft + (x - x0) / (x1 - x0) * (kRight - kLeft); }
  double sy(double y) const { return kBottom - (y - y0) / (y1 - y0) * (kBottom - kTop); }
};

// Frame, grid lines, ticks, labels and title; returns the axes' mapping.
// The domain is [xt.front(), xt.back()] x [yt.front(), yt.back()] unless x_domain is given (then
// only the ticks inside it are drawn).
Axes draw_axes(std::ostringstream& os, const std::string& title, const std::string& x_label, const std::string& y_label,
               std::vector<double> xt, const std::vector<double>& yt, const Range* x_domain = nullptr) {
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;
  Axes a{xt.front(), xt.back(), yt.front(), yt.back()};
  if (x_domain != nullptr && !x_domain->empty() && x_domain->lo < x_domain->hi) {
    a.x0 = x_domain->lo, a.x1 = x_domain->hi;
    std::erase_if(xt, [&](double x) { return x < a.x0 - 1e-9 * xstep || x > a.x1 + 1e-9 * xstep; });
  }
  os << "<text class=\"title\" x=\"" << num((kLeft + kRight) / 2) << "\" y=\"22\" text-anchor=\"middle\">"
     << html_escape(title) << "</text>\n";
  for (double y : yt) {
    const double py = a.sy(y);
    os << "<line class=\"grid\" x1=\"" << num(kLeft) << "\" y1=\"" << num(py) << "\" x2=\"" << num(kRight) << "\" y2=\""
       << num(py) << "\"/>\n";
    os << "<text class=\"tick\" x=\"" << num(kLeft - 6) << "\" y=\"" << num(py + 4) << "\" text-anchor=\"end\">"
       << tick_label(y, ystep) << "</text>\n";
  }
  for (double x : xt) {
    const double px = a.sx(x);
    os << "<line class=\"grid\" x1=\"" << num(px) << "\" y1=\"" << num(kTop) << "\" x2=\"" << num(px) << "\" y2=\""
       << num(kBottom) << "\"/>\n";
    os << "<line class=\"axis\" x1=\"" << num(px) << "\" y1=\"" << num(kBottom) << "\" x2=\"" << num(px) << "\" y2=\""
       << num(kBottom + 5) << "\"/>\n";
    os << "<text class=\"tick\" x=\"" << num(px) << "\" y=\"" << num(kBottom + 19) << "\" text-anchor=\"middle\">"
       << tick_label(x, xstep) << "</text>\n";
  }
  os << "<rect class=\"frame\" x=\"" << num(kLeft) << "\" y=\"" << num(kTop) << "\" width=\"" << num(kRight - kLeft)
     << "\" height=\"" << num(kBottom - kTop) << "\"/>\n";
  os << "<text class=\"label\" x=\"" << num((kLeft + kRight) / 2) << "\" y=\"" << num(kBottom + 44)
     << "\" text-anchor=\"middle\">" << html_escape(x_label) << "</text>\n";
  os << "<text class=\"label\" transform=\"translate(18 " << num((kTop + kBottom) / 2)
     << ") rotate(-90)\" text-anchor=\"middle\">" << html_escape(y_label) << "</text>\n";
  return a;
}

void legend_entry(std::ostringstream& os, int row, const std::string& swatch, const std::string& name) {
  const double y = kTop + 8 + row * 20;
  os << "<g transform=\"translate(" << num(kLegendX) << " " << num(y) << ")\">" << swatch
     << "<text class=\"legend\" x=\"26\" y=\"4\">" << html_escape(name) << "</text></g>\n";
}

std::string svg_open(const std::string& title) {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " + num(kWidth) + " " + num(kHeight) + "\" width=\"" +
         num(kWidth) + "\" height=\"" + num(kHeight) + "\" role=\"img\" aria-label=\"" + html_escape(title) + "\">\n";
}

std::string render_line_plot(const LinePlot& p) {
  Range rx, ry;
  for (const Series& s : p.series) {
    LOWBIT_CHECK(s.x.size() == s.y.size(), "HtmlReport: series '", s.name, "' has ", s.x.size(), " x but ", s.y.size(),
                 " y values");
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) rx.add(s.x[i]), ry.add(s.y[i]);
  }
  std::ostringstream os;
  os << svg_open(p.title);
  const Axes a = draw_axes(os, p.title, p.x_label, p.y_label, axis_ticks(rx), axis_ticks(ry));
  for (size_t k = 0; k < p.series.size(); ++k) {
    const Series& s = p.series[k];
    const char* color = kPalette[k % kPaletteSize];
    std::string d;
    bool pen_down = false;
    int points = 0;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) {
        pen_down = false;
        continue;
      }
      d += (pen_down ? " L" : " M") + num(a.sx(s.x[i])) + " " + num(a.sy(s.y[i]));
      pen_down = true;
      ++points;
    }
    os << "<g class=\"series\"><title>" << html_escape(s.name) << "</title>\n";
    if (!d.empty())
      os << "<path d=\"" << d.substr(1) << "\" fill=\"none\" stroke=\"" << color
         << "\" stroke-width=\"2\" stroke-linejoin=\"round\"/>\n";
    if (points <= 40)  // markers for short series (also makes single points visible)
      for (size_t i = 0; i < s.x.size(); ++i)
        if (std::isfinite(s.x[i]) && std::isfinite(s.y[i]))
          os << "<circle cx=\"" << num(a.sx(s.x[i])) << "\" cy=\"" << num(a.sy(s.y[i])) << "\" r=\"2.5\" fill=\""
             << color << "\"/>\n";
    os << "</g>\n";
    legend_entry(
        os, static_cast<int>(k),
        std::string("<line x1=\"0\" y1=\"0\" x2=\"20\" y2=\"0\" stroke=\"") + color + "\" stroke-width=\"3\"/>",
        s.name);
  }
  os << "</svg>\n";
  return os.str();
}

std::string render_bar_plot(const BarPlot& p) {
  LOWBIT_CHECK(p.names.size() == p.values.size(), "HtmlReport: bar plot '", p.title, "' has ", p.names.size(),
               " names but ", p.values.size(), " values");
  Range ry;
  ry.add(0);
  for (double v : p.values)
    if (std::isfinite(v)) ry.add(v);
  for (const auto& l : p.lines)
    if (std::isfinite(l.second)) ry.add(l.second);
  const size_t n = std::max<size_t>(p.names.size(), 1);
  // x: category i occupies [i, i + 1); the names are the labels, no numeric x ticks.
  std::ostringstream os;
  os << svg_open(p.title);
  Range rx;  // ticks outside the domain are not drawn: none on x
  rx.add(0), rx.add(double(n));
  const Axes a = draw_axes(os, p.title, "", p.y_label, {-1.0, double(n) + 1}, axis_ticks(ry), &rx);
  for (size_t i = 0; i < p.names.size(); ++i) {
    const double v = std::isfinite(p.values[i]) ? p.values[i] : 0;
    const double x0 = a.sx(double(i) + 0.15), x1 = a.sx(double(i) + 0.85), y = a.sy(std::max(v, 0.0));
    os << "<g class=\"series\"><title>" << html_escape(p.names[i]) << ": " << v << "</title><rect x=\"" << num(x0)
       << "\" y=\"" << num(y) << "\" width=\"" << num(x1 - x0) << "\" height=\"" << num(a.sy(0) - y) << "\" fill=\""
       << kPalette[0] << "\"/></g>\n";
    os << "<text class=\"tick\" transform=\"translate(" << num((x0 + x1) / 2) << " " << num(kBottom + 8)
       << ") rotate(40)\" text-anchor=\"start\">" << html_escape(p.names[i]) << "</text>\n";
  }
  for (size_t k = 0; k < p.lines.size(); ++k) {
    const char* color = kPalette[(k + 1) % kPaletteSize];
    const double y = a.sy(p.lines[k].second);
    os << "<line x1=\"" << num(kLeft) << "\" y1=\"" << num(y) << "\" x2=\"" << num(kRight) << "\" y2=\"" << num(y)
       << "\" stroke=\"" << color << "\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/>\n";
    legend_entry(os, static_cast<int>(k),
                 std::string("<line x1=\"0\" y1=\"0\" x2=\"20\" y2=\"0\" stroke=\"") + color +
                     "\" stroke-width=\"3\" stroke-dasharray=\"6 4\"/>",
                 p.lines[k].first);
  }
  os << "</svg>\n";
  return os.str();
}

std::string render_histogram(const HistogramPlot& p) {
  Range rx, ry;
  std::vector<const Histogram*> hs = {&p.before};
  if (p.after) hs.push_back(&*p.after);
  for (const Histogram* h : hs) {
    LOWBIT_CHECK(!h->counts.empty() && h->lo < h->hi, "HtmlReport: histogram '", p.title, "' is empty");
    rx.add(h->lo), rx.add(h->hi);
    for (int64_t c : h->counts) ry.add(static_cast<double>(c));
  }
  ry.add(0);
  std::ostringstream os;
  os << svg_open(p.title);
  // x: exactly the histograms' range (bins fill the plot), ticks inside it.
  const Axes a = draw_axes(os, p.title, p.x_label, "count", axis_ticks(rx), axis_ticks(ry), &rx);
  const char* colors[] = {"#4e79a7", "#f28e2b"};
  const std::string labels[] = {p.before_label, p.after_label};
  for (size_t k = 0; k < hs.size(); ++k) {
    const Histogram& h = *hs[k];
    const double w = h.bin_width();
    os << "<g class=\"hist\" fill=\"" << colors[k] << "\" fill-opacity=\"0.55\"><title>" << html_escape(labels[k])
       << "</title>\n";
    for (size_t b = 0; b < h.counts.size(); ++b) {
      if (h.counts[b] == 0) continue;
      const double x0 = a.sx(h.lo + b * w), x1 = a.sx(h.lo + (b + 1) * w), y = a.sy(static_cast<double>(h.counts[b]));
      os << "<rect x=\"" << num(x0) << "\" y=\"" << num(y) << "\" width=\"" << num(std::max(0.5, x1 - x0))
         << "\" height=\"" << num(a.sy(0) - y) << "\"/>\n";
    }
    os << "</g>\n";
    legend_entry(os, static_cast<int>(k),
                 std::string("<rect x=\"0\" y=\"-6\" width=\"20\" height=\"12\" fill=\"") + colors[k] +
                     "\" fill-opacity=\"0.55\"/>",
                 labels[k]);
  }
  if (!p.levels.empty()) {
    os << "<g class=\"levels\" stroke=\"#c0392b\" stroke-width=\"1.2\" stroke-dasharray=\"4 "
          "3\"><title>levels</title>\n";
    for (double l : p.levels)
      if (std::isfinite(l) && l >= a.x0 && l <= a.x1)
        os << "<line x1=\"" << num(a.sx(l)) << "\" y1=\"" << num(kTop) << "\" x2=\"" << num(a.sx(l)) << "\" y2=\""
           << num(kBottom) << "\"/>\n";
    os << "</g>\n";
    legend_entry(os, static_cast<int>(hs.size()),
                 "<line x1=\"0\" y1=\"0\" x2=\"20\" y2=\"0\" stroke=\"#c0392b\" stroke-width=\"1.2\" "
                 "stroke-dasharray=\"4 3\"/>",
                 "levels (" + std::to_string(p.levels.size()) + ")");
  }
  os << "</svg>\n";
  // Counts the plot cannot show.
  std::string note;
  for (size_t k = 0; k < hs.size(); ++k) {
    const Histogram& h = *hs[k];
    if (h.below + h.above + h.non_finite == 0) continue;
    note += labels[k] + ": " + std::to_string(h.below) + " below, " + std::to_string(h.above) + " above the range, " +
            std::to_string(h.non_finite) + " non-finite. ";
  }
  if (!note.empty()) os << "<p class=\"note\">" << html_escape(note) << "</p>\n";
  return os.str();
}

std::string render_table(const Table& t) {
  std::ostringstream os;
  os << "<table>\n";
  if (!t.title.empty()) os << "<caption>" << html_escape(t.title) << "</caption>\n";
  os << "<thead><tr>";
  for (const std::string& h : t.header) os << "<th>" << html_escape(h) << "</th>";
  os << "</tr></thead>\n<tbody>\n";
  for (size_t r = 0; r < t.rows.size(); ++r) {
    LOWBIT_CHECK(t.rows[r].size() <= t.header.size(), "HtmlReport: table '", t.title, "' row ", r, " has ",
                 t.rows[r].size(), " cells for ", t.header.size(), " columns");
    os << "<tr>";
    for (size_t c = 0; c < t.header.size(); ++c)
      os << "<td>" << (c < t.rows[r].size() ? html_escape(t.rows[r][c]) : std::string()) << "</td>";
    os << "</tr>\n";
  }
  os << "</tbody>\n</table>\n";
  return os.str();
}

constexpr const char* kStyle = R"(body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:24px auto;max-width:820px;color:#222;background:#fff}
h1{font-size:1.5em;margin-bottom:.3em}h2{font-size:1.15em;margin:1.4em 0 .4em}
section{margin-bottom:1.2em}svg{display:block;max-width:100%;height:auto}
svg text{font-family:inherit;fill:#333}.title{font-size:15px;font-weight:600}.tick{font-size:11px}
.label{font-size:12px}.legend{font-size:12px}.grid{stroke:#e4e4e4;stroke-width:1}
.axis{stroke:#555;stroke-width:1}.frame{fill:none;stroke:#555;stroke-width:1}
.note{font-size:.85em;color:#666}table{border-collapse:collapse;font-size:.9em;margin:.6em 0}
caption{text-align:left;font-weight:600;padding-bottom:.4em}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}tbody tr:nth-child(even){background:#fafafa})";

}  // namespace

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  LOWBIT_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi, "nice_ticks: bad range [", lo, ", ", hi, "]");
  LOWBIT_CHECK(target >= 2, "nice_ticks: target must be >= 2, got ", target);
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
  std::vector<double> ticks;
  for (double i = first; i <= last; i += 1) ticks.push_back(i * step);
  return ticks;
}

HtmlReport& HtmlReport::add_paragraph(std::string text) {
  sections_.emplace_back(Paragraph{std::move(text)});
  return *this;
}
HtmlReport& HtmlReport::add(LinePlot plot) {
  sections_.emplace_back(std::move(plot));
  return *this;
}
HtmlReport& HtmlReport::add(HistogramPlot plot) {
  sections_.emplace_back(std::move(plot));
  return *this;
}
HtmlReport& HtmlReport::add(BarPlot plot) {
  sections_.emplace_back(std::move(plot));
  return *this;
}
HtmlReport& HtmlReport::add(Table table) {
  sections_.emplace_back(std::move(table));
  return *this;
}

std::string HtmlReport::html() const {
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" << html_escape(title_)
     << "</title>\n<style>\n"
     << kStyle << "\n</style>\n</head>\n<body>\n<h1>" << html_escape(title_) << "</h1>\n";
  for (const auto& section : sections_) {
    os << "<section>\n";
    if (const auto* p = std::get_if<Paragraph>(&section)) {
      os << "<p>" << html_escape(p->text) << "</p>\n";
    } else if (const auto* l = std::get_if<LinePlot>(&section)) {
      os << render_line_plot(*l);
    } else if (const auto* h = std::get_if<HistogramPlot>(&section)) {
      os << render_histogram(*h);
    } else if (const auto* b = std::get_if<BarPlot>(&section)) {
      os << render_bar_plot(*b);
    } else if (const auto* t = std::get_if<Table>(&section)) {
      os << render_table(*t);
    }
    os << "</section>\n";
  }
  os << "</body>\n</html>\n";
  return os.str();
}

void HtmlReport::write(const std::string& path) const { lowbit::write_file_atomic(path, html()); }

}  // namespace lowbit::quant
