// HTML report writer: well-formed markup (balanced tags), the content it was given, escaping, no
// scripts or external resources, nice ticks, and the atomic write.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/random.h"
#include "quant/regularizers.h"
#include "quant/report.h"
#include "quant/stats.h"

using namespace lowbit;
namespace q = lowbit::quant;
namespace fs = std::filesystem;

namespace {

// Checks that every element is closed in order (void elements and self-closing tags aside).
// Returns an empty string when balanced, else a description of the first problem.
std::string tag_balance_problem(const std::string& html) {
  static const std::regex tag(R"(<(/?)([A-Za-z][A-Za-z0-9-]*)\b([^<>]*?)(/?)>)");
  static const std::vector<std::string> void_elements = {"meta", "br", "hr", "img", "input", "link"};
  std::vector<std::string> stack;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), tag); it != std::sregex_iterator(); ++it) {
    const std::smatch& m = *it;
    std::string name = m[2].str();
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (m[1].str() == "/") {
      if (stack.empty() || stack.back() != name)
        return "unexpected </" + name + "> (open: " + (stack.empty() ? "none" : stack.back()) + ")";
      stack.pop_back();
    } else if (m[4].str() != "/" &&
               std::find(void_elements.begin(), void_elements.end(), name) == void_elements.end()) {
      stack.push_back(name);
    }
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  return "";
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

q::HtmlReport sample_report() {
  q::HtmlReport r("WaveQ <run> & \"friends\"");
  r.add_paragraph("Weights regularized with WaveQ (R1, WRPN grid); bits = ceil(beta) + 1.");
  std::vector<double> epochs, loss, acc, beta1, beta2;
  for (int e = 0; e < 30; ++e) {
    epochs.push_back(e);
    loss.push_back(2.3 * std::exp(-e / 8.0) + 0.1);
    acc.push_back(e == 12 ? std::nan("") : 0.1 + 0.8 * (1 - std::exp(-e / 6.0)));
    beta1.push_back(8 - 5.0 * e / 29);
    beta2.push_back(8 - 3.2 * e / 29);
  }
  r.add(q::LinePlot{"Training loss", "epoch", "cross-entropy", {{"train loss", epochs, loss}}});
  r.add(q::LinePlot{"Accuracy", "epoch", "top-1", {{"test <acc>", epochs, acc}}});
  r.add(q::LinePlot{"Learned bitwidths", "epoch", "beta", {{"conv1", epochs, beta1}, {"fc1", epochs, beta2}}});
  Generator gen(3);
  const Tensor before = Tensor::rand({2000}, gen, DType::f64, -1, 1);
  std::vector<double> snapped = before.to_vector();
  for (double& v : snapped) v = std::round(v * 3) / 3 + 0.02 * std::sin(91 * v);
  const Tensor after = Tensor::from_vector(snapped, {2000});
  r.add(q::HistogramPlot{"conv1 weights", "w", q::histogram(before, 80, -1.1, 1.1), q::histogram(after, 80, -1.1, 1.1),
                         q::grid_levels(q::Grid::wrpn, 3)});
  r.add(q::Table{"Per-layer bits",
                 {"layer", "beta", "bits", "mean distance / step"},
                 {{"conv1", "2.94", "4", "0.031"}, {"fc1 <last>", "4.80", "6", "0.12"}}});
  return r;
}

}  // namespace

TEST_CASE("the tag checker itself rejects unbalanced markup") {
  CHECK(tag_balance_problem("<p><b>x</b></p>").empty());
  CHECK(tag_balance_problem("<svg><line x1=\"0\"/><g></g></svg><meta charset=\"utf-8\">").empty());
  CHECK_FALSE(tag_balance_problem("<p><b>x</p></b>").empty());
  CHECK_FALSE(tag_balance_problem("<section><p>x</p>").empty());
}

TEST_CASE("report html is well-formed, self-contained and contains what it was given") {
  const std::string html = sample_report().html();
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  const std::string problem = tag_balance_problem(html);
  CHECK_MESSAGE(problem.empty(), problem);
  // No scripts, no external resources.
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("<link") == std::string::npos);
  CHECK(html.find("http://") == html.find("http://www.w3.org/2000/svg"));  // only the SVG namespace
  CHECK(html.find("https://") == std::string::npos);
  CHECK(html.find("url(") == std::string::npos);
  // Four plots (three line plots, one histogram) and one table.
  CHECK(count(html, "<svg ") == 4);
  CHECK(count(html, "<table>") == 1);
  // Series, legends and labels are present.
  for (const char* s : {"train loss", "conv1", "fc1", "Learned bitwidths", "epoch", "cross-entropy", "levels (7)",
                        "before", "after", "mean distance / step"})
    CHECK_MESSAGE(html.find(s) != std::string::npos, s);
  // The beta plot draws one path per series; the NaN splits the accuracy line into two pieces.
  const size_t acc_pos = html.find("Accuracy");
  const size_t beta_pos = html.find("Learned bitwidths");
  REQUIRE(acc_pos != std::string::npos);
  REQUIRE(beta_pos != std::string::npos);
  const std::string acc_svg = html.substr(acc_pos, beta_pos - acc_pos);
  const size_t d_at = acc_svg.find("<path d=\"");
  REQUIRE(d_at != std::string::npos);
  const std::string d = acc_svg.substr(d_at, acc_svg.find('"', d_at + 9) - d_at);
  CHECK(count(d, "M") == 2);
  CHECK(count(d, "L") == 27);  // 29 finite points in two runs of 12 and 17
  // Histogram: one vertical dashed line per WRPN 3-bit level.
  const size_t lv = html.find("<g class=\"levels\"");
  REQUIRE(lv != std::string::npos);
  CHECK(count(html.substr(lv, html.find("</g>", lv) - lv), "<line ") == 7);
}

