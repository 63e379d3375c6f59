// DNS server entries: rules are expanded with the latest address sets the resolver found.
#include "ringlb/app/runtime.hpp"

#include <algorithm>

#include "ringlb/dns/resolver.hpp"
#include "ringlb/engine/engine.hpp"
#include "ringlb/util/text.hpp"

namespace ringlb::app {

config::Config Runtime::expanded(const config::Config& written) const { return expanded_with(written, resolved_); }

config::Config Runtime::expanded_with(const config::Config& written, const dns::AddressSets& resolved) {
    config::Config out = written;
    for (config::RuleConfig& rule : out.rules) rule = dns::expand_rule(rule, resolved);
    return out;
}

void Runtime::sync_dns_targets() {
    std::vector<dns::Target> targets = dns::targets_of(config_.rules);
    ++resolved_version_;
    std::erase_if(resolved_, [&](const auto& entry) {
        return std::none_of(targets.begin(), targets.end(), [&](const dns::Target& t) { return t.endpoint == entry.first; });
    });
    if (resolver_ && resolver_servers_ != config_.global.resolvers) resolver_.reset();  // a reload changed them
    if (!resolver_ && targets.empty()) return;  // no dns entry: no resolver thread
    try {
        if (!resolver_) {
            dns::Resolver::Options options;
            options.servers = config_.global.resolvers;
            options.wake = [this] { control_engine_->wake(); };
            resolver_ = std::make_unique<dns::Resolver>(log_, std::move(options));
            resolver_servers_ = config_.global.resolvers;
        }
        resolver_->set_targets(std::move(targets));
    } catch (const std::exception& e) {
        log_.error(e.what(), "; dns entries get no new addresses");
    }
}

void Runtime::apply_dns_updates() {
    if (!resolver_) return;
    std::vector<dns::Update> updates = resolver_->take_updates();
    if (updates.empty()) return;
    std::vector<std::string> changes;
    for (dns::Update& update : updates) {
        std::vector<std::string> texts;
        for (const net::SocketAddress& address : update.addresses) texts.push_back(address.to_string());
        changes.push_back(update.endpoint.to_string() + " resolves to " + join(texts, " "));
        resolved_[update.endpoint] = dns::keep_places(resolved_[update.endpoint], std::move(update.addresses));
        ++resolved_version_;
    }
    // A rule whose expansion changed gets a new slot: its live sessions finish on the old one (the
    // servers that left are drained), new sessions see the new set. Rules without a changed name
    // expand to the same text and keep their slot and state.
    if (std::string error = apply_config(config_); !error.empty()) {
        log_.error("dns: the new addresses could not be applied: ", error);
        return;
    }
    for (const std::string& change : changes) log_.info("dns: ", change);  // in effect from now on
}

config::ServerConfig* Runtime::written_server(std::string_view rule_id, const ServerRef& ref, std::string* error) {
    const auto rule = std::find_if(config_.rules.begin(), config_.rules.end(),
                                   [&](const config::RuleConfig& r) { return r.id == rule_id; });
    const net::SocketAddress& running = slots_[ref.slot].live->servers[ref.index].address;
    std::vector<size_t> origin;
    const auto same_server = [&](const config::RuleConfig& expanded) {
        return ref.index < expanded.servers.size() && expanded.servers[ref.index].address == running;
    };
    // Always true unless applying the latest addresses failed and the workers still have older ones.
    const bool found = rule != config_.rules.end() && same_server(dns::expand_rule(*rule, resolved_, &origin));
    if (!found) {
        *error = "rule \"" + std::string(rule_id) + "\" is being updated; try again";
        return nullptr;
    }
    config::ServerConfig& entry = rule->servers[origin[ref.index]];
    if (entry.is_dns()) {
        *error = "server " + running.to_string() + " comes from dns entry " + entry.dns_endpoint() +
                 ", whose addresses share its weight: change it with modify rule";
        return nullptr;
    }
    return &entry;
}

}  // namespace ringlb::app
