// `lowbit dcq`: divide-and-conquer quantization (train/dcq.h, spec §4) from the command line. The
// options of `lowbit train` (the student's quantizer, data, optimizer, schedule, run folder, resume)
// plus the teacher and the sections; model, variant, width and data default to the teacher run's.
//
// Run folder (--out): as lowbit train's (config.txt, metrics.jsonl with the stitched network's test
// accuracy per epoch, checkpoint.ckpt of the stitched student, report.html) plus sections.jsonl.
// The checkpoint is a training checkpoint: lowbit eval / export read it, and lowbit train --init
// fine-tunes it end to end.
#pragma once

#include <vector>

#include "cli/options.h"

namespace lowbit::cli {

// The options lowbit dcq adds to lowbit train's (also accepted in a run's stored config by eval).
std::vector<OptionSpec> dcq_option_specs();

// Runs `lowbit dcq`; returns the process exit code.
int run_dcq(int argc, char** argv);

}  // namespace lowbit::cli
