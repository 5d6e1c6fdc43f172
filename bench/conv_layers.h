// Convolution layer tables of the model zoo (CIFAR variants unless noted), shared by
// bench/bench_conv.cpp, bench/compare_pytorch.py (through `bench_conv --list_layers`) and the tests.
// Each entry: model, layer name, geometry at the given batch, and how many times the model uses it.
#pragma once

#include <cstdint>
#include <vector>

#include "core/kernels/shapes.h"

namespace lowbit::bench {

struct ConvLayer {
  const char* model;
  const char* name;
  kernels::Conv2dGeometry geom;
  int multiplicity;
};

inline kernels::Conv2dGeometry conv_geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R,
                                         int64_t stride, int64_t pad, int64_t groups = 1) {
  kernels::Conv2dGeometry g;
  g.N = N, g.C = C, g.H = H, g.W = W, g.K = K, g.R = R, g.S = R;
  g.stride_h = g.stride_w = stride;
  g.pad_h = g.pad_w = pad;
  g.groups = groups;
  return g;
}

// ResNet-20 (CIFAR, 32x32, option-B 1x1 projection shortcuts).
inline std::vector<ConvLayer> resnet20_conv_layers(int64_t N) {
  return {
      {"resnet20", "conv1_3to16_32", conv_geom(N, 3, 32, 32, 16, 3, 1, 1), 1},
      {"resnet20", "s1_16to16_32", conv_geom(N, 16, 32, 32, 16, 3, 1, 1), 6},
      {"resnet20", "s2down_16to32_32s2", conv_geom(N, 16, 32, 32, 32, 3, 2, 1), 1},
      {"resnet20", "s2_32to32_16", conv_geom(N, 32, 16, 16, 32, 3, 1, 1), 5},
      {"resnet20", "s3down_32to64_16s2", conv_geom(N, 32, 16, 16, 64, 3, 2, 1), 1},
      {"resnet20", "s3_64to64_8", conv_geom(N, 64, 8, 8, 64, 3, 1, 1), 5},
      {"resnet20", "sc2_1x1_16to32_32s2", conv_geom(N, 16, 32, 32, 32, 1, 2, 0), 1},
      {"resnet20", "sc3_1x1_32to64_16s2", conv_geom(N, 32, 16, 16, 64, 1, 2, 0), 1},
  };
}

// VGG-11 (CIFAR): 3x3 pad 1, max-pool between stages.
inline std::vector<ConvLayer> vgg11_conv_layers(int64_t N) {
  return {
      {"vgg11", "3to64_32", conv_geom(N, 3, 32, 32, 64, 3, 1, 1), 1},
      {"vgg11", "64to128_16", conv_geom(N, 64, 16, 16, 128, 3, 1, 1), 1},
      {"vgg11", "128to256_8", conv_geom(N, 128, 8, 8, 256, 3, 1, 1), 1},
      {"vgg11", "256to256_8", conv_geom(N, 256, 8, 8, 256, 3, 1, 1), 1},
      {"vgg11", "256to512_4", conv_geom(N, 256, 4, 4, 512, 3, 1, 1), 1},
      {"vgg11", "512to512_4", conv_geom(N, 512, 4, 4, 512, 3, 1, 1), 1},
      {"vgg11", "512to512_2", conv_geom(N, 512, 2, 2, 512, 3, 1, 1), 2},
  };
}

// MobileNet-v1 (CIFAR) pointwise 1x1 convolutions, at the spatial size after each depthwise conv.
inline std::vector<ConvLayer> mobilenet_pointwise_layers(int64_t N) {
  return {
      {"mobilenet", "pw_32to64_32", conv_geom(N, 32, 32, 32, 64, 1, 1, 0), 1},
      {"mobilenet", "pw_64to128_16", conv_geom(N, 64, 16, 16, 128, 1, 1, 0), 1},
      {"mobilenet", "pw_128to128_16", conv_geom(N, 128, 16, 16, 128, 1, 1, 0), 1},
      {"mobilenet", "pw_128to256_8", conv_geom(N, 128, 8, 8, 256, 1, 1, 0), 1},
      {"mobilenet", "pw_256to256_8", conv_geom(N, 256, 8, 8, 256, 1, 1, 0), 1},
      {"mobilenet", "pw_256to512_4", conv_geom(N, 256, 4, 4, 512, 1, 1, 0), 1},
      {"mobilenet", "pw_512to512_4", conv_geom(N, 512, 4, 4, 512, 1, 1, 0), 5},
      {"mobilenet", "pw_512to1024_2", conv_geom(N, 512, 2, 2, 1024, 1, 1, 0), 1},
      {"mobilenet", "pw_1024to1024_2", conv_geom(N, 1024, 2, 2, 1024, 1, 1, 0), 1},
  };
}

// LeNet-5 (MNIST 28x28, no padding).
inline std::vector<ConvLayer> lenet5_conv_layers(int64_t N) {
  return {
      {"lenet5", "1to20_5x5_28", conv_geom(N, 1, 28, 28, 20, 5, 1, 0), 1},
      {"lenet5", "20to50_5x5_12", conv_geom(N, 20, 12, 12, 50, 5, 1, 0), 1},
  };
}

// AlexNet (ImageNet 224x224, torchvision channel counts).
inline std::vector<ConvLayer> alexnet_conv_layers(int64_t N) {
  return {
      {"alexnet", "3to64_11x11s4_224", conv_geom(N, 3, 224, 224, 64, 11, 4, 2), 1},
      {"alexnet", "64to192_5x5_27", conv_geom(N, 64, 27, 27, 192, 5, 1, 2), 1},
      {"alexnet", "192to384_3x3_13", conv_geom(N, 192, 13, 13, 384, 3, 1, 1), 1},
      {"alexnet", "384to256_3x3_13", conv_geom(N, 384, 13, 13, 256, 3, 1, 1), 1},
      {"alexnet", "256to256_3x3_13", conv_geom(N, 256, 13, 13, 256, 3, 1, 1), 1},
  };
}

}  // namespace lowbit::bench
