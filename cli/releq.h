// `lowbit releq`: ReLeQ (train/releq.h, spec §5) from the command line. A float network (--init, a
// training checkpoint) is searched for one weight bitwidth per layer by a PPO agent whose reward
// comes from short fine-tunes validated on images held out from the training set (--val-size);
// the best vector is fine-tuned longer (--final-epochs) and evaluated on the test set once.
//
// Run folder (--out): config.txt (the options; --resume reads them back), cache.jsonl (the
// oracle's results by bit vector), episodes.jsonl (one line per episode), agent.ckpt (the agent,
// after every update), result.json (the best vector and the accuracies), report.html (reward,
// accuracy and average bits per episode, the best bits per layer) and final/ (the final
// fine-tune: a training checkpoint with the bit vector as --wbits-overrides, so lowbit eval reads
// it). --resume continues the search where it stopped; no vector is fine-tuned twice.
#pragma once

#include <vector>

#include "cli/options.h"

namespace lowbit::cli {

// The options of lowbit releq.
std::vector<OptionSpec> releq_option_specs();

// Runs `lowbit releq`; returns the process exit code.
int run_releq(int argc, char** argv);

}  // namespace lowbit::cli
