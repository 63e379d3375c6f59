// Admin verbs on servers and sessions: enable, disable, drain, weight, kill.
#include "ringlb/app/runtime.hpp"

#include "ringlb/health/active.hpp"

namespace ringlb::app {

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

std::optional<uint16_t> Runtime::live_slot(std::string_view rule_id) const {
    for (size_t slot = 0; slot < slots_.size(); ++slot)
        if (slots_[slot].live && slots_[slot].id == rule_id) return static_cast<uint16_t>(slot);
    return std::nullopt;
}

std::optional<Runtime::ServerRef> Runtime::find_server(std::string_view rule_id, std::string_view server,
                                                        std::string* error) const {
    const auto slot = live_slot(rule_id);
    if (!slot) {
        *error = "no rule \"" + std::string(rule_id) + "\"";
        return std::nullopt;
    }
    const auto& servers = slots_[*slot].live->servers;
    // A server's name, or its address (a name starts with a letter, so it is never an address).
    for (size_t i = 0; i < servers.size(); ++i)
        if (!servers[i].name.empty() && servers[i].name == server) return ServerRef{*slot, i};
    const auto address = net::SocketAddress::parse(server);
    if (!address) {
        *error = "rule \"" + std::string(rule_id) + "\" has no server named \"" + std::string(server) +
                 "\", and it is no address either: " + net::SocketAddress::parse_error(server);
        return std::nullopt;
    }
    for (size_t i = 0; i < servers.size(); ++i)
        if (servers[i].address == *address) return ServerRef{*slot, i};
    *error = "rule \"" + std::string(rule_id) + "\" has no server " + address->to_string();
    return std::nullopt;
}

admin::Reply Runtime::set_server_state(std::string_view rule_id, std::string_view server,
                                       admin::ServerAdminState state,
                                       std::optional<std::chrono::milliseconds> duration) {
    std::string error;
    const auto ref = find_server(rule_id, server, &error);
    if (!ref) return admin::Reply::failure(error);
    std::optional<Clock::time_point> until;
    if (duration) until = Clock::now() + *duration;
    if (!on_every_worker([&](core::Forwarder& forwarder) {
            forwarder.set_server_admin(ref->slot, ref->index, state, until);
        }))
        return admin::Reply::failure("a worker did not answer");
    static constexpr const char* kWords[] = {"enabled", "disabled", "draining"};
    log_.info("server ", rule_id, "/", server, " ", kWords[static_cast<int>(state)], " by the operator",
              duration ? " for " + health::format_duration(*duration) : std::string());
    return admin::Reply::success();
}

admin::Reply Runtime::set_weight(std::string_view rule_id, std::string_view server, unsigned weight) {
    std::string error;
    const auto ref = find_server(rule_id, server, &error);
    if (!ref) return admin::Reply::failure(error);
    if (weight > 1000) return admin::Reply::failure("weight must be 0..1000");
    config::ServerConfig* written = written_server(rule_id, *ref, &error);
    if (!written) return admin::Reply::failure(error);
    if (!on_every_worker([&](core::Forwarder& forwarder) { forwarder.set_server_weight(ref->slot, ref->index, weight); }))
        return admin::Reply::failure("a worker did not answer");
    // The running config follows, so `write config` writes the weight and a reload compares with it.
    // The rule is shared with plans the workers may still read: change a copy.
    auto changed = std::make_shared<config::RuleConfig>(*slots_[ref->slot].live);
    changed->servers[ref->index].weight = weight;
    slots_[ref->slot].live = std::move(changed);
    written->weight = weight;
    log_.info("server ", rule_id, "/", server, " weight set to ", weight, " by the operator");
    return admin::Reply::success();
}

admin::Reply Runtime::kill_session(uint64_t session_id) {
    const unsigned worker = core::Forwarder::worker_of(session_id);
    if (worker >= workers_.size()) return admin::Reply::failure("no session " + std::to_string(session_id));
    bool killed = false;
    if (!workers_[worker]->call([&](core::Forwarder& forwarder) { killed = forwarder.kill_session(session_id); }))
        return admin::Reply::failure("the worker did not answer");
    if (!killed) return admin::Reply::failure("no session " + std::to_string(session_id));
    return admin::Reply::success();
}

bool Runtime::on_every_worker(const std::function<void(core::Forwarder&)>& task) {
    bool all = true;
    for (auto& worker : workers_) all = worker->call(task) && all;
    return all;
}

}  // namespace ringlb::app
