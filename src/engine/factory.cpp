#include "ringlb/engine/factory.hpp"

#include "ringlb/engine/epoll/epoll_engine.hpp"
#include "ringlb/engine/uring/uring_engine.hpp"

namespace ringlb::engine {

namespace {

EngineSelection epoll_with_reason(const EngineOptions& options, const std::string& reason) {
    auto engine = std::make_unique<EpollEngine>(options);
    std::string description = "engine=epoll (" + reason + "; " + engine->features() + ")";
    return {std::move(engine), std::move(description)};
}

}  // namespace

EngineSelection make_engine(config::EngineChoice choice, const EngineOptions& options) {
    if (choice == config::EngineChoice::Epoll) return epoll_with_reason(options, "chosen by configuration");
    try {
        if (options.refuse_uring) throw EngineUnavailable("io_uring unavailable: refused by the RINGLB_FAULT test hook");
        auto engine = std::make_unique<UringEngine>(options);
        std::string description = "engine=uring (" + engine->features() + ")";
        return {std::move(engine), std::move(description)};
    } catch (const EngineUnavailable& e) {
        if (choice == config::EngineChoice::Uring) throw;
        return epoll_with_reason(options, e.what());
    }
}

}  // namespace ringlb::engine
