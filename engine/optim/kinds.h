// The optimizers behind Optimizer::create (engine/optim/optimizer.h); one file each.
#pragma once
#include <memory>

#include "engine/optim/optimizer.h"

namespace kd {

std::unique_ptr<Optimizer> make_adamw(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule,
                                      Context& ctx);
std::unique_ptr<Optimizer> make_sgd(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule,
                                    Context& ctx);
std::unique_ptr<Optimizer> make_shampoo(ParamStore& params, const OptimizerConfig& config,
                                        const ScheduleConfig& schedule, Context& ctx);

}  // namespace kd
