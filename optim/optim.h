// Umbrella header of the optim layer: optimizers, regularizer hook, LR schedules, clipping.
#pragma once

#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/optimizer.h"
#include "optim/regularizer.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
