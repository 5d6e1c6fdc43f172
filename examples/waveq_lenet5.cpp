// Quantization-aware training through the library alone: LeNet-5 on Fashion-MNIST with DoReFa
// 4-bit weights and activations while WaveQ learns each layer's bitwidth; prints the learned bits
// and the accuracy at them. The same run as `lowbit train ... --quant dorefa --reg waveq` (the
// README's quick start), in library calls.
// Usage: waveq_lenet5 [EPOCHS [TRAIN_IMAGES]]     (defaults 4 and all 60,000)
#include <lowbit.h>

#include <cstdio>
#include <cstdlib>

using namespace lowbit;

int main(int argc, char** argv) try {
  const int64_t epochs = argc > 1 ? std::atoll(argv[1]) : 4, images = argc > 2 ? std::atoll(argv[2]) : 0;
  manual_seed(1);
  train::TrainData data = train::load_data({.dataset = "fashion-mnist", .batch = 128, .limit_train = images});
  auto model = train::create_model("lenet5", data);
  train::QuantContext quant(
      *model,
      {.method = "dorefa", .wbits = 4, .abits = 4, .reg = "waveq", .lambda_w = 100, .lambda_beta = 5, .beta_lr = 0.01});
  optim::SGD sgd(quant.param_groups({.lr = 0.05, .weight_decay = 5e-4, .momentum = 0.9}));
  train::fit(*model, sgd, *data.train_loader, data.test_loader.get(),
             {.epochs = epochs, .schedule = optim::cosine(double(epochs))}, &quant);

  const train::QuantReport report = quant.final_report(*data.test_loader);
  for (const train::LayerReport& layer : report.layers)
    std::printf("%-6s %s\n", layer.name.c_str(),
                layer.bits < 32 ? (std::to_string(layer.bits) + " bits").c_str() : "fp32");
  std::printf("average %.2f bits per weight; accuracy at these bits %.2f%% (float weights %.2f%%)\n",
              report.average_bits, 100 * report.quantized.accuracy, 100 * report.fp32.accuracy);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "waveq_lenet5: %s\n", e.what());
  return 1;
}
