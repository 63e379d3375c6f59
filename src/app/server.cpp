#include "ringlb/app/server.hpp"

#include "ringlb/app/runtime.hpp"

namespace ringlb::app {

int serve(const std::string& config_path, config::Config config, Logger& log,
          std::function<void(config::Config&)> overrides) {
    Runtime runtime(config_path, std::move(config), log, std::move(overrides));
    return runtime.run();
}

}  // namespace ringlb::app
