// Umbrella header: everything a program that embeds lowbit needs.
#pragma once
#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/variable.h"
#include "core/math.h"
#include "core/parallel.h"
#include "core/random.h"
#include "core/tensor.h"
