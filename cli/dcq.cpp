#include "cli/dcq.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "cli/quant_options.h"
#include "cli/trainer.h"
#include "core/distributed.h"
#include "core/parallel.h"
#include "core/serialize.h"
#include "train/dcq.h"
#include "train/evaluate.h"
#include "train/ptq.h"

namespace lowbit::cli {
namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// --train-sections "1,3" -> {0, 2}.
std::vector<int64_t> parse_sections(const std::string& s) {
  std::vector<int64_t> out;
  for (const std::string& item : split_list(s)) {
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    LOWBIT_CHECK(end != item.c_str() && *end == '\0' && v >= 1, "--train-sections '", s,
                 "': expected section numbers from 1, comma-separated");
    out.push_back(v - 1);
  }
  return out;
}

std::vector<OptionSpec> all_specs() {
  std::vector<OptionSpec> s = train_option_specs();
  for (auto& d : dcq_option_specs()) s.push_back(d);
  return s;
}

// The teacher run's model, variant, width and data as this run's defaults.
void teacher_defaults(Options& opts, int argc, char** argv) {
  Options probe = opts.fresh();
  probe.parse(argc, argv);
  if (!probe.has("teacher") || probe.has("resume")) return;
  const std::string path = probe.str("teacher");
  Options teacher("train", train_option_specs());
  teacher.load_config_text(train::checkpoint_config(path), path);
  for (const char* key : {"model", "variant", "width", "data"})
    opts.set(key, teacher.has(key) ? teacher.str(key) : "", std::string("--teacher ") + path);
}

}  // namespace

std::vector<OptionSpec> dcq_option_specs() {
  return {
      {"teacher", "", "the float network: a training checkpoint (its model, variant, width and data are the defaults)"},
      {"sections", "",
       "cut after these units, comma-separated (a unit: layer1.2, relu1; a container: its last unit); default: "
       "before every unit that halves the feature map"},
      {"dcq-loss", "mse", "sections' regression loss to the teacher's feature map: mse | l1 | huber | kl"},
      {"huber-delta", "0.4", "--dcq-loss huber: where the loss turns from quadratic to linear"},
      {"dcq-sequential", "", "train the sections one after another in each step instead of as concurrent tasks", true},
      {"train-sections", "",
       "train only these sections (from 1, comma-separated); the others keep the teacher's weights"},
      {"list-sections", "", "print the model's units and the sections, and exit", true},
      {"recalibrate-bn", "100",
       "before each evaluation of the stitched network, re-estimate its batch norms' running statistics from this "
       "many training batches (no augmentation) of its own features; 0: keep those of training (the teacher's "
       "features)"},
  };
}

