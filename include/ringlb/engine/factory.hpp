#pragma once
// Picks the engine: io_uring when it works here, the epoll engine otherwise (for "auto").
#include <memory>
#include <string>

#include "ringlb/config/config.hpp"
#include "ringlb/engine/engine.hpp"

namespace ringlb::engine {

struct EngineSelection {
    std::unique_ptr<Engine> engine;
    std::string description;  // "engine=uring (...)" or "engine=epoll (io_uring unavailable: ...; hint)"
};

// Throws EngineUnavailable when "uring" was asked for and cannot run.
EngineSelection make_engine(config::EngineChoice choice, const EngineOptions& options);

}  // namespace ringlb::engine