TEST_CASE("report text is escaped") {
  const std::string html = sample_report().html();
  CHECK(html.find("<title>WaveQ &lt;run&gt; &amp; &quot;friends&quot;</title>") != std::string::npos);
  CHECK(html.find("test &lt;acc&gt;") != std::string::npos);
  CHECK(html.find("fc1 &lt;last&gt;") != std::string::npos);
  CHECK(html.find("<run>") == std::string::npos);
  CHECK(html.find("<acc>") == std::string::npos);
  q::HtmlReport evil("x");
  evil.add_paragraph("</p><script>alert(1)</script>");
  evil.add(q::LinePlot{"<script>", "'x'", "y", {{"<script>s</script>", {0, 1}, {1, 2}}}});
  const std::string e = evil.html();
  CHECK(e.find("<script") == std::string::npos);
  CHECK(tag_balance_problem(e).empty());
  CHECK(q::html_escape("a<b>&\"c'") == "a&lt;b&gt;&amp;&quot;c&#39;");
}

TEST_CASE("nice ticks cover the range with round steps") {
  const auto t = q::nice_ticks(0.13, 0.91, 5);
  REQUIRE(t.size() >= 3);
  CHECK(t.front() <= 0.13);
  CHECK(t.back() >= 0.91);
  const double step = t[1] - t[0];
  CHECK(step == doctest::Approx(0.2));
  for (size_t i = 1; i < t.size(); ++i) CHECK(t[i] - t[i - 1] == doctest::Approx(step));
  const auto u = q::nice_ticks(-1.1, 1.1, 6);
  CHECK(u.front() == doctest::Approx(-1.5));
  CHECK(u.back() == doctest::Approx(1.5));
  CHECK(u[1] - u[0] == doctest::Approx(0.5));
  const auto big = q::nice_ticks(0, 950, 5);
  CHECK(big[1] - big[0] == doctest::Approx(200));
  CHECK(big.back() == doctest::Approx(1000));
  CHECK_THROWS_AS(q::nice_ticks(1, 1), Error);
}

TEST_CASE("report argument errors") {
  q::HtmlReport r("bad");
  r.add(q::LinePlot{"p", "x", "y", {{"s", {0, 1, 2}, {1, 2}}}});
  CHECK_THROWS_WITH_AS(r.html(), doctest::Contains("series 's'"), Error);
  q::HtmlReport t("bad table");
  t.add(q::Table{"t", {"a"}, {{"1", "2"}}});
  CHECK_THROWS_WITH_AS(t.html(), doctest::Contains("row 0"), Error);
}

TEST_CASE("write() replaces report.html atomically and leaves no temporary file") {
  const fs::path dir = fs::temp_directory_path() / ("lowbit_test_report_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path file = dir / "report.html";
  {
    std::ofstream old(file);
    old << "old contents";
  }
  const q::HtmlReport r = sample_report();
  r.write(file.string());
  std::ifstream in(file);
  std::stringstream got;
  got << in.rdbuf();
  CHECK(got.str() == r.html());
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++entries;
  CHECK(entries == 1);
  CHECK_THROWS_WITH_AS(r.write((dir / "missing" / "report.html").string()), doctest::Contains("write_file_atomic"),
                       Error);
  fs::remove_all(dir);
}

TEST_CASE("bar plot: a bar and a name per category, dashed reference lines, well-formed") {
  q::HtmlReport r("bars");
  r.add(q::BarPlot{"Bits per weight layer", "bits", {"conv1", "conv2 <b>", "fc"}, {4, 2, 8}, {{"budget", 3.5}}});
  const std::string html = r.html();
  const std::string problem = tag_balance_problem(html);
  CHECK_MESSAGE(problem.empty(), problem);
  CHECK(count(html, "<rect x=") == 3);
  CHECK(count(html, "stroke-dasharray=\"6 4\"") == 2);  // the line and its legend swatch
  CHECK(html.find("conv2 &lt;b&gt;") != std::string::npos);
  CHECK(html.find("fc: 8</title>") != std::string::npos);
  // The tallest bar reaches higher (smaller y) than the others.
  const std::regex bar(R"re(<rect x="[^"]*" y="([^"]*)")re");
  std::vector<double> ys;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), bar); it != std::sregex_iterator(); ++it)
    ys.push_back(std::stod((*it)[1]));
  REQUIRE(ys.size() == 3);
  CHECK(ys[2] < ys[0]);
  CHECK(ys[0] < ys[1]);
  q::HtmlReport bad("bad bars");
  bad.add(q::BarPlot{"b", "bits", {"a", "b"}, {1}, {}});
  CHECK_THROWS_WITH_AS(bad.html(), doctest::Contains("2 names but 1 values"), Error);
}