namespace {

int dcq_one(int argc, char** argv) {
  Options opts("dcq", all_specs());
  teacher_defaults(opts, argc, argv);
  opts.parse(argc, argv);
  if (opts.help_requested()) return std::printf("%s", opts.usage().c_str()), 0;
  const std::string resume_path = apply_resume(opts, argc, argv);
  LOWBIT_CHECK(opts.has("teacher"), "--teacher CHECKPOINT (the trained float network) is required");
  if (opts.has("threads")) set_num_threads(static_cast<int>(opts.integer("threads")));
  manual_seed(static_cast<uint64_t>(opts.integer("seed")));
  LOWBIT_CHECK(!opts.has("init"), "--init does not apply to lowbit dcq: the student starts as the teacher");
  LOWBIT_CHECK(!opts.has("clip-grad"),
               "--clip-grad does not combine with lowbit dcq (each section is its own "
               "problem; a global gradient norm would couple them)");
  const std::unique_ptr<train::QuantSpec> qspec = checked_quant_spec(opts);
  LOWBIT_CHECK(qspec && qspec->method != "none",
               "lowbit dcq quantizes the student: give --quant (e.g. --quant "
               "dorefa --wbits 1, or --quant ternary)");
  const bool parallel = !opts.flag("dcq-sequential");
  LOWBIT_CHECK(qspec->gbits >= 32 || !parallel,
               "--gbits draws from one generator shared by the sections; add "
               "--dcq-sequential");
  train::FitOptions fo = fit_options(opts, resume_path);

  train::TrainData data = train::load_data(data_config(opts, opts.integer("batch")));
  auto teacher = train::create_model(opts.str("model"), data, opts.real("width"), opts.str("variant"));
  auto student = train::create_model(opts.str("model"), data, opts.real("width"), opts.str("variant"));
  std::printf("teacher: ");
  load_init(*teacher, opts.str("teacher"), opts.str("model"), "--teacher");
  student->load_state_dict(teacher->state_dict());

  train::DcqOptions dopt;
  dopt.cuts = split_list(opts.str("sections"));
  dopt.loss = train::parse_distill_loss(opts.str("dcq-loss"));
  dopt.huber_delta = opts.real("huber-delta");
  dopt.parallel = parallel;
  dopt.train_sections = parse_sections(opts.str("train-sections"));
  dopt.recalibrate_bn_batches = opts.integer("recalibrate-bn");
  LOWBIT_CHECK(dopt.recalibrate_bn_batches >= 0, "--recalibrate-bn must be >= 0 batches, got ",
               dopt.recalibrate_bn_batches);
  train::Dcq dcq(*teacher, *student, dopt, {data.train.channels(), data.train.height(), data.train.width()});

  std::printf("sections (%s, %s):\n", train::to_string(dopt.loss).c_str(),
              parallel ? "trained as concurrent tasks" : "trained one after another");
  for (size_t i = 0; i < dcq.sections().size(); ++i) {
    const train::Section& s = dcq.sections()[i];
    std::string units;
    for (size_t u = s.begin; u < s.end; ++u) units += (units.empty() ? "" : " ") + dcq.student_chain()[u].name;
    std::printf("  %zu%s: %s -> %s\n", i + 1, dcq.trains(i) ? "" : " (not trained)", units.c_str(),
                i + 1 == dcq.sections().size() ? "cross-entropy" : "the teacher's feature map");
  }
  if (opts.flag("list-sections")) return 0;

  train::QuantContext quant(*student, *qspec);
  auto opt = make_optimizer(opts.str("optimizer"), dcq.section_groups(quant.param_groups(base_group(opts))));
  print_run_header(opts, *student, data);
  std::printf("%s", quant.config_table().c_str());
  if (resume_path.empty()) {
    const train::EvalResult t = train::evaluate(*teacher, *data.test_loader);
    std::printf("teacher test accuracy %.2f%% (float)\n", 100 * t.accuracy);
  }

  const auto calibration = train::calibration_loader(data, opts.integer("batch"), uint64_t(opts.integer("seed")));
  fo = dcq.fit_options(fo, data.test_loader.get(), calibration.get());
  const train::FitResult r = train::fit(*student, *opt, *data.train_loader, data.test_loader.get(), fo, &quant);
  if (!r.finished) return r.interrupted ? 130 : 0;
  if (!dist::is_root()) return 0;  // rank 0 reports
  std::printf("stitched network test accuracy %.2f%% (%s)", 100 * r.last_eval.accuracy, data.test.source.c_str());
  if (dcq.unrecalibrated().images)
    std::printf(", %.2f%% before its batch norms were recalibrated (--recalibrate-bn %lld)",
                100 * dcq.unrecalibrated().accuracy, (long long)dopt.recalibrate_bn_batches);
  std::printf("\n");
  const std::string html = fo.out + "/report.html";
  const train::QuantReport rep = quant.final_report(*data.test_loader, false, html);
  std::printf("%s", train::format_report(rep, &r.last_eval).c_str());
  std::printf(
      "report: %s\nrun folder: %s (lowbit eval --checkpoint %s/checkpoint.ckpt; end-to-end fine-tune: lowbit "
      "train --init %s/checkpoint.ckpt with the same --quant options)\n",
      html.c_str(), fo.out.c_str(), fo.out.c_str(), fo.out.c_str());
  return 0;
}

}  // namespace

// Under mpirun the ranks split every batch (docs/distributed.md), each training every section on its
// share; the sections' gradients are all-reduced after the step.
int run_dcq(int argc, char** argv) {
  return run_data_parallel("dcq", [&] { return dcq_one(argc, argv); });
}

}  // namespace lowbit::cli
